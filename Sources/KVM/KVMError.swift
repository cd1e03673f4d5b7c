

/// A failed KVM or userfaultfd operation, naming what failed and the errno.
public enum KVMError: Error, Equatable, CustomStringConvertible {
    /// Opening a device node failed (ENOENT: no KVM here; EACCES: no permission).
    case open(path: String, Errno)
    /// An ioctl failed.
    case ioctl(String, Errno)
    /// Another system call failed.
    case syscall(String, Errno)
    /// A userfaultfd ioctl on `[start, start+length)` failed.
    case userfault(String, start: UInt64, length: UInt64, Errno)
    /// The device opened but does not answer KVM_GET_API_VERSION: not a KVM device.
    case notKVM(path: String, Errno)
    /// The kernel speaks another KVM API version than 12.
    case apiVersion(Int32)
    /// A capability this VMM needs is missing.
    case missingCapability(String)

    public var description: String {
        switch self {
        case let .open(path, e):
            switch e {
            case .noSuchFileOrDirectory: "\(path) does not exist: KVM is not available on this host (\(e))"
            case .permissionDenied, .notPermitted: "no permission to open \(path) (\(e)); add the user to the kvm group"
            default: "cannot open \(path): \(e)"
            }
        case let .ioctl(name, e): "\(name) failed: \(e)"
        case let .syscall(name, e): "\(name) failed: \(e)"
        case let .userfault(name, start, length, e):
            "\(name) of [0x\(String(start, radix: 16)), +0x\(String(length, radix: 16))) failed: \(e)"
        case let .notKVM(path, e): "\(path) is not a KVM device (KVM_GET_API_VERSION failed: \(e))"
        case let .apiVersion(v): "KVM API version \(v), expected 12"
        case let .missingCapability(c): "KVM lacks the capability \(c)"
        }
    }
}
