import CKVM
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// Why an input file (kernel, initrd) cannot be read, for the caller to name with its path.
struct InputFileError: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}

/// Opens a regular file for reading (a FIFO must not block the open) and measures it: a
/// missing, non-regular or empty file, or one larger than `limit` bytes, is refused from its
/// fstat before anything is read. Returns the descriptor, which the caller closes.
func openRegularFile(_ path: String, limit: UInt64, tooLarge: (UInt64) -> String) throws(InputFileError) -> (fd: Int32, size: UInt64) {
    let fd = ckvm_open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else {
        let e = errno
        throw .init(e == ENOENT ? "no such file" : "cannot open: \(errnoString(e))")
    }
    var st = stat()
    guard fstat(fd, &st) == 0 else {
        let e = errno
        close(fd)
        throw .init("fstat: \(errnoString(e))")
    }
    let reason: String? = if ckvm_is_regular_file(st.st_mode) == 0 {
        "not a regular file"
    } else if st.st_size <= 0 {
        "file is empty"
    } else if UInt64(st.st_size) > limit {
        tooLarge(UInt64(st.st_size))
    } else {
        nil
    }
    if let reason {
        close(fd)
        throw .init(reason)
    }
    return (fd, UInt64(st.st_size))
}

/// Reads a regular file of at most `limit` bytes (a FIFO must not block the open).
func readRegularFile(_ path: String, limit: Int,
                     tooLarge: (Int) -> String = { "\($0) bytes, more than the limit" }) throws(InputFileError) -> [UInt8] {
    let (fd, size) = try openRegularFile(path, limit: UInt64(limit)) { tooLarge(Int($0)) }  // <= 2^63: an st_size
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: Int(size))
    var done = 0
    while done < bytes.count {
        // Sound: `done` is below the count, so the pointer stays inside the array's buffer.
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw .init(n == 0 ? "short read (file shrank?)" : "read: \(errnoString(errno))") }
        done += n
    }
    return bytes
}

/// `a + b`, or nil if the sum is past 2^64 - 1: for numbers that come from files.
func checkedSum(_ a: UInt64, _ b: UInt64) -> UInt64? {
    let (sum, wrapped) = a.addingReportingOverflow(b)
    return wrapped ? nil : sum
}
