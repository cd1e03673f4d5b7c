#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// A file for results (the statistics JSON), checked before the guest runs so that a bad
/// path fails at once, and written only when the results are complete:
///
/// - the target must be a regular file or not exist yet (a FIFO would block, a device such
///   as /dev/full would swallow or refuse the data), and must not be one of the run's
///   inputs (same device and inode: `--stats-json` naming the kernel must not destroy it);
/// - a temporary file is created next to it at once (that checks the directory is
///   writable) and the target is not touched: a run that fails leaves an existing file as
///   it was;
/// - the results go into the temporary file, every write and the close checked, and it is
///   renamed over the target, so a reader sees the old file or the new one, never half.
public struct OutputFile: ~Copyable {
    /// The path as given.
    public let path: String
    /// Where the file goes: `path`, or the file a symbolic link there points to.
    private let target: String
    private let temporary: String
    private var fd: Int32
    /// The target's permissions (an existing file keeps its own).
    private let mode: mode_t

    /// `inputs`: (what it is, its path) for each file the run reads or writes besides this
    /// one; a directory among them (a snapshot's) may hold no output at all.
    public init(path: String, inputs: [(String, String)] = []) throws(VMMError) {
        var st = stat()
        var target = path
        var mode: mode_t
        if stat(path, &st) == 0 {
            guard ckvm_is_regular_file(st.st_mode) != 0 else {
                throw .output(path: path, reason: "not a regular file (a FIFO, device or directory cannot take the output)")
            }
            guard access(path, W_OK) == 0 else { throw .output(path: path, reason: "not writable: \(errnoString(errno))") }
            for (what, input) in inputs {
                var i = stat()
                if stat(input, &i) == 0 && i.st_dev == st.st_dev && i.st_ino == st.st_ino {
                    throw .output(path: path, reason: "is the \(what) \(input) (the same file): it would be overwritten")
                }
            }
            mode = st.st_mode & 0o7777
            // A symbolic link: replace the file it points to, not the link.
            if let resolved = realpath(path, nil) {
                target = String(cString: resolved)
                free(resolved)
            }
        } else {
            guard errno == ENOENT else { throw .output(path: path, reason: "cannot use: \(errnoString(errno))") }
            let mask = umask(0)
            umask(mask)
            mode = 0o666 & ~mask
        }
        // The temporary file: hidden, in the target's directory (a rename stays on one
        // file system), named after the target.
        let slash = target.lastIndex(of: "/")
        let directory = slash.map { String(target[...$0]) } ?? ""
        let base = slash.map { String(target[target.index(after: $0)...]) } ?? target
        // An input that is a directory (a snapshot's) takes no output: its files would be
        // replaced, and a file of ours in it would stop it from being a snapshot.
        var d = stat()
        if stat(directory.isEmpty ? "." : directory, &d) == 0 {
            for (what, input) in inputs {
                var i = stat()
                if stat(input, &i) == 0 && ckvm_is_directory(i.st_mode) != 0 && i.st_dev == d.st_dev && i.st_ino == d.st_ino {
                    throw .output(path: path, reason: "is in the \(what) \(input): a snapshot directory holds only the snapshot's files, which it would replace")
                }
            }
        }
        var template = Array((directory + "." + base + ".axvm-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { b in b.baseAddress.map { ckvm_mkstemp_cloexec($0) } ?? -1 }
        guard fd >= 0 else {
            throw .output(path: path, reason: "cannot create a file in \(directory.isEmpty ? "." : directory): \(errnoString(errno))")
        }
        self.path = path
        self.target = target
        self.temporary = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.fd = fd
        self.mode = mode
    }

    deinit {
        if fd >= 0 {
            close(fd)
            unlink(temporary)
        }
    }

    /// Writes all of `text` into the temporary file, closes it and renames it over the
    /// target; any short write, error, failed close (e.g. ENOSPC, EIO on NFS at close) or
    /// failed rename is reported, and the target is then left as it was.
    public consuming func write(_ text: String) throws(VMMError) {
        let bytes = Array(text.utf8)
        var done = 0
        var failure: String?
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { ckvm_write(fd, $0.baseAddress! + done, $0.count - done) }  // non-empty here
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard n > 0 else {
                failure = "write failed after \(done) of \(bytes.count) bytes: \(n == 0 ? "no progress" : errnoString(errno))"
                break
            }
            done += n
        }
        if failure == nil && fchmod(fd, mode) != 0 { failure = "fchmod: \(errnoString(errno))" }
        let closed = close(fd)
        fd = -1
        if failure == nil && closed != 0 { failure = "close: \(errnoString(errno))" }
        if failure == nil && rename(temporary, target) != 0 { failure = "rename into place: \(errnoString(errno))" }
        if let failure {
            unlink(temporary)
            throw .output(path: path, reason: failure)
        }
    }

    /// Drops the results: the temporary file goes, the target stays as it was.
    public consuming func discard() {
        close(fd)
        fd = -1
        unlink(temporary)
    }
}
