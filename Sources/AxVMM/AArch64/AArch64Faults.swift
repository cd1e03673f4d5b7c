import AxAddrSpace

/// Stage 2 abort records: what ESR_EL2/HPFAR_EL2/FAR_EL2 hold for a guest access, for the
/// library's `Stage2Abort` decoder.
public enum AArch64Faults {
    /// A data abort from a lower EL (EC 0x24, IL set) at `ipa`: translation fault at level 3
    /// (DFSC 0b000111), WnR for a write, no instruction syndrome (ISV 0). HPFAR_EL2.FIPA holds
    /// IPA[51:12] at bit 4; FAR_EL2 the address's page offset (the guests map VA = IPA).
    public static func stage2Abort(ipa: UInt64, write: Bool) -> Stage2Abort {
        let esr: UInt64 = 0x24 << 26 | 1 << 25 | (write ? 1 << 6 : 0) | 0b000111
        return Stage2Abort(esr: esr, hpfar: (ipa >> 12) << 4, far: ipa & 0xfff)
    }

    /// The record of an abort KVM handed to user space as KVM_EXIT_ARM_NISV: ESR_EL2's ISS
    /// bits (KVM leaves out EC and IL) and the faulting IPA.
    public static func unemulated(esrISS: UInt64, ipa: UInt64) -> Stage2Abort {
        let esr = 0x24 << 26 | 1 << 25 | esrISS & 0x1ff_ffff
        return Stage2Abort(esr: esr, hpfar: (ipa >> 12) << 4, far: ipa & 0xfff)
    }
}
