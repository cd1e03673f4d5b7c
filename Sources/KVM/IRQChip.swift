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
    /// guest operating systems look for before they use KVM's paravirtual clock, and this
    /// vCPU's id as its APIC id (KVM gives vCPU n the APIC id n).
    public func setSupportedCPUIDWithHypervisorBit(from system: KVMSystem) throws(KVMError) {
        _ = try check("KVM_SET_CPUID2") { ckvm_set_supported_cpuid_hypervisor(system.fd.raw, fd.raw, UInt32(truncatingIfNeeded: id)) }
    }

    /// Whether this vCPU can still go on by itself (`ckvm_halt_state`).
    public enum HaltState: Sendable, Equatable {
        /// Running, runnable, or halted with a way to wake (interrupts enabled, NMI pending).
        case live
        /// Halted with interrupts disabled and nothing pending: only an INIT from another
        /// CPU can wake it (Linux's `halt`, a CPU taken offline).
        case haltedForGood
        /// An application processor that waits for INIT/SIPI from another CPU.
        case waitingForStartup
    }

    /// Where this vCPU stands (KVM_GET_MP_STATE, KVM_GET_REGS, KVM_GET_VCPU_EVENTS).
    public func haltState() throws(KVMError) -> HaltState {
        switch try check("KVM_GET_MP_STATE, KVM_GET_REGS, KVM_GET_VCPU_EVENTS", { ckvm_halt_state(fd.raw) }) {
        case 1: .haltedForGood
        case 2: .waitingForStartup
        default: .live
        }
    }

    /// Where the interrupt on ISA line `line` stands, in words, for a report on a guest that
    /// waits for it (`ckvm_intr_snapshot`): e.g. "mp halted, RFLAGS 0x246 (IF 1), shadow 0,
    /// injected -, NMI 0; PIC IRR 0x10 IMR 0xe8 ISR 0x0 last 0x0 base 0x30; IOAPIC pin 4
    /// vector 0x0 masked IRR 0; LAPIC LVT0 0x700 TPR 0x0 SVR 0x1ff IRR - ISR - timer
    /// 0x400ec current 0x0".
    public func interruptState(line: UInt32, vm: VirtualMachine) -> String {
        var s = ckvm_intr_snapshot()
        guard ckvm_intr_snapshot(vm.fd.raw, fd.raw, line, &s) == 0 else { return "interrupt state unknown (\(Errno.current))" }
        func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }
        func vec(_ v: Int32) -> String { v < 0 ? "-" : hex(v) }
        let mp = s.mp_state == 3 ? "halted" : s.mp_state == 0 ? "runnable" : "\(s.mp_state)"
        return "mp \(mp), RIP \(hex(s.rip)), RFLAGS \(hex(s.rflags)) (IF \((s.rflags >> 9) & 1)), shadow \(s.interrupt_shadow), "
            + "injected \(s.interrupt_injected != 0 ? hex(s.interrupt_nr) : "-"), NMI \(s.nmi_pending); "
            + "PIC IRR \(hex(s.pic_irr)) IMR \(hex(s.pic_imr)) ISR \(hex(s.pic_isr)) last \(hex(s.pic_last_irr)) "
            + "base \(hex(s.pic_irq_base))\(s.pic_special_mask != 0 ? " special-mask" : "")\(s.pic_auto_eoi != 0 ? " auto-EOI" : ""); "
            + "IOAPIC pin \(line) vector \(hex(s.ioapic_vector))\(s.ioapic_masked != 0 ? " masked" : "") IRR \(s.ioapic_irr); "
            + "LAPIC LVT0 \(hex(s.lapic_lvt0)) TPR \(hex(s.lapic_tpr)) SVR \(hex(s.lapic_svr)) IRR \(vec(s.lapic_irr_highest)) "
            + "ISR \(vec(s.lapic_isr_highest)) timer \(hex(s.lapic_lvt_timer)) current \(hex(s.lapic_timer_current))"
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
