@testable import AxVMM
import CKVM
import Glibc
import Testing

/// The control socket (`--api-socket`): the request parser against what a hostile or broken
/// client sends, and a real axvm answering on its socket while a guest runs (the balloon's
/// target changed at run time is the rigs', where Linux runs).
@Suite struct ControlSocketTests {
    func parse(_ text: String) -> ControlRequest.Parsed { ControlRequest.parse(Array(text.utf8)) }

    func refusal(_ text: String) -> Int? {
        if case let .refused(r) = parse(text) { return r.status }
        return nil
    }

    @Test func wholeRequestsAndTheirPieces() {
        let get = "GET /vm HTTP/1.1\r\nHost: localhost\r\n\r\n"
        #expect(parse(get) == .request(ControlRequest(method: "GET", path: "/vm", body: [])))
        let patch = "PATCH /balloon?x=1 HTTP/1.1\r\ncontent-length:  18 \r\n\r\n{\"amount_mib\": 64}"
        #expect(parse(patch) == .request(ControlRequest(method: "PATCH", path: "/balloon", body: Array("{\"amount_mib\": 64}".utf8))))
        // Every prefix of a request is incomplete, never a request or a refusal.
        for n in 0..<patch.utf8.count {
            #expect(ControlRequest.parse(Array(patch.utf8.prefix(n))) == .incomplete, "\(n) bytes")
        }
    }

    @Test func hostileRequestsRefusedNamingTheValue() {
        #expect(refusal("GET\r\n\r\n") == 400)
        #expect(refusal("GET vm HTTP/1.1\r\n\r\n") == 400)
        #expect(refusal("GET /vm HTTP/2\r\n\r\n") == 505)
        #expect(refusal("GET /vm HTTP/1.1\r\nno colon here\r\n\r\n") == 400)
        #expect(refusal("PUT /balloon HTTP/1.1\r\nContent-Length: -1\r\n\r\n") == 400)
        #expect(refusal("PUT /balloon HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n") == 400)
        #expect(refusal("PUT /balloon HTTP/1.1\r\nContent-Length: 4097\r\n\r\n") == 413)
        #expect(refusal("PUT /balloon HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == 501)
        #expect(ControlRequest.parse([0xff, 0xfe] + Array(" / HTTP/1.1\r\n\r\n".utf8)) == .refused(.error(400, "the request's head is not UTF-8")))
        // A head that never ends is refused once it passes the limit, not buffered for ever.
        #expect(refusal("GET /vm HTTP/1.1\r\n" + String(repeating: "X: y\r\n", count: 2000)) == 431)
        if case let .refused(r) = parse("GET /vm HTTP/9\r\n\r\n") { #expect(r.body.contains("HTTP/9")) }
    }

    @Test func theBalloonsBody() {
        func field(_ body: String) -> Result<UInt64, ControlResponse> {
            ControlRequest(method: "PATCH", path: "/balloon", body: Array(body.utf8)).integerField("amount_mib")
        }
        #expect(field("{\"amount_mib\": 64}") == .success(64))
        #expect(field(" {\n\"amount_mib\":0 } \n") == .success(0))
        for bad in ["", "{}", "[64]", "{\"amount_mib\": -1}", "{\"amount_mib\": 1.5}", "{\"amount_mib\": \"64\"}",
                    "{\"amount_mib\": 64, \"x\": 1}", "{\"amount_mib\": 64} trailing", "{\"amount\": 64}",
                    "{\"amount_mib\": 99999999999999999999999}"] {
            guard case let .failure(e) = field(bad) else { Issue.record("accepted \(bad)"); continue }
            #expect(e.status == 400, "\(bad)")
        }
        if case let .failure(e) = field("{\"amount\": 64}") { #expect(e.body.contains("field \\\"amount\\\"")) }
    }

    @Test func answersOnTheWire() {
        let r = ControlResponse.error(404, "no \"x\"")
        let body = "{\"fault_message\": \"no \\\"x\\\"\"}"
        #expect(String(decoding: r.bytes, as: UTF8.self)
            == "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: \(body.utf8.count)\r\nContent-Type: application/json\r\n\r\n" + body)
        #expect(String(decoding: ControlResponse.noContent.bytes, as: UTF8.self) == "HTTP/1.1 204 No Content\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    }

    /// Sends `request` to the socket at `path`; the whole answer (nil if no connection).
    static func ask(_ path: String, _ request: String, closeAfterSend: Bool = true) -> String? {
        let fd = ckvm_unix_connect(path)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let bytes = Array(request.utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if closeAfterSend { shutdown(fd, Int32(SHUT_WR)) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A guest that spins until its timeout, with the socket: /vm answers, the balloon is
    /// absent, bad requests and a silent client are answered and do not stop the next
    /// request; the file goes at the end. Another run refuses the same path while it exists.
    @Test(.enabled(if: KVMGate.enabled)) func aRunningVMAnswers() throws {
        let path = temporaryPath("api.sock")
        unlink(path)
        var p = try AxvmProcess(["run", guestPath("spin"), "--memory", "16M", "--timeout", "8", "--api-socket", path])
        var waited = 0
        while access(path, F_OK) != 0 && waited < 200 { usleep(25_000); waited += 1 }
        try #require(access(path, F_OK) == 0, "no socket at \(path): \(p.errText)")
        // A second VM may not take the path.
        var second = try AxvmProcess(["run", guestPath("spin"), "--memory", "16M", "--timeout", "1", "--api-socket", path])
        #expect(second.wait() == 64)
        #expect(second.errText.contains("--api-socket \(path): exists"), "\(second.errText)")

        let vm = Self.ask(path, "GET /vm HTTP/1.1\r\nHost: localhost\r\n\r\n") ?? ""
        #expect(vm.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(vm)")
        #expect(vm.contains("\"vcpus\": 1") && vm.contains("\"memory_bytes\": 16777216") && vm.contains("\"state\": \"running\""), "\(vm)")
        // A silent client is cut off; the next one is answered.
        let silent = ckvm_unix_connect(path)
        #expect(silent >= 0)
        let t0 = monotonicSeconds()
        let cut = Self.ask(path, "GET /vm HTTP/1.1\r\n\r\n") ?? ""
        #expect(cut.hasPrefix("HTTP/1.1 200"), "\(cut)")
        #expect(monotonicSeconds() - t0 >= 1.5, "answered before the silent client's deadline")
        close(silent)
        #expect(Self.ask(path, "PATCH /balloon HTTP/1.1\r\nContent-Length: 18\r\n\r\n{\"amount_mib\": 64}")?.hasPrefix("HTTP/1.1 404") == true)
        #expect(Self.ask(path, "DELETE /vm HTTP/1.1\r\n\r\n")?.hasPrefix("HTTP/1.1 405") == true)
        #expect(Self.ask(path, "GET /vm HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")?.hasPrefix("HTTP/1.1 413") == true)
        #expect(Self.ask(path, "garbage\r\n\r\n")?.hasPrefix("HTTP/1.1 400") == true)
        #expect(Self.ask(path, "GET /vm HTTP/1.1\r\n")?.hasPrefix("HTTP/1.1 400") == true)  // closed mid-head
        #expect(p.wait(seconds: 30) == 124, "\(p.errText)")
        #expect(access(path, F_OK) != 0, "the socket file outlived the run")
    }

    /// In this process, as a library user has it, with SIGPIPE at its default (which ends a
    /// process; the test runner ignores it): clients that send a request and go away before
    /// its large answer neither end the process (the control thread blocks every signal but
    /// SIGSYS, so its write fails with EPIPE) nor keep the next client from its answer; `stop`
    /// removes the file.
    @Test func clientsThatLeaveEarlyDoNotStopTheSocket() throws {
        let path = temporaryPath("api-lib.sock")
        unlink(path)
        let old = signal(SIGPIPE, SIG_DFL)
        defer { signal(SIGPIPE, old) }
        let socket = try ControlSocket(path: path)
        let big = String(repeating: "x", count: 200_000)  // more than a socket buffer holds
        try socket.start { r in r.path == "/big" ? .json("\"\(big)\"") : .noContent }
        for _ in 0..<3 {
            let fd = ckvm_unix_connect(path)
            try #require(fd >= 0)
            let req = Array("GET /big HTTP/1.1\r\n\r\n".utf8)
            _ = req.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)  // before reading anything
        }
        #expect(Self.ask(path, "GET /x HTTP/1.1\r\n\r\n")?.hasPrefix("HTTP/1.1 204") == true)
        socket.stop()
        #expect(access(path, F_OK) != 0)
    }

    /// A path that exists (any file) or is too long is refused before the run (a usage error,
    /// 64), and the file is left as it was.
    @Test(.enabled(if: KVMGate.enabled)) func badPathsRefused() throws {
        let path = temporaryPath("api-file")
        #expect(writeFile(path, Array("keep".utf8)))
        defer { unlink(path) }
        var p = try AxvmProcess(["run", guestPath("spin"), "--memory", "16M", "--timeout", "1", "--api-socket", path])
        #expect(p.wait() == 64)
        #expect(p.errText.contains("exists"), "\(p.errText)")
        #expect(fileBytes(path) == Array("keep".utf8))
        let long = "/tmp/" + String(repeating: "a", count: 120)
        var q = try AxvmProcess(["run", guestPath("spin"), "--memory", "16M", "--timeout", "1", "--api-socket", long])
        #expect(q.wait() == 64)
        #expect(q.errText.contains("107 bytes"), "\(q.errText)")
    }
}
