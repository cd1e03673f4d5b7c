import CKVM
#if canImport(Glibc)
import Glibc
#endif


/// The one funnel for system calls returning -1/errno: turns failure into `KVMError`
/// and retries EINTR unless told not to (KVM_RUN reports EINTR as an exit of its own).
@inline(__always)
func check(_ name: @autoclosure () -> String, retryOnInterrupt: Bool = true,
           _ call: () -> Int32) throws(KVMError) -> Int32 {
    while true {
        let r = call()
        if r >= 0 { return r }
        let e = Errno.current
        if e == .interrupted && retryOnInterrupt { continue }
        throw .ioctl(name(), e)
    }
}

func ioctl(_ fd: Int32, _ request: UInt, _ name: @autoclosure () -> String,
           _ arg: UnsafeMutableRawPointer?) throws(KVMError) -> Int32 {
    try check(name()) { ckvm_ioctl_ptr(fd, request, arg) }
}

func ioctl(_ fd: Int32, _ request: UInt, _ name: @autoclosure () -> String, value: UInt) throws(KVMError) -> Int32 {
    try check(name()) { ckvm_ioctl_int(fd, request, value) }
}

/// A file descriptor closed exactly once, when its owner goes away.
public final class OwnedFD: @unchecked Sendable {  // immutable after init
    public let raw: Int32
    public init(_ raw: Int32) { self.raw = raw }
    deinit { _ = ckvm_close(raw) }
}
