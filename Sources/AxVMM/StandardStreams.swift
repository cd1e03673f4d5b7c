#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// Standard output and standard error, written with write(2) and checked: a failed write
/// is remembered (the first one per stream) and ends the process with
/// `Frontend.outputFailureStatus` once the run is over, so `axvm run … --stats > /dev/full`
/// does not exit 0 having printed nothing. EPIPE on standard output (the reader went away,
/// as with `| head`) ends the run as SIGPIPE ends a Unix tool: `Termination.request(SIGPIPE)`,
/// status 141. After a failure a stream takes no more writes. Any thread may write (the
/// guest's console from vCPU threads, the report from the main thread).
public enum StandardStreams {
    /// The first failed write of each stream: (fd, errno).
    private static let failures = Locked<[(fd: Int32, errno: Int32)]>([])

    public static func out(_ text: String) { write(1, Array(text.utf8)) }
    /// A line on standard error.
    public static func err(_ line: String) { write(2, Array((line + "\n").utf8)) }

    static func write(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write(fd, $0) }
    }

    /// Writes all of `bytes` to `fd` (1 or 2), retrying short writes, EINTR and EAGAIN (a
    /// non-blocking terminal: poll until it takes more).
    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !failed(fd) else { return }
        var done = 0
        while done < bytes.count {
            let n = ckvm_write(fd, base + done, bytes.count - done)
            if n > 0 { done += n; continue }
            let e = n < 0 ? errno : EIO
            if e == EINTR { continue }
            if e == EAGAIN {
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = poll(&p, 1, 1000)
                continue
            }
            failures.withLock { list in
                if !list.contains(where: { $0.fd == fd }) { list.append((fd, e)) }
            }
            if fd == 1 && e == EPIPE { Termination.request(SIGPIPE) }
            return
        }
    }

    private static func failed(_ fd: Int32) -> Bool { failures.withLock { $0.contains { $0.fd == fd } } }

    /// What went wrong writing the standard streams, if anything ("standard output: No space
    /// left on device"); nil if every write succeeded or the only failure was EPIPE (which
    /// ends the run through `Termination` instead).
    public static var failure: String? {
        let list = failures.withLock { $0 }.filter { !($0.fd == 1 && $0.errno == EPIPE) }
        guard !list.isEmpty else { return nil }
        return list.map { "\($0.fd == 1 ? "standard output" : "standard error"): write failed: \(errnoString($0.errno))" }
            .joined(separator: "; ")
    }
}
