import AxAddrSpace
import KVM

/// Everything that can stop axvm, with the offending value in the message.
public enum VMMError: Error, CustomStringConvertible {
    case kvm(KVMError)
    case addrSpace(AddrSpaceError)
    /// The guest image is missing, unreadable, empty, too large or malformed.
    case guestImage(path: String, reason: String)
    /// A size given by the user is unusable.
    case badSize(what: String, value: UInt64, reason: String)
    /// Any other user-given value is unusable (as typed).
    case badValue(what: String, value: String, reason: String)
    /// An output file cannot be used (before the guest runs) or written (after).
    case output(path: String, reason: String)
    /// Host memory (memfd, mmap, userfaultfd) could not be set up.
    case host(String)
    /// A terminating signal (`Termination`) arrived during a set-up step; the runner turns
    /// it into a report whose exit is `.interrupted`.
    case interrupted(signal: Int32)
    /// An input file (an initrd) could not be read where it was measured: `offset` is the byte
    /// the read stopped at.
    case input(path: String, offset: UInt64, reason: String)
    /// A snapshot cannot be taken or used: the file, the field (or step) and why.
    case snapshot(path: String, field: String, reason: String)

    /// A bad user-given value (a usage error: exit status 64) rather than a failure to set
    /// the machine up (exit status 2).
    public var isUsageError: Bool {
        switch self {
        case .badSize, .badValue: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case let .kvm(e): "\(e)"
        case let .addrSpace(e): "guest memory: \(e)"
        case let .guestImage(path, reason): "guest image \(path): \(reason)"
        case let .badSize(what, value, reason): "\(what) \(value) (0x\(String(value, radix: 16))): \(reason)"
        case let .badValue(what, value, reason): "\(what) \(value): \(reason)"
        case let .output(path, reason): "\(path): \(reason)"
        case let .host(m): m
        case let .interrupted(signal): "interrupted by \(Termination.describe(signal))"
        case let .input(path, offset, reason): "\(path): \(reason) at offset \(offset) (0x\(String(offset, radix: 16)))"
        case let .snapshot(path, field, reason): "snapshot \(path): \(field): \(reason)"
        }
    }
}

func errnoString(_ e: Int32) -> String { String(cString: strerror(e)) }

#if canImport(Glibc)
import Glibc
#endif
import CKVM
