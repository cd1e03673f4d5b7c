/// One architecture's nested (second-stage) page-table entry format.
///
/// The generic walker `PageTable64` works on raw 64-bit entries through these functions;
/// each format also has a typed entry (`EPTEntry`, `NPTEntry`, `Stage2Descriptor`,
/// `GStagePTE`) with named bits for readers and tests. A format is a value because some
/// are configurable (levels, the Stage 2 attribute table, EPT mode-based execute).
public protocol NestedPagingFormat: Sendable {
    /// Levels of the walk: 3 or 4.
    var levels: Int { get }
    /// Entries of the root table: 512, or 2048 for the RISC-V "x4" modes (16 KiB root).
    var rootEntries: Int { get }
    /// Whether a 2 MiB or 1 GiB leaf (block) may be used.
    func allowsHugeLeaf(_ size: PageSize) -> Bool
    /// An entry is present (translates, or points to a table) when any of these bits is set.
    var presentMask: UInt64 { get }
    /// Above the last level, a present entry points to a next-level table when
    /// `raw & tableMask == tableBits` (else it is a huge leaf / block).
    var tableMask: UInt64 { get }
    /// What `raw & tableMask` equals for an entry that points to a table.
    var tableBits: UInt64 { get }
    /// An entry that points to the next-level table at `table`.
    func tableEntry(_ table: HostPhysAddr) -> UInt64
    /// A leaf for `pa` with `flags`. `size` tells block from page where the format cares.
    func leafEntry(_ pa: HostPhysAddr, flags: MappingFlags, size: PageSize) -> UInt64
    /// The output address of a present entry (table or leaf).
    func address(_ raw: UInt64) -> HostPhysAddr
    /// The address field of an entry for output address `pa` (the inverse of `address`):
    /// `leafEntry(pa, …) == leafEntry(0, …) | encodeAddress(pa)`, which lets the fault path
    /// build leaves from a template.
    func encodeAddress(_ pa: HostPhysAddr) -> UInt64
    /// The flags of a present leaf.
    func leafFlags(_ raw: UInt64) -> MappingFlags
    /// The invalidation for one GPA, or for everything when `gpa` is `nil`.
    func invalidation(for gpa: GuestPhysAddr?, root: HostPhysAddr) -> TLBInvalidation
    /// Whether an invalid entry may stay cached, so making it valid needs an invalidation.
    var cachesInvalidEntries: Bool { get }
    /// The highest guest-physical address + 1 the walk can translate (default: what the
    /// root and levels cover; Stage 2 may configure fewer IPA bits).
    var guestAddressLimit: UInt64 { get }
}

extension NestedPagingFormat {
    /// The entry translates (leaf) or points to a table.
    @inlinable @inline(__always) public func isPresent(_ raw: UInt64) -> Bool { raw & presentMask != 0 }
    /// Above the last level: the present entry points to a next-level table (else a huge leaf).
    @inlinable @inline(__always) public func isTable(_ raw: UInt64) -> Bool { raw & tableMask == tableBits }
    /// Default: what the root and the levels cover, `rootEntries` × 512^(levels − 1) pages.
    @inlinable public var guestAddressLimit: UInt64 {
        UInt64(rootEntries) << UInt64(12 + 9 * (levels - 1))
    }
    /// Default: `false` (EPT, NPT and Stage 2 never cache a translation fault).
    public var cachesInvalidEntries: Bool { false }
}
