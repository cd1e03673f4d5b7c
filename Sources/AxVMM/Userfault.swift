import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// A userfaultfd with the shmem minor-fault feature (Linux 5.13+).
final class Userfault: @unchecked Sendable {  // fd immutable; ioctls are thread-safe
    let fd: OwnedFD

    init() throws(VMMError) {
        let raw = ckvm_userfaultfd(O_CLOEXEC | O_NONBLOCK)
        guard raw >= 0 else {
            throw .host("userfaultfd: \(errnoString(errno)) (needs /dev/userfaultfd access or vm.unprivileged_userfaultfd=1)")
        }
        fd = OwnedFD(raw)
        var api = uffdio_api(api: UInt64(UFFD_API), features: UInt64(UFFD_FEATURE_MINOR_SHMEM), ioctls: 0)
        guard ckvm_ioctl_ptr(raw, CKVM_UFFDIO_API, &api) == 0 else {
            throw .host("UFFDIO_API (minor shmem faults, Linux 5.13+): \(errnoString(errno))")
        }
    }

    /// Catch both first touches (page absent from the file) and minor faults (page in the
    /// file but not yet mapped in this window).
    func register(_ addr: UInt64, _ len: UInt64) throws(VMMError) {
        var reg = uffdio_register(range: uffdio_range(start: addr, len: len),
                                  mode: UInt64(UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR), ioctls: 0)
        guard ckvm_ioctl_ptr(fd.raw, CKVM_UFFDIO_REGISTER, &reg) == 0 else {
            throw .host("UFFDIO_REGISTER(0x\(String(addr, radix: 16)), \(len)): \(errnoString(errno))")
        }
    }

    /// Also wakes every thread waiting on a fault in the range.
    func unregister(_ addr: UInt64, _ len: UInt64) {
        var r = uffdio_range(start: addr, len: len)
        _ = ckvm_ioctl_ptr(fd.raw, CKVM_UFFDIO_UNREGISTER, &r)
    }

    /// Maps the file's existing pages into `[addr, addr+len)` and wakes the faulting thread.
    /// Pages already mapped there are skipped (EEXIST), so overlapping windows are fine.
    func resolve(_ addr: UInt64, _ len: UInt64, faultAddress: UInt64) throws(VMMError) {
        var c = uffdio_continue(range: uffdio_range(start: addr, len: len), mode: 0, mapped: 0)
        if ckvm_ioctl_ptr(fd.raw, CKVM_UFFDIO_CONTINUE, &c) == 0 { return }
        guard errno == EEXIST || errno == EAGAIN else {
            throw .host("UFFDIO_CONTINUE(0x\(String(addr, radix: 16)), \(len)): \(errnoString(errno))")
        }
        // Some page of the window was mapped already: one page at a time, then wake.
        var p = addr
        while p < addr + len {
            var one = uffdio_continue(range: uffdio_range(start: p, len: 4096),
                                      mode: UInt64(UFFDIO_CONTINUE_MODE_DONTWAKE), mapped: 0)
            if ckvm_ioctl_ptr(fd.raw, CKVM_UFFDIO_CONTINUE, &one) != 0 && errno != EEXIST {
                throw .host("UFFDIO_CONTINUE(0x\(String(p, radix: 16))): \(errnoString(errno))")
            }
            p += 4096
        }
        var w = uffdio_range(start: faultAddress & ~0xfff, len: 4096)
        _ = ckvm_ioctl_ptr(fd.raw, CKVM_UFFDIO_WAKE, &w)
    }
}
