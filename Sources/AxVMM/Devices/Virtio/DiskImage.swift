/// A raw disk image file opened for a virtio-blk device: a regular, non-empty file whose size
/// is a whole number of 512-byte sectors, locked so that two VMs cannot write one image
/// (flock: exclusive for read-write, shared for read-only; a second writer is refused).

import CKVM
import KVM
#if canImport(Glibc)
import Glibc

@inline(__always) func diskFlock(_ fd: Int32, _ operation: Int32) -> Int32 { flock(fd, operation) }
#else
// The Embedded build sees libc through CKVM's headers, which do not include <sys/file.h>.
// Sound: flock(2) takes two ints and returns one, passed in the same registers by the Swift
// and C conventions on x86_64 and arm64.
@_silgen_name("flock") func diskFlock(_ fd: Int32, _ operation: Int32) -> Int32
#endif

/// <sys/file.h> (Linux): LOCK_SH, LOCK_EX, LOCK_NB.
let diskLockShared: Int32 = 1, diskLockExclusive: Int32 = 2, diskLockNonBlocking: Int32 = 4

/// Why a disk image cannot be used, with its path.
public enum DiskImageError: Error, Equatable, Sendable, CustomStringConvertible {
    case open(path: String, errno: Int32)
    case notRegular(path: String)
    /// Empty, or not a multiple of 512 bytes.
    case badSize(path: String, size: UInt64)
    /// Another process holds a conflicting lock (another VM uses the image).
    case locked(path: String, readOnly: Bool)

    public var description: String {
        switch self {
        case let .open(path, e): "disk image \(path): \(e == ENOENT ? "no such file" : errnoString(e))"
        case let .notRegular(path): "disk image \(path): not a regular file"
        case let .badSize(path, size): "disk image \(path): \(size) bytes is \(size == 0 ? "empty" : "not a multiple of 512")"
        case let .locked(path, readOnly):
            "disk image \(path): in use by another process (\(readOnly ? "it is open for writing" : "it is open"))"
        }
    }
}

/// An open raw image: its descriptor (closed once, on deinit), size and mode.
public final class DiskImage: Sendable {
    public let fd: Int32
    public let path: String
    public let size: UInt64
    public let readOnly: Bool

    public init(path: String, readOnly: Bool) throws(DiskImageError) {
        let fd = ckvm_open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard fd >= 0 else { throw .open(path: path, errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw .open(path: path, errno: e)
        }
        guard ckvm_is_regular_file(st.st_mode) != 0 else {
            close(fd)
            throw .notRegular(path: path)
        }
        let size = UInt64(max(0, st.st_size))
        guard size > 0, size % 512 == 0 else {
            close(fd)
            throw .badSize(path: path, size: size)
        }
        guard diskFlock(fd, (readOnly ? diskLockShared : diskLockExclusive) | diskLockNonBlocking) == 0 else {
            let e = errno
            close(fd)
            if e == EWOULDBLOCK { throw .locked(path: path, readOnly: readOnly) }
            throw .open(path: path, errno: e)
        }
        self.fd = fd
        self.path = path
        self.size = size
        self.readOnly = readOnly
    }

    deinit { close(fd) }  // also drops the lock
}
