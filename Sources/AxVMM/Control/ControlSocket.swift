#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// axvm's control socket (`--api-socket PATH`): HTTP/1.1 over a Unix stream socket, reached as
/// Firecracker's and Cloud Hypervisor's APIs are (`curl --unix-socket PATH http://localhost/vm`).
/// The socket is made and bound during set-up (no thread may make one after); one thread of
/// its own (`axvm-control`, sandbox role `.control`: accept, read, write, close) takes one
/// connection at a time, reads one request (`ControlRequest`, at most 8 KiB of head and 4 KiB
/// of body, within `deadline`), answers it through `handler` and closes the connection. A slow
/// or silent client is cut off at the deadline (408); no request can hold the VM. The
/// socket file is removed when the run ends.
final class ControlSocket: @unchecked Sendable {  // fd and path immutable; `thread` set by start/stop on the run's thread
    let path: String
    private let fd: Int32
    private let stopEvent: EventFD
    private var thread: OSThread?
    /// How long a connection has to send its whole request.
    static let deadlineMillis: Int32 = 2000

    /// Binds a new socket at `path`; refuses a path that exists (a socket an earlier run left,
    /// or any other file: nothing is replaced) or is longer than a socket address holds.
    init(path: String) throws(VMMError) {
        var st = stat()
        if lstat(path, &st) == 0 {
            throw .badValue(what: "--api-socket", value: path, reason: "exists: remove it first (axvm does not replace a file; an earlier run's socket is removed when that run ends)")
        }
        let fd = ckvm_unix_listen(path)
        guard fd >= 0 else {
            let e = ckvm_errno()
            throw .badValue(what: "--api-socket", value: path, reason: e == ENAMETOOLONG ? "longer than the 107 bytes a socket address holds" : "bind: \(errnoString(e))")
        }
        self.fd = fd
        self.path = path
        do { stopEvent = try EventFD() } catch {
            close(fd)
            unlink(path)
            throw error
        }
    }

    /// What answers requests. Held here, not by the thread, and dropped by `stop` on the
    /// caller's thread: what it holds (guest memory) is never freed on the control thread,
    /// whose filter has no calls for that.
    private var handler: (@Sendable (ControlRequest) -> ControlResponse)?

    /// Starts the thread that answers requests with `handler`.
    func start(_ handler: @escaping @Sendable (ControlRequest) -> ControlResponse) throws(VMMError) {
        self.handler = handler
        let fd = self.fd, stop = stopEvent.fd
        thread = try OSThread(.control, name: "axvm-control") { [self] in
            var polls = [pollfd(fd: stop, events: Int16(POLLIN), revents: 0), pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            while true {
                let r = poll(&polls, 2, -1)
                if r < 0 { if ckvm_errno() == EINTR { continue }; return }
                if polls[0].revents != 0 { return }
                guard polls[1].revents != 0 else { continue }
                let conn = ckvm_unix_accept(fd)
                guard conn >= 0 else { continue }
                if let answer = self.handler { Self.serve(conn, stop: stop, answer) }
                close(conn)
            }
        }
    }

    /// Stops the thread, closes the socket and removes its file.
    func stop() {
        stopEvent.signal()
        thread?.join()
        thread = nil
        handler = nil
        close(fd)
        unlink(path)
    }

    /// One connection: its request read within the deadline, answered, the answer written.
    private static func serve(_ conn: Int32, stop: Int32, _ handler: (ControlRequest) -> ControlResponse) {
        let response: ControlResponse
        switch readRequest(conn, stop: stop) {
        case let .request(request): response = handler(request)
        case let .refused(r): response = r
        case .incomplete: response = .error(408, "the request did not arrive whole within \(deadlineMillis) ms")
        }
        let bytes = response.bytes
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { write(conn, $0.baseAddress, $0.count) }
            if n < 0 && ckvm_errno() == EINTR { continue }
            guard n > 0 else { return }  // the client went away
            sent += n
        }
    }

    /// Reads until a request is whole, refused, or the deadline passes (or the run stops).
    private static func readRequest(_ conn: Int32, stop: Int32) -> ControlRequest.Parsed {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        let end = nowNanos() + UInt64(deadlineMillis) * 1_000_000
        var polls = [pollfd(fd: stop, events: Int16(POLLIN), revents: 0), pollfd(fd: conn, events: Int16(POLLIN), revents: 0)]
        while true {
            let now = nowNanos()
            guard now < end else { return .incomplete }
            let r = poll(&polls, 2, Int32((end - now) / 1_000_000) + 1)
            if r < 0 { if ckvm_errno() == EINTR { continue }; return .incomplete }
            if polls[0].revents != 0 { return .incomplete }
            guard polls[1].revents != 0 else { continue }
            let n = chunk.withUnsafeMutableBytes { read(conn, $0.baseAddress, $0.count) }
            if n < 0 && ckvm_errno() == EINTR { continue }
            guard n > 0 else {
                // The client closed its side: what it sent is all there is.
                if case let .refused(r) = ControlRequest.parse(bytes) { return .refused(r) }
                return .refused(.error(400, "the connection closed before the request was whole (\(bytes.count) bytes)"))
            }
            bytes += chunk[0..<n]
            let parsed = ControlRequest.parse(bytes)
            if parsed != .incomplete { return parsed }
        }
    }
}

extension Runner {
    /// A control socket request: `/vm` here (the machine as it runs), the rest the loader's
    /// devices' (`GuestLoader.control`: `/balloon`).
    static func answer(_ r: ControlRequest, loader: L, settings: RunSettings, memory: GuestMemory<L.P.Format>,
                       arch: GuestArch) -> ControlResponse {
        if r.path == "/vm" {
            guard r.method == "GET" else { return .error(405, "\(r.method) /vm: GET only") }
            let populated = memory.regions.reduce(0) { $0 + memory.populatedBytes($1) }
            return .json(StatsFormat.jsonObject([
                ("state", "\"running\""), ("arch", StatsFormat.jsonString(arch.rawValue)), ("vcpus", "\(settings.vcpus)"),
                ("memory_bytes", "\(settings.memorySize)"), ("populated_bytes", "\(populated)"),
            ]))
        }
        return loader.control(r) ?? .error(404, "no resource \(ControlRequest.quoted(r.path)): GET /vm; GET or PATCH /balloon on a VM booted with --balloon")
    }
}
