import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// The VMM's userfaultfd: missing and minor faults on shmem windows (Linux 5.13+), through
/// `KVM.Userfaultfd` (one error funnel with the KVM ioctls: failures name the operation and
/// the address range).
final class Userfault: @unchecked Sendable {  // immutable; ioctls are thread-safe
    let uffd: Userfaultfd
    var fd: OwnedFD { uffd.fd }

    init() throws(VMMError) {
        do { uffd = try Userfaultfd(features: UInt64(UFFD_FEATURE_MINOR_SHMEM)) } catch {
            if case let .syscall(_, e) = error {
                throw .host("userfaultfd: \(e) (needs /dev/userfaultfd access or vm.unprivileged_userfaultfd=1)")
            }
            throw .kvm(error)  // UFFDIO_API: minor shmem faults need Linux 5.13+
        }
    }

    /// Catch both first touches (page absent from the file) and minor faults (page in the
    /// file but not yet mapped in this window).
    func register(_ addr: UInt64, _ len: UInt64) throws(VMMError) {
        do { try uffd.register(addr, len, mode: UInt64(UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR)) } catch {
            throw .kvm(error)
        }
    }

    /// Also wakes every thread waiting on a fault in the range. Used on teardown and to
    /// fence guest memory: a failure there leaves nothing to undo.
    func unregister(_ addr: UInt64, _ len: UInt64) { try? uffd.unregister(addr, len) }

    /// Maps the file's existing pages into `[addr, addr+len)` and wakes the faulting thread.
    /// Pages already mapped there are skipped (EEXIST), so overlapping windows are fine.
    func resolve(_ addr: UInt64, _ len: UInt64, faultAddress: UInt64) throws(VMMError) {
        do { try uffd.continue(addr, len) } catch {
            guard case let .userfault(_, _, _, e) = error, e == .fileExists || e == .resourceTemporarilyUnavailable else {
                throw .kvm(error)
            }
            // Some page of the window was mapped already: one page at a time, then wake.
            var p = addr
            while p < addr + len {
                do { try uffd.continue(p, 4096, wake: false) } catch {
                    if case let .userfault(_, _, _, e) = error, e == .fileExists { p += 4096; continue }
                    throw .kvm(error)
                }
                p += 4096
            }
            try? uffd.wake(faultAddress & ~0xfff, 4096)
        }
    }
}
