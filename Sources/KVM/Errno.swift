#if canImport(Glibc)
#if canImport(Glibc)
import Glibc
#endif
#endif
import CKVM

/// An errno value with its name and message, for errors that say what the system refused.
/// (The VMM's own thin layer: swift-system's `Errno` does not build in Embedded Swift.)
public struct Errno: RawRepresentable, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's errno now.
    public static var current: Errno { Errno(rawValue: ckvm_errno()) }

    public static let notPermitted = Errno(rawValue: EPERM)
    public static let noSuchFileOrDirectory = Errno(rawValue: ENOENT)
    public static let noSuchDevice = Errno(rawValue: ENODEV)
    public static let interrupted = Errno(rawValue: EINTR)
    public static let permissionDenied = Errno(rawValue: EACCES)
    public static let resourceTemporarilyUnavailable = Errno(rawValue: EAGAIN)
    public static let fileExists = Errno(rawValue: EEXIST)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let noMemory = Errno(rawValue: ENOMEM)

    /// strerror's text, e.g. "No such file or directory".
    public var description: String {
        guard let s = strerror(rawValue) else { return "errno \(rawValue)" }
        return String(cString: s)
    }
}

#if !canImport(Glibc)
// Embedded Swift on Linux (scripts/build-static.sh): no Glibc overlay, so the two macros the
// VMM uses as values come from the C shim.
/// The calling thread's errno (glibc's `errno` is a macro over __errno_location()).
public var errno: Int32 {
    get { ckvm_errno() }
    set { ckvm_set_errno(newValue) }
}
/// mmap's failure value, `(void *)-1`.
nonisolated(unsafe) public let MAP_FAILED = UnsafeMutableRawPointer(bitPattern: -1)
#endif
