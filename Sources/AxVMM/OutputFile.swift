#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// A file for results (the statistics JSON), opened before the guest runs so that a bad
/// path fails at once: only a regular file is accepted (a FIFO would block, a device such
/// as /dev/full would swallow or refuse the data), opened without blocking, and every
/// write and the close are checked.
public struct OutputFile: ~Copyable {
    public let path: String
    private var fd: Int32
    private let created: Bool

    public init(path: String) throws(VMMError) {
        // O_NONBLOCK: opening a FIFO for writing must not wait for a reader.
        var created = true
        var fd = ckvm_open_mode(path, O_WRONLY | O_CREAT | O_EXCL | O_NONBLOCK | O_CLOEXEC, 0o644)
        if fd < 0 && errno == EEXIST {
            created = false
            fd = ckvm_open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        }
        guard fd >= 0 else { throw .output(path: path, reason: "cannot open for writing: \(errnoString(errno))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw .output(path: path, reason: "fstat: \(errnoString(e))")
        }
        guard ckvm_is_regular_file(st.st_mode) != 0 else {
            close(fd)
            throw .output(path: path, reason: "not a regular file (a FIFO, device or directory cannot take the statistics)")
        }
        guard ftruncate(fd, 0) == 0 else {
            let e = errno
            close(fd)
            throw .output(path: path, reason: "cannot truncate: \(errnoString(e))")
        }
        self.path = path
        self.fd = fd
        self.created = created
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Writes all of `text` and closes the file; any short write, error or failed close
    /// (e.g. ENOSPC, EIO on NFS at close) is reported.
    public consuming func write(_ text: String) throws(VMMError) {
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { ckvm_write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard n > 0 else {
                let e = errno
                throw .output(path: path, reason: "write failed after \(done) of \(bytes.count) bytes: \(n == 0 ? "no progress" : errnoString(e))")
            }
            done += n
        }
        let r = close(fd)
        fd = -1
        guard r == 0 else { throw .output(path: path, reason: "close: \(errnoString(errno))") }
    }

    /// Closes the file, and removes it if this run created it (nothing to report).
    public consuming func discard() {
        close(fd)
        fd = -1
        if created { unlink(path) }
    }
}
