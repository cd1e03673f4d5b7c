import AxAddrSpace

/// G-stage fault records: what a guest access takes to HS-mode when the G-stage table has no
/// entry for it, for the library's `GStageFault` decoder.
public enum RiscV64Faults {
    /// A load (scause 21) or store/AMO (23) guest-page fault at `gpa`: htval holds the GPA
    /// shifted right by 2, stval the guest-virtual address, which is the GPA itself for the
    /// memtest guests (satp bare) and whose low 2 bits complete htval in any case.
    public static func guestPageFault(gpa: UInt64, write: Bool) -> GStageFault {
        GStageFault(scause: write ? 23 : 21, htval: gpa >> 2, stval: gpa)
    }
}
