import AxAddrSpace

/// The nested fault records of an x86 host's MMU, for the library's decoders: what the pager
/// hands to `handlePageFault` for a userfaultfd event (the event says the address and
/// whether it was a write; the record says it as the hardware would).
enum X86Faults {
    /// AMD #NPF: EXITINFO1 = a guest-physical access (bit 32) that found no page (P clear),
    /// user, W for a write; EXITINFO2 = the GPA (APM vol. 2 §15.25.6).
    static func npf(gpa: GuestPhysAddr, write: Bool) -> NestedPageFault {
        NPTFault(exitInfo1: 1 << 32 | (write ? 0x2 : 0) | 0x4, exitInfo2: gpa.raw).fault
    }

    /// Intel EPT violation: the exit qualification's read (bit 0) or write (bit 1) with no
    /// permission bits (bits 5:3) of a present entry: not mapped (SDM vol. 3C table 28-7).
    static func eptViolation(gpa: GuestPhysAddr, write: Bool) -> NestedPageFault {
        EPTViolation(qualification: write ? 0x2 : 0x1, guestPhysicalAddress: gpa.raw).fault
    }
}
