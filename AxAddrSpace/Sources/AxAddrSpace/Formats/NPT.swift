// AMD nested paging (AMD64 APM vol. 2 §15.25). Nested tables use the long-mode page-table
// format of §5.3/§5.4, 4 levels, and every nested access is a user access (§15.25.5), so
// every entry carries U/S.

/// One long-mode paging entry as used by nested paging (APM vol. 2 figures 5-17 … 5-25).
@frozen public struct NPTEntry: RawRepresentable, Hashable, Sendable {
    /// The entry's 64 bits.
    public var rawValue: UInt64
    /// An entry from its bits.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Bit 0, P: the entry is present.
    public static let present: UInt64 = 1 << 0
    /// Bit 1, R/W: writes allowed.
    public static let writable: UInt64 = 1 << 1
    /// Bit 2, U/S: user access; must be 1 in every nested entry (nested walks are user accesses, APM 2 §15.25.5).
    public static let user: UInt64 = 1 << 2
    /// Bit 3, PWT: write-through.
    public static let writeThrough: UInt64 = 1 << 3
    /// Bit 4, PCD: cache disabled.
    public static let cacheDisable: UInt64 = 1 << 4
    /// Bit 5, A: accessed (set by the walker).
    public static let accessed: UInt64 = 1 << 5
    /// Bit 6, D: dirty (leaves; set by the walker).
    public static let dirty: UInt64 = 1 << 6
    /// Bit 7, PS in a PDPE / PDE: a 1 GiB / 2 MiB leaf.
    public static let pageSize: UInt64 = 1 << 7
    /// Bit 63, NX: no instruction fetch (needs EFER.NXE).
    public static let noExecute: UInt64 = 1 << 63
    /// Bits 51:12: the physical address of the table or page.
    public static let addressMask: UInt64 = 0x000f_ffff_ffff_f000
}

/// AMD NPT. Cannot express a present page without read permission: `.read` is implied.
public struct NPT: NestedPagingFormat {
    /// The one NPT format (the host's long-mode paging, 4 levels).
    public init() {}
    /// 4: PML4, PDP, PD, PT.
    public var levels: Int { 4 }
    /// 512: the PML4 is one 4 KiB table.
    public var rootEntries: Int { 512 }
    /// 2 MiB and 1 GiB leaves are both allowed.
    public func allowsHugeLeaf(_ size: PageSize) -> Bool { true }
    /// Bit 0 (P).
    @inlinable public var presentMask: UInt64 { NPTEntry.present }
    // PS (bit 7) clear in a PML4E / PDPE / PDE: it references a table.
    /// Bit 7 (PS): clear in an entry that references a table.
    @inlinable public var tableMask: UInt64 { NPTEntry.pageSize }
    /// 0: PS clear.
    @inlinable public var tableBits: UInt64 { 0 }
    /// Present, writable and user: the leaf decides.
    @inlinable public func tableEntry(_ table: HostPhysAddr) -> UInt64 {
        encodeAddress(table) | NPTEntry.present | NPTEntry.writable | NPTEntry.user
    }
    /// Present and user always (reads cannot be refused), R/W from `.write`, NX without `.execute`, PCD+PWT for device memory and PCD for uncached, PS for 2 MiB / 1 GiB leaves.
    @inline(__always) @inlinable public func leafEntry(_ pa: HostPhysAddr, flags: MappingFlags, size: PageSize) -> UInt64 {
        var e = encodeAddress(pa) | NPTEntry.present | NPTEntry.user
        if flags.contains(.write) { e |= NPTEntry.writable }
        if !flags.contains(.execute) { e |= NPTEntry.noExecute }
        // PAT index from PWT/PCD with the default PAT: 0b11 = UC, 0b01 = WT; for uncached
        // normal memory PCD alone gives UC- (APM vol. 2 §7.8.2 table 7-10).
        if flags.contains(.device) { e |= NPTEntry.cacheDisable | NPTEntry.writeThrough }
        else if flags.contains(.uncached) { e |= NPTEntry.cacheDisable }
        if size != .size4K { e |= NPTEntry.pageSize }
        return e
    }
    /// Bits 51:12 of the entry.
    @inlinable public func address(_ raw: UInt64) -> HostPhysAddr {
        // Bit 12 of a large-page entry is its PAT bit, never set by this library.
        HostPhysAddr(raw & NPTEntry.addressMask)
    }
    /// `pa` in bits 51:12.
    @inlinable public func encodeAddress(_ pa: HostPhysAddr) -> UInt64 { pa.raw & NPTEntry.addressMask }
    /// Always `.read`; `.write` from R/W, `.execute` unless NX, `.device` for PCD+PWT and `.uncached` for PCD alone.
    @inlinable public func leafFlags(_ raw: UInt64) -> MappingFlags {
        var f: MappingFlags = .read
        if raw & NPTEntry.writable != 0 { f.insert(.write) }
        if raw & NPTEntry.noExecute == 0 { f.insert(.execute) }
        switch raw & (NPTEntry.cacheDisable | NPTEntry.writeThrough) {
        case NPTEntry.cacheDisable | NPTEntry.writeThrough: f.insert(.device)
        case NPTEntry.cacheDisable: f.insert(.uncached)
        default: break
        }
        return f
    }
    /// Always a flush of the guest's ASID: NPT has no invalidation by guest-physical address.
    public func invalidation(for gpa: GuestPhysAddr?, root: HostPhysAddr) -> TLBInvalidation {
        .nptFlushGuest(nCR3: nCR3(root: root))
    }
    /// The VMCB's N_CR3 field: the root's physical address (PWT/PCD clear: write-back walks).
    public func nCR3(root: HostPhysAddr) -> UInt64 { root.raw & NPTEntry.addressMask }
}

/// A #NPF intercept (exit code 0x400), APM vol. 2 §15.25.6: EXITINFO1 is a page-fault
/// error code plus bits 32/33, EXITINFO2 the faulting guest-physical address.
public struct NPTFault: Sendable, Equatable {
    /// EXITINFO1: the page-fault error code and bits 32/33.
    public var exitInfo1: UInt64
    /// EXITINFO2: the faulting guest-physical address.
    public var exitInfo2: UInt64
    /// The intercept from the two VMCB fields.
    public init(exitInfo1: UInt64, exitInfo2: UInt64) {
        self.exitInfo1 = exitInfo1
        self.exitInfo2 = exitInfo2
    }
    /// Bit 0 P (a translation existed: permission fault), bit 1 R/W (write), bit 3 RSV (a
    /// reserved bit was set in a nested table entry: the table is malformed, and populating
    /// cannot help, so the kind is `.unrecoverable`), bit 4 I/D (instruction fetch), bit 32
    /// fault on the final GPA, bit 33 fault during the guest's own page-table walk.
    public var fault: NestedPageFault {
        let e = exitInfo1
        let access: AccessKind = e & 0x10 != 0 ? .execute : e & 2 != 0 ? .write : .read
        let kind: NestedFaultKind = e & 8 != 0 ? .unrecoverable : e & 1 != 0 ? .permission : .translation
        return NestedPageFault(gpa: GuestPhysAddr(exitInfo2), access: access, kind: kind)
    }
    /// The fault happened while the CPU walked the guest's own page tables.
    public var duringGuestPageWalk: Bool { exitInfo1 & (1 << 33) != 0 }
}
