@testable import AxVMM
import Glibc
import KVM
import Testing

/// KVM_IRQFD and KVM_IOEVENTFD on this machine's KVM: what the kernel accepts and refuses
/// shows the requests are laid out as it reads them (flags, lengths, the deassign path).
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here (set AXVM_REQUIRE_KVM=1 to fail instead)"))
struct EventFDTests {
    func errnoOf(_ body: () throws(KVMError) -> Void) -> Int32? {
        do { try body() } catch { if case let .ioctl(_, e) = error { return e.rawValue }; return -1 }
        return nil
    }

    @Test func ioeventfdsAreAssignedOnceAndDeassigned() throws {
        let vm = try KVMSystem().createVM()
        let e = try EventFD()
        #expect(errnoOf { () throws(KVMError) in try vm.assignIOEventFD(e.fd, address: 0xd000_0050, length: 4, dataMatch: 0) } == nil)
        // The same address, length and value again: taken.
        #expect(errnoOf { () throws(KVMError) in try vm.assignIOEventFD(e.fd, address: 0xd000_0050, length: 4, dataMatch: 0) } == EEXIST)
        // Another queue index on the same register: fine.
        #expect(errnoOf { () throws(KVMError) in try vm.assignIOEventFD(e.fd, address: 0xd000_0050, length: 4, dataMatch: 1) } == nil)
        #expect(errnoOf { () throws(KVMError) in try vm.assignIOEventFD(e.fd, address: 0xf5, length: 1, pio: true) } == nil)
        #expect(errnoOf { () throws(KVMError) in try vm.assignIOEventFD(e.fd, address: 0xd000_1000, length: 3) } == EINVAL)
        #expect(errnoOf { () throws(KVMError) in try vm.deassignIOEventFD(e.fd, address: 0xd000_0050, length: 4, dataMatch: 0) } == nil)
        #expect(errnoOf { () throws(KVMError) in try vm.deassignIOEventFD(e.fd, address: 0xd000_0050, length: 4, dataMatch: 0) } == ENOENT)
        #expect(errnoOf { () throws(KVMError) in try vm.deassignIOEventFD(e.fd, address: 0xf5, length: 1, pio: true) } == nil)
    }

    @Test func irqfdsNeedAnIRQChipAndTakeALineOnce() throws {
        let vm = try KVMSystem().createVM()
        let e = try EventFD(), r = try EventFD()
        try vm.createIRQChip()
        #expect(errnoOf { () throws(KVMError) in try vm.assignIRQFD(e.fd, gsi: 5) } == nil)
        #expect(errnoOf { () throws(KVMError) in try vm.assignIRQFD(e.fd, gsi: 5) } == EBUSY)
        #expect(errnoOf { () throws(KVMError) in try vm.deassignIRQFD(e.fd, gsi: 5) } == nil)
        // Level-triggered, with a resample eventfd.
        #expect(errnoOf { () throws(KVMError) in try vm.assignIRQFD(e.fd, gsi: 6, resampleFD: r.fd) } == nil)
        #expect(errnoOf { () throws(KVMError) in try vm.deassignIRQFD(e.fd, gsi: 6) } == nil)
    }
}
