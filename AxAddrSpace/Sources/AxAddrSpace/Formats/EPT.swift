// Intel Extended Page Tables, Intel SDM vol. 3C chapter 29 ("EPT"), 4-level walk.

/// EPT memory type, SDM vol. 3C §29.3.7 / table 29-6 (bits 5:3 of a leaf).
public enum EPTMemoryType: UInt64, Sendable, CaseIterable {
    /// UC (0), WC (1), WT (4), WP (5), WB (6): the raw value is the field's encoding.
    case uncacheable = 0, writeCombining = 1, writeThrough = 4, writeProtected = 5, writeBack = 6
}

/// One EPT paging-structure entry (SDM vol. 3C tables 29-1 … 29-6).
@frozen public struct EPTEntry: RawRepresentable, Hashable, Sendable {
    /// The entry's 64 bits.
    public var rawValue: UInt64
    /// An entry from its bits.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Bit 0: reads allowed.
    public static let read: UInt64 = 1 << 0
    /// Bit 1: writes allowed.
    public static let write: UInt64 = 1 << 1
    /// Bit 2: instruction fetch (supervisor with MBEC)
    public static let execute: UInt64 = 1 << 2
    /// Bits 5:3: the memory type (leaves only).
    public static let memoryTypeShift: UInt64 = 3
    /// Bit 6: ignore guest PAT (leaves)
    public static let ignorePAT: UInt64 = 1 << 6
    /// Bit 7: 2 MiB / 1 GiB leaf (PDE / PDPTE)
    public static let largePage: UInt64 = 1 << 7
    /// Bit 8: accessed (with EPTP bit 6).
    public static let accessed: UInt64 = 1 << 8
    /// Bit 9: dirty (leaves).
    public static let dirty: UInt64 = 1 << 9
    /// Bit 10: user-mode fetch (mode-based execute)
    public static let executeForUser: UInt64 = 1 << 10
    /// Bits 51:12.
    public static let addressMask: UInt64 = 0x000f_ffff_ffff_f000

    /// The memory type of a leaf (bits 5:3); nil for the reserved encodings 2, 3 and 7.
    @inlinable public var memoryType: EPTMemoryType? {
        EPTMemoryType(rawValue: (rawValue >> Self.memoryTypeShift) & 7)
    }
}

/// Intel EPT. Always 4 levels (the 5-level walk is not used by this library).
public struct EPT: NestedPagingFormat {
    /// With mode-based execute control (VM-execution control bit 22), bit 2 only allows
    /// supervisor fetches and bit 10 allows user fetches; `.user` + `.execute` sets both.
    public var modeBasedExecute: Bool
    /// Memory type for normal (cached) memory; device → UC, uncached → WC.
    public var normalMemoryType: EPTMemoryType

    /// EPT as the hypervisor configures it: mode-based execute control on or off, and the memory type of normal memory (write-back unless told otherwise).
    public init(modeBasedExecute: Bool = false, normalMemoryType: EPTMemoryType = .writeBack) {
        self.modeBasedExecute = modeBasedExecute
        self.normalMemoryType = normalMemoryType
    }

    // SDM 29.3.2: an entry is "present" if any of bits 2:0 is set (bit 10 too with MBEC).
    /// Bits 2:0, and bit 10 with mode-based execute (SDM 29.3.2).
    @inlinable public var presentMask: UInt64 { modeBasedExecute ? 0x407 : 0x7 }
    // Bit 7 (page size) clear in a PML4E / PDPTE / PDE: it references a table.
    /// Bit 7: clear in a PML4E, PDPTE or PDE that references a table.
    @inlinable public var tableMask: UInt64 { EPTEntry.largePage }
    /// 0: bit 7 clear.
    @inlinable public var tableBits: UInt64 { 0 }

    /// 4: PML4, PDPT, PD, PT.
    public var levels: Int { 4 }
    /// 512: the PML4 is one 4 KiB table.
    public var rootEntries: Int { 512 }
    /// 2 MiB and 1 GiB leaves are both allowed.
    public func allowsHugeLeaf(_ size: PageSize) -> Bool { true }
    /// Read, write and execute (and user execute with MBEC): the leaf decides, as permissions of all levels are ANDed.
    @inlinable public func tableEntry(_ table: HostPhysAddr) -> UInt64 {
        // Tables grant everything; the leaf decides (SDM 29.3.3: permissions are ANDed).
        encodeAddress(table) | 0x7 | (modeBasedExecute ? EPTEntry.executeForUser : 0)
    }
    /// R/W/X from the flags, the memory type (device: UC with ignore-PAT; uncached: WC; else `normalMemoryType`), bit 7 for 2 MiB / 1 GiB leaves.
    @inline(__always) @inlinable public func leafEntry(_ pa: HostPhysAddr, flags: MappingFlags, size: PageSize) -> UInt64 {
        var e = encodeAddress(pa)
        if flags.contains(.read) { e |= EPTEntry.read }
        if flags.contains(.write) { e |= EPTEntry.write }
        if flags.contains(.execute) {
            e |= EPTEntry.execute
            if modeBasedExecute && flags.contains(.user) { e |= EPTEntry.executeForUser }
        }
        let type: EPTMemoryType = flags.contains(.device) ? .uncacheable
            : flags.contains(.uncached) ? .writeCombining : normalMemoryType
        e |= type.rawValue << EPTEntry.memoryTypeShift
        // Device memory must stay UC whatever the guest's PAT says.
        if flags.contains(.device) { e |= EPTEntry.ignorePAT }
        if size != .size4K { e |= EPTEntry.largePage }
        return e
    }
    /// Bits 51:12 of the entry.
    @inlinable public func address(_ raw: UInt64) -> HostPhysAddr { HostPhysAddr(raw & EPTEntry.addressMask) }
    /// `pa` in bits 51:12.
    @inlinable public func encodeAddress(_ pa: HostPhysAddr) -> UInt64 { pa.raw & EPTEntry.addressMask }
    /// R/W/X (user with MBEC's bit 10), `.device` for UC and `.uncached` for WC.
    @inlinable public func leafFlags(_ raw: UInt64) -> MappingFlags {
        var f: MappingFlags = []
        if raw & EPTEntry.read != 0 { f.insert(.read) }
        if raw & EPTEntry.write != 0 { f.insert(.write) }
        if raw & EPTEntry.execute != 0 { f.insert(.execute) }
        if modeBasedExecute && raw & EPTEntry.executeForUser != 0 { f.insert([.execute, .user]) }
        switch EPTEntry(rawValue: raw).memoryType {
        case .uncacheable: f.insert(.device)
        case .writeCombining: f.insert(.uncached)
        default: break
        }
        return f
    }
    /// Always a single-context INVEPT: EPT has no invalidation by guest-physical address.
    public func invalidation(for gpa: GuestPhysAddr?, root: HostPhysAddr) -> TLBInvalidation {
        .inveptSingleContext(eptp: eptp(root: root))
    }

    /// EPTP, SDM vol. 3C §25.6.11: bits 2:0 memory type of the walk (WB = 6), bits 5:3
    /// walk length − 1 (3 for four levels), bit 6 enables accessed/dirty flags, 51:12 PML4.
    public func eptp(root: HostPhysAddr, accessedDirty: Bool = false) -> UInt64 {
        (root.raw & EPTEntry.addressMask) | (3 << 3) | EPTMemoryType.writeBack.rawValue
            | (accessedDirty ? 1 << 6 : 0)
    }
}

/// An EPT-violation VM exit (basic exit reason 48), SDM vol. 3C §28.2.1 table 28-7.
public struct EPTViolation: Sendable, Equatable {
    /// The exit qualification (VMCS field 0x6400).
    public var qualification: UInt64
    /// VMCS field "guest-physical address" (encoding 0x2400).
    public var guestPhysicalAddress: UInt64
    /// The exit from the two VMCS fields.
    public init(qualification: UInt64, guestPhysicalAddress: UInt64) {
        self.qualification = qualification
        self.guestPhysicalAddress = guestPhysicalAddress
    }

    /// Decodes the exit qualification: bit 0 data read, bit 1 data write, bit 2
    /// instruction fetch; bits 5:3 the R/W/X permissions of the translation (all zero:
    /// the GPA was not mapped), bit 6 user-execute (MBEC).
    public var fault: NestedPageFault {
        let q = qualification
        let access: AccessKind = q & 2 != 0 ? .write : q & 4 != 0 ? .execute : .read
        let mapped = q & 0x38 != 0 || q & 0x40 != 0
        return NestedPageFault(gpa: GuestPhysAddr(guestPhysicalAddress), access: access,
                               kind: mapped ? .permission : .translation)
    }
}
