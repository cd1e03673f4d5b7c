import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// One memory slot: guest-physical range backed by host virtual memory.
public struct MemorySlot: Equatable, Sendable {
    public var slot: UInt32
    public var guestPhysAddr: UInt64
    public var size: UInt64
    public var userspaceAddr: UInt64
    public var readOnly: Bool
    /// KVM_MEM_LOG_DIRTY_PAGES: KVM records each page the guest writes (`dirtyLog`).
    public var logDirty: Bool
    public init(slot: UInt32, guestPhysAddr: UInt64, size: UInt64, userspaceAddr: UInt64, readOnly: Bool, logDirty: Bool = false) {
        self.slot = slot
        self.guestPhysAddr = guestPhysAddr
        self.size = size
        self.userspaceAddr = userspaceAddr
        self.readOnly = readOnly
        self.logDirty = logDirty
    }
}

/// A VM file descriptor (rust-vmm's `VmFd`).
public final class VirtualMachine: @unchecked Sendable {  // immutable after init
    public let fd: OwnedFD
    public let system: KVMSystem

    init(fd: OwnedFD, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    /// KVM_SET_USER_MEMORY_REGION. KVM cannot resize a slot or toggle its flags: delete
    /// (size 0) and create again.
    public func setMemorySlot(_ s: MemorySlot) throws(KVMError) {
        var region = kvm_userspace_memory_region(
            slot: s.slot, flags: (s.readOnly ? UInt32(KVM_MEM_READONLY) : 0) | (s.logDirty ? UInt32(KVM_MEM_LOG_DIRTY_PAGES) : 0),
            guest_phys_addr: s.guestPhysAddr, memory_size: s.size, userspace_addr: s.userspaceAddr)
        _ = try ioctl(fd.raw, CKVM_KVM_SET_USER_MEMORY_REGION,
                      "KVM_SET_USER_MEMORY_REGION(slot \(s.slot), gpa 0x\(String(s.guestPhysAddr, radix: 16)), size 0x\(String(s.size, radix: 16)))",
                      &region)
    }

    /// KVM_GET_DIRTY_LOG: which of the slot's `pages` pages the guest wrote since the last
    /// call (the slot must have `logDirty`), one bit per page.
    public func dirtyLog(slot: UInt32, pages: Int) throws(KVMError) -> [UInt64] {
        var bitmap = [UInt64](repeating: 0, count: (pages + 63) / 64)
        let r = bitmap.withUnsafeMutableBufferPointer { ckvm_get_dirty_log(fd.raw, slot, $0.baseAddress) }
        if r < 0 { throw .ioctl("KVM_GET_DIRTY_LOG(slot \(slot))", Errno(rawValue: errno)) }
        return bitmap
    }

    public func deleteMemorySlot(_ slot: UInt32) throws(KVMError) {
        var region = kvm_userspace_memory_region(slot: slot, flags: 0, guest_phys_addr: 0, memory_size: 0, userspace_addr: 0)
        _ = try ioctl(fd.raw, CKVM_KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION(delete slot \(slot))", &region)
    }

    /// x86: the three pages KVM needs for real-mode emulation (KVM_SET_TSS_ADDR).
    public func setTSSAddress(_ addr: UInt64) throws(KVMError) {
        _ = try ioctl(fd.raw, CKVM_KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", value: UInt(addr))
    }

    /// arm64: KVM_ARM_PREFERRED_TARGET, the vCPU target that matches the host CPU.
    public func preferredTarget() throws(KVMError) -> UInt32 {
        var t = ckvm_arm_vcpu_init()
        _ = try ioctl(fd.raw, CKVM_KVM_ARM_PREFERRED_TARGET, "KVM_ARM_PREFERRED_TARGET", &t)
        return t.target
    }

    /// KVM_ENABLE_CAP on the VM with one argument.
    public func enableCapability(_ cap: Int32, _ arg0: UInt64 = 0, name: String) throws(KVMError) {
        _ = try check("KVM_ENABLE_CAP(\(name))") { ckvm_enable_cap(fd.raw, UInt32(cap), arg0) }
    }

    public func createVCPU(id: UInt = 0) throws(KVMError) -> VCPU {
        let size = try system.vcpuMmapSize()
        let raw = try ioctl(fd.raw, CKVM_KVM_CREATE_VCPU, "KVM_CREATE_VCPU(\(id))", value: id)
        let owned = OwnedFD(raw)
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, raw, 0)
        guard let p, p != MAP_FAILED else { throw .syscall("mmap(kvm_run)", .init(rawValue: errno)) }
        return VCPU(fd: owned, run: p, runSize: size, id: id)
    }
}
