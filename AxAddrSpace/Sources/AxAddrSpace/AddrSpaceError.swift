/// Why an address-space operation failed. Every case carries the offending value so a
/// message can say exactly what was wrong. A failed operation leaves the space as it was.
///
/// Rust `AxError` equivalents: `notAligned`, `emptyRange`, `outOfSpace`, `invalidFlags` →
/// `InvalidInput`; `overlaps` → `AlreadyExists`; `noMemory` → `NoMemory`;
/// `notMapped`, `notPopulated` → `BadAddress`.
public enum AddrSpaceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A guest address or size that must be a multiple of 4 KiB is not.
    case notAligned(GuestPhysAddr, size: UInt64)
    /// A host-physical address that must be 4 KiB aligned is not.
    case hostNotAligned(HostPhysAddr)
    /// Size zero, or a range that wraps past 2^64.
    case emptyRange(GuestPhysAddr, size: UInt64)
    /// The range is not inside the address space (or the format's guest-address limit).
    case outOfSpace(GuestPhysRange, space: GuestPhysRange)
    /// The range overlaps an existing area.
    case overlaps(GuestPhysRange, existing: GuestPhysRange)
    /// Flags no nested format can express (no access, or write without read).
    case invalidFlags(MappingFlags)
    /// The HAL returned no frame while mapping this address.
    case noMemory(GuestPhysAddr)
    /// No area covers this address.
    case notMapped(GuestPhysAddr)
    /// The address is in a lazy area whose page has not been populated yet.
    case notPopulated(GuestPhysAddr)
    /// The requested levels are not supported by the format.
    case unsupportedLevels(Int)
    /// A Stage 2 IPA width the start level cannot translate with one root table.
    case unsupportedIPABits(Int, levels: Int)

    /// The error in words, naming the values, e.g. `GPA:[0x0, 0x2000) overlaps the existing area GPA:[0x1000, 0x3000) rwx alloc (lazy)`.
    public var description: String {
        switch self {
        case let .notAligned(a, size): "\(a) size \(hex(size)) is not 4 KiB aligned"
        case let .hostNotAligned(a): "\(a) is not 4 KiB aligned"
        case let .emptyRange(a, size): "range at \(a) of size \(hex(size)) is empty or wraps"
        case let .outOfSpace(r, space): "\(r) is outside the address space \(space)"
        case let .overlaps(r, existing): "\(r) overlaps the existing area \(existing)"
        case let .invalidFlags(f): "mapping flags \(f) cannot be expressed (need read, or execute)"
        case let .noMemory(a): "out of host frames while mapping \(a)"
        case let .notMapped(a): "\(a) is not in any area"
        case let .notPopulated(a): "\(a) is in a lazy area and not populated yet"
        case let .unsupportedLevels(n): "\(n)-level tables are not supported by this format"
        case let .unsupportedIPABits(bits, levels): "a \(bits)-bit IPA is not supported with \(levels)-level stage 2 tables"
        }
    }
}
