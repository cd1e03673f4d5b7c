// RISC-V G-stage (guest-physical) translation, privileged spec (H extension) §"Two-Stage
// Address Translation": Sv39x4 and Sv48x4 are Sv39/Sv48 with two more GPA bits, so the root
// table has 2048 entries (16 KiB, 16 KiB aligned).

/// One Sv39/Sv48 page-table entry (privileged spec §"Sv39 Implementation", figure PTE).
@frozen public struct GStagePTE: RawRepresentable, Hashable, Sendable {
    /// The entry's 64 bits.
    public var rawValue: UInt64
    /// An entry from its bits.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Bit 0, V: the entry is valid.
    public static let valid: UInt64 = 1 << 0
    /// Bit 1, R: readable (R = W = X = 0: a pointer to the next table).
    public static let read: UInt64 = 1 << 1
    /// Bit 2, W: writable.
    public static let write: UInt64 = 1 << 2
    /// Bit 3, X: executable.
    public static let execute: UInt64 = 1 << 3
    /// Bit 4, U: must be 1 in G-stage leaves (G-stage accesses count as U-mode).
    public static let user: UInt64 = 1 << 4
    /// Bit 5, G: global mapping.
    public static let global: UInt64 = 1 << 5
    /// Bit 6, A: accessed (preset in leaves: with Svade a clear A raises a guest-page fault).
    public static let accessed: UInt64 = 1 << 6
    /// Bit 7, D: dirty (preset in leaves, as A).
    public static let dirty: UInt64 = 1 << 7
    /// PPN, bits 53:10.
    public static let ppnShift: UInt64 = 10
    /// Bits 53:10: the physical page number.
    public static let ppnMask: UInt64 = 0x003f_ffff_ffff_fc00
}

/// Sv39x4 (3 levels, 41-bit GPA) or Sv48x4 (4 levels, 50-bit GPA).
public struct GStage: NestedPagingFormat {
    /// 3 (Sv39x4), 4 (Sv48x4) or 5 (Sv57x4).
    public let levels: Int
    /// The VMID that `hgatp(root:)` and the HFENCE.GVMA operands carry (14 bits used).
    public var vmid: UInt16

    /// Sv39x4 (`levels` 3), Sv48x4 (4) or Sv57x4 (5); other levels throw
    /// `AddrSpaceError.unsupportedLevels`.
    public init(levels: Int = 3, vmid: UInt16 = 1) throws(AddrSpaceError) {
        guard (3...5).contains(levels) else { throw .unsupportedLevels(levels) }
        self.levels = levels
        self.vmid = vmid
    }
    /// Sv39x4: 3 levels, 41-bit guest-physical addresses.
    public static func sv39x4(vmid: UInt16 = 1) -> GStage { GStage(unchecked: 3, vmid: vmid) }
    /// Sv48x4: 4 levels, 50-bit guest-physical addresses.
    public static func sv48x4(vmid: UInt16 = 1) -> GStage { GStage(unchecked: 4, vmid: vmid) }
    /// Sv57x4: 5 levels, 59-bit guest-physical addresses (what RISC-V KVM picks on a hart
    /// with Sv57, e.g. QEMU's rv64).
    public static func sv57x4(vmid: UInt16 = 1) -> GStage { GStage(unchecked: 5, vmid: vmid) }
    private init(unchecked levels: Int, vmid: UInt16) {
        self.levels = levels
        self.vmid = vmid
    }

    /// 2048: the "x4" root is 16 KiB (four contiguous frames, 16 KiB aligned).
    public var rootEntries: Int { 2048 }
    /// Megapages (2 MiB) and gigapages (1 GiB) are both allowed.
    public func allowsHugeLeaf(_ size: PageSize) -> Bool { true }  // megapages, gigapages
    /// Bit 0 (V).
    @inlinable public var presentMask: UInt64 { GStagePTE.valid }
    // A valid PTE with R = W = X = 0 points to the next level.
    /// R, W and X: all clear in a valid PTE that points to the next level.
    @inlinable public var tableMask: UInt64 { GStagePTE.read | GStagePTE.write | GStagePTE.execute }
    /// 0: R = W = X = 0.
    @inlinable public var tableBits: UInt64 { 0 }
    /// A valid PTE with R = W = X = 0 pointing to `table`.
    @inlinable public func tableEntry(_ table: HostPhysAddr) -> UInt64 {
        encodeAddress(table) | GStagePTE.valid
    }
    /// V, U, A and D set; R/W/X from the flags (a huge leaf has the same form one or two levels up).
    @inline(__always) @inlinable public func leafEntry(_ pa: HostPhysAddr, flags: MappingFlags, size: PageSize) -> UInt64 {
        // A and D preset: with Svade a clear A/D raises a guest-page fault instead.
        var e = encodeAddress(pa) | GStagePTE.valid | GStagePTE.user
            | GStagePTE.accessed | GStagePTE.dirty
        if flags.contains(.read) { e |= GStagePTE.read }
        if flags.contains(.write) { e |= GStagePTE.write }
        if flags.contains(.execute) { e |= GStagePTE.execute }
        return e
    }
    /// The PPN (bits 53:10) shifted back to an address.
    @inlinable public func address(_ raw: UInt64) -> HostPhysAddr {
        HostPhysAddr(((raw & GStagePTE.ppnMask) >> GStagePTE.ppnShift) << 12)
    }
    /// `pa`'s page number in bits 53:10.
    @inlinable public func encodeAddress(_ pa: HostPhysAddr) -> UInt64 { (pa.raw >> 12) << GStagePTE.ppnShift }
    /// R/W/X as `.read`/`.write`/`.execute` (G-stage has no memory types: PMAs decide).
    @inlinable public func leafFlags(_ raw: UInt64) -> MappingFlags {
        var f: MappingFlags = []
        if raw & GStagePTE.read != 0 { f.insert(.read) }
        if raw & GStagePTE.write != 0 { f.insert(.write) }
        if raw & GStagePTE.execute != 0 { f.insert(.execute) }
        return f
    }
    /// `HFENCE.GVMA` for one guest-physical address (operand GPA >> 2), or for every address of the VMID.
    public func invalidation(for gpa: GuestPhysAddr?, root: HostPhysAddr) -> TLBInvalidation {
        guard let gpa else { return .gstageAll(vmid: vmid) }
        return .gstageGPA(operand: gpa.raw >> 2, vmid: vmid)
    }
    /// Without Svvptc a hart may keep an invalid translation cached (see `TLBInvalidation`).
    public var cachesInvalidEntries: Bool { true }

    /// `hgatp` (privileged spec, H extension): MODE[63:60] = 8 (Sv39x4), 9 (Sv48x4) or
    /// 10 (Sv57x4), VMID[57:44], PPN[43:0] of the 16 KiB-aligned root.
    public func hgatp(root: HostPhysAddr) -> UInt64 {
        UInt64(levels + 5) << 60 | (UInt64(vmid) & 0x3fff) << 44 | (root.raw >> 12) & 0xfff_ffff_ffff
    }
}

/// A guest-page fault trapped to HS-mode: scause 20 (instruction), 21 (load), 23 (store/AMO);
/// `htval` holds the GPA shifted right by 2; its low 2 bits equal those of `stval` (the
/// guest virtual address), since both lie at the same page offset.
public struct GStageFault: Sendable, Equatable {
    /// scause: 20 instruction, 21 load, 23 store/AMO guest-page fault.
    public var scause: UInt64
    /// htval: the faulting guest-physical address shifted right by 2.
    public var htval: UInt64
    /// stval: the faulting guest-virtual address (its low 2 bits complete the GPA).
    public var stval: UInt64
    /// The trap from the three CSRs.
    public init(scause: UInt64, htval: UInt64, stval: UInt64) {
        self.scause = scause
        self.htval = htval
        self.stval = stval
    }
    /// `nil` when `scause` is not a guest-page fault (or is an interrupt).
    public var fault: NestedPageFault? {
        let access: AccessKind
        switch scause {
        case 20: access = .execute
        case 21: access = .read
        case 23: access = .write
        default: return nil
        }
        // The cause does not tell a missing page from a permission fault.
        return NestedPageFault(gpa: GuestPhysAddr(htval << 2 | stval & 3), access: access, kind: .unknown)
    }
}
