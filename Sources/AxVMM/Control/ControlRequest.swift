/// One request to axvm's control socket, and its answer: the subset of HTTP/1.1 that
/// `curl --unix-socket PATH` and Firecracker's or Cloud Hypervisor's API clients speak. A
/// request line, headers (only `Content-Length` is read), a body of at most `maxBody` bytes;
/// one request per connection, answered with `Connection: close`.
struct ControlRequest: Equatable, Sendable {
    var method: String
    var path: String
    var body: [UInt8]

    /// The most a request's head and body may take; more is refused, never buffered.
    static let maxHead = 8192
    static let maxBody = 4096

    /// What the bytes read so far hold.
    enum Parsed: Equatable {
        /// A whole request.
        case request(ControlRequest)
        /// Not all of it yet: read on.
        case incomplete
        /// Bytes no request can start with: the answer, and the connection is closed.
        case refused(ControlResponse)
    }

    /// Parses the bytes a connection sent so far. Hostile input (no request line, a bad
    /// version, a length that is not a number or too large, a chunked body, a head that never
    /// ends) is refused with a status and a message naming the value.
    static func parse(_ bytes: [UInt8]) -> Parsed {
        guard let end = headEnd(bytes) else {
            return bytes.count > maxHead ? .refused(.error(431, "the request's head is longer than \(maxHead) bytes")) : .incomplete
        }
        guard end <= maxHead else { return .refused(.error(431, "the request's head is longer than \(maxHead) bytes")) }
        guard let head = String(validating: bytes[..<end], as: UTF8.self) else {
            return .refused(.error(400, "the request's head is not UTF-8"))
        }
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let requestLine = lines.removeFirst()
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[1].hasPrefix("/") else {
            return .refused(.error(400, "request line \(quoted(requestLine)): expected METHOD /PATH HTTP/1.1"))
        }
        guard parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0" else {
            return .refused(.error(505, "HTTP version \(quoted(String(parts[2]))): axvm speaks HTTP/1.1"))
        }
        var length = 0
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { return .refused(.error(400, "header line \(quoted(line)) has no colon")) }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingSpaces
            if name == "content-length" {
                guard let n = Int(value), n >= 0 else { return .refused(.error(400, "Content-Length \(quoted(value)) is not a length")) }
                guard n <= maxBody else { return .refused(.error(413, "Content-Length \(n): a body may have at most \(maxBody) bytes")) }
                length = n
            } else if name == "transfer-encoding" {
                return .refused(.error(501, "Transfer-Encoding \(quoted(value)): send the body with a Content-Length"))
            }
        }
        let bodyStart = end + 4
        guard bytes.count - bodyStart >= length else { return .incomplete }
        var path = String(parts[1])
        if let q = path.firstIndex(of: "?") { path = String(path[..<q]) }
        return .request(ControlRequest(method: String(parts[0]), path: path, body: Array(bytes[bodyStart..<bodyStart + length])))
    }

    /// Where "\r\n\r\n" starts, if the head has ended.
    private static func headEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
        return nil
    }

    /// `text` in quotes, at most 80 characters of it, for messages.
    static func quoted(_ text: String) -> String {
        let cut = text.count > 80 ? String(text.prefix(80)) + "…" : text
        return "\"\(cut)\""
    }

    /// The body `{"NAME": N}` with one unsigned integer; a message naming what is wrong.
    func integerField(_ name: String) -> Result<UInt64, ControlResponse> {
        let expected = "expected a body {\"\(name)\": N}"
        guard let text = String(validating: body, as: UTF8.self) else { return .failure(.error(400, "the body is not UTF-8; \(expected)")) }
        var s = Substring(text)
        func skipSpace() { s = s.drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" } }
        func take(_ c: Character) -> Bool {
            skipSpace()
            guard s.first == c else { return false }
            s = s.dropFirst()
            return true
        }
        guard take("{"), take("\"") else { return .failure(.error(400, "body \(Self.quoted(text)): \(expected)")) }
        let key = s.prefix { $0 != "\"" }
        s = s.dropFirst(key.count)
        guard take("\""), take(":") else { return .failure(.error(400, "body \(Self.quoted(text)): \(expected)")) }
        guard key == name else { return .failure(.error(400, "field \"\(key)\": \(expected)")) }
        skipSpace()
        let digits = s.prefix { $0.isASCII && $0.isNumber }
        s = s.dropFirst(digits.count)
        guard !digits.isEmpty, let n = UInt64(digits) else {
            return .failure(.error(400, "\"\(name)\" in \(Self.quoted(text)) is not a whole number of at most 20 digits"))
        }
        guard take("}") else { return .failure(.error(400, "body \(Self.quoted(text)): \(expected), nothing else")) }
        skipSpace()
        guard s.isEmpty else { return .failure(.error(400, "body \(Self.quoted(text)): \(expected), nothing after it")) }
        return .success(n)
    }
}

/// An answer: a status and a JSON body (empty for 204).
struct ControlResponse: Equatable, Sendable, Error {
    var status: Int
    var body: String

    static let noContent = ControlResponse(status: 204, body: "")

    /// An error as Firecracker answers one: `{"fault_message": "..."}`.
    static func error(_ status: Int, _ message: String) -> ControlResponse {
        ControlResponse(status: status, body: "{\"fault_message\": \(StatsFormat.jsonString(message))}")
    }

    static func json(_ body: String) -> ControlResponse { ControlResponse(status: 200, body: body) }

    /// The bytes on the wire.
    var bytes: [UInt8] {
        let reason: String = switch status {
        case 200: "OK"
        case 204: "No Content"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 413: "Content Too Large"
        case 431: "Request Header Fields Too Large"
        case 501: "Not Implemented"
        case 505: "HTTP Version Not Supported"
        default: "Error"
        }
        let body = Array(self.body.utf8)
        var head = "HTTP/1.1 \(status) \(reason)\r\nConnection: close\r\nContent-Length: \(body.count)\r\n"
        if !body.isEmpty { head += "Content-Type: application/json\r\n" }
        return Array((head + "\r\n").utf8) + body
    }
}

private extension Substring {
    var trimmingSpaces: String { String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed()) }
}
