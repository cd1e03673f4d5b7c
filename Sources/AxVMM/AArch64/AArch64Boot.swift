#if canImport(Glibc)
import Glibc
#endif
import AxAddrSpace
import CKVM
import KVM

/// VM and vCPU set-up of an AArch64 guest (compiled on every host; used on arm64 hosts).
enum AArch64Boot {
    /// KVM_ARM_VCPU_INIT feature bit 2: PSCI 0.2 (the guest may power off through HVC).
    static let featurePSCI02: UInt32 = 1 << 2
    /// Feature bit 0: the vCPU starts powered off (a secondary, until PSCI CPU_ON).
    static let featurePowerOff: UInt32 = 1 << 0
    /// Feature bit 3: a PMUv3 (KVM_CAP_ARM_PMU_V3), set up after the vGIC (`ArmPMU`).
    static let featurePMUv3: UInt32 = 1 << 3

    /// PC at the entry, PSTATE EL1h with interrupts masked, SP_EL1 its stack, x0 the
    /// parameter page, x1 its index, and the MMU on over the VMM's stage 1 identity map.
    static func setupVCPU(_ vcpu: VCPU, entry: UInt64, index: Int) throws(KVMError) {
        for (id, value) in registers(entry: entry, index: index) { try vcpu.setRegister(id, value) }
    }

    /// The (register id, value) pairs `setupVCPU` writes, in order.
    static func registers(entry: UInt64, index: Int) -> [(UInt64, UInt64)] {
        [(AArch64Register.mairEL1, AArch64SystemRegisters.mair),
         (AArch64Register.tcrEL1, AArch64SystemRegisters.tcr),
         (AArch64Register.ttbr0EL1, AArch64Layout.stage1Table),
         (AArch64Register.sctlrEL1, AArch64SystemRegisters.sctlr),
         (AArch64Register.pstate, AArch64SystemRegisters.pstate),
         (AArch64Register.spEL1, AArch64Layout.stackTop(vcpu: index)),
         (AArch64Register.x(0), AArch64Layout.params),
         (AArch64Register.x(1), UInt64(index)),
         (AArch64Register.pc, entry)]
    }
}

