// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
import CKVM

/// The in-kernel interrupt controllers and timer a Linux guest needs (8259 PICs, IOAPIC,
/// LAPIC, 8254 PIT), as Firecracker and crosvm set them up.
extension VirtualMachine {
    /// KVM_CREATE_IRQCHIP: must come before the first vCPU.
    public func createIRQChip() throws(KVMError) {
        _ = try check("KVM_CREATE_IRQCHIP") { ckvm_create_irqchip(fd.raw) }
    }

    /// KVM_CREATE_PIT2 (after the irqchip), with a dummy PC speaker port.
    public func createPIT2() throws(KVMError) {
        _ = try check("KVM_CREATE_PIT2") { ckvm_create_pit2(fd.raw) }
    }

    /// KVM_IRQ_LINE: drives GSI `irq` high or low. An ISA device's edge is a high then a
    /// low (`pulseIRQ`).
    public func setIRQLine(_ irq: UInt32, high: Bool) throws(KVMError) {
        _ = try check("KVM_IRQ_LINE(\(irq), \(high ? 1 : 0))") { ckvm_irq_line(fd.raw, irq, high ? 1 : 0) }
    }

    /// An edge on an ISA interrupt line (the 8250's IRQ 4).
    public func pulseIRQ(_ irq: UInt32) throws(KVMError) {
        try setIRQLine(irq, high: true)
        try setIRQLine(irq, high: false)
    }

    /// KVM_SET_IDENTITY_MAP_ADDR (x86, before the first vCPU): one page, outside RAM.
    public func setIdentityMapAddress(_ addr: UInt64) throws(KVMError) {
        _ = try check("KVM_SET_IDENTITY_MAP_ADDR") { ckvm_set_identity_map_addr(fd.raw, addr) }
    }
}

extension VCPU {
    /// LAPIC LINT0 := ExtINT, LINT1 := NMI (KVM_GET/SET_LAPIC), what a PC BIOS leaves for an
    /// OS that finds no MP table and runs the APIC in virtual wire mode.
    public func setLocalInterruptsForVirtualWire() throws(KVMError) {
        _ = try check("KVM_SET_LAPIC") { ckvm_set_lapic_lint(fd.raw) }
    }

    /// The CPUID this KVM supports, with the hypervisor-present bit (CPUID.1:ECX[31]) that
    /// guest operating systems look for before they use KVM's paravirtual clock.
    public func setSupportedCPUIDWithHypervisorBit(from system: KVMSystem) throws(KVMError) {
        _ = try check("KVM_SET_CPUID2") { ckvm_set_supported_cpuid_hypervisor(system.fd.raw, fd.raw) }
    }

    /// KVM_GET_MP_STATE (with the in-kernel irqchip): 0 runnable, 3 halted (waiting for an
    /// interrupt), … (include/uapi/linux/kvm.h).
    public func multiprocessingState() throws(KVMError) -> UInt32 {
        UInt32(try check("KVM_GET_MP_STATE") { ckvm_get_mp_state(fd.raw) })
    }

    /// `vm`'s IOAPIC pin `pin`: its vector and mask, and that vector's IRR/ISR bits in this
    /// vCPU's LAPIC, in words (for the report on a guest that stopped with an interrupt pending).
    public func interruptState(pin: UInt32, vm: VirtualMachine) -> String {
        var s = ckvm_irq_state()
        guard ckvm_irq_state(vm.fd.raw, fd.raw, pin, &s) == 0 else { return "interrupt state unknown (\(Errno.current))" }
        return "IOAPIC pin \(pin) → vector 0x\(String(s.vector, radix: 16))\(s.masked != 0 ? " (masked)" : ""), LAPIC IRR \(s.irr) ISR \(s.isr)"
    }

    /// KVM_SET_MP_STATE (0 runnable).
    public func setMultiprocessingState(_ state: UInt32) throws(KVMError) {
        _ = try check("KVM_SET_MP_STATE") { ckvm_set_mp_state(fd.raw, state) }
    }

    /// KVM_SET_MSRS; fails naming the first MSR KVM did not take.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        let index = msrs.map { $0.index }, value = msrs.map { $0.value }
        let n = try check("KVM_SET_MSRS") { ckvm_set_msrs(fd.raw, index, value, UInt32(msrs.count)) }
        if Int(n) < msrs.count {
            throw .ioctl("KVM_SET_MSRS (MSR 0x\(String(msrs[Int(n)].index, radix: 16)) refused)", .invalidArgument)
        }
    }
}
#endif
