import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// A userfaultfd (Linux 4.3+; shmem minor faults 5.13+): the file descriptor and its
/// ioctls, through the same funnel as KVM's (`check`), so every failure is a `KVMError`
/// naming the operation, the address range and the errno.
public final class Userfaultfd: @unchecked Sendable {  // fd immutable; the ioctls are thread-safe
    public let fd: OwnedFD

    /// A non-blocking userfaultfd with the API handshake done for `features`.
    public init(features: UInt64) throws(KVMError) {
        let raw = ckvm_userfaultfd(O_CLOEXEC | O_NONBLOCK)
        guard raw >= 0 else { throw .syscall("userfaultfd", Errno.current) }
        fd = OwnedFD(raw)
        var api = uffdio_api(api: UInt64(UFFD_API), features: features, ioctls: 0)
        _ = try ioctl(raw, CKVM_UFFDIO_API, "UFFDIO_API (features 0x\(String(features, radix: 16)))", &api)
    }

    /// UFFDIO_REGISTER of `[start, start+length)` in `mode`.
    public func register(_ start: UInt64, _ length: UInt64, mode: UInt64) throws(KVMError) {
        var reg = uffdio_register(range: uffdio_range(start: start, len: length), mode: mode, ioctls: 0)
        try call(CKVM_UFFDIO_REGISTER, "UFFDIO_REGISTER", start, length, &reg)
    }

    /// UFFDIO_UNREGISTER (which also wakes every thread waiting on a fault in the range).
    public func unregister(_ start: UInt64, _ length: UInt64) throws(KVMError) {
        var r = uffdio_range(start: start, len: length)
        try call(CKVM_UFFDIO_UNREGISTER, "UFFDIO_UNREGISTER", start, length, &r)
    }

    /// UFFDIO_CONTINUE: maps the file's pages into the range (and wakes the faulting
    /// threads unless `wake` is false).
    public func `continue`(_ start: UInt64, _ length: UInt64, wake: Bool = true) throws(KVMError) {
        var c = uffdio_continue(range: uffdio_range(start: start, len: length),
                                mode: wake ? 0 : UInt64(UFFDIO_CONTINUE_MODE_DONTWAKE), mapped: 0)
        try call(CKVM_UFFDIO_CONTINUE, "UFFDIO_CONTINUE", start, length, &c)
    }

    /// UFFDIO_WAKE: wakes the threads waiting on a fault in the range.
    public func wake(_ start: UInt64, _ length: UInt64) throws(KVMError) {
        var r = uffdio_range(start: start, len: length)
        try call(CKVM_UFFDIO_WAKE, "UFFDIO_WAKE", start, length, &r)
    }

    private func call<T>(_ request: UInt, _ name: String, _ start: UInt64, _ length: UInt64, _ arg: inout T) throws(KVMError) {
        do { _ = try withUnsafeMutablePointer(to: &arg) { p throws(KVMError) in try ioctl(fd.raw, request, name, p) } } catch {
            if case let .ioctl(_, e) = error { throw .userfault(name, start: start, length: length, e) }
            throw error
        }
    }
}
