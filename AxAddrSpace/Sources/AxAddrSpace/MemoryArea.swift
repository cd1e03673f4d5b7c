/// How an area's guest pages get their host frames.
public enum Backend: Equatable, Sendable, CustomStringConvertible {
    /// The area maps to host-physical memory at a constant offset: guest `area.start`
    /// is host `hostStart`. Mapped completely when created, with huge leaves where aligned.
    case linear(hostStart: HostPhysAddr)
    /// Frames come from the HAL, one 4 KiB frame per guest page. `populate: true` allocates
    /// all of them when the area is created; `false` allocates each on its first fault.
    case alloc(populate: Bool)

    /// `linear → HPA:…`, `alloc (populated)` or `alloc (lazy)`.
    public var description: String {
        switch self {
        case let .linear(h): "linear → \(h)"
        case let .alloc(p): p ? "alloc (populated)" : "alloc (lazy)"
        }
    }
}

/// One contiguous range of guest-physical memory with one backend and one set of flags.
public struct MemoryArea: Equatable, Sendable, CustomStringConvertible {
    /// The guest-physical addresses the area covers.
    public var range: GuestPhysRange
    /// What the guest may do there, and the memory kind.
    public var flags: MappingFlags
    /// Where the area's frames come from.
    public var backend: Backend

    /// The area's first address.
    public var start: GuestPhysAddr { range.start }
    /// The first address after the area.
    public var end: GuestPhysAddr { range.end }
    /// The area's length in bytes.
    public var size: UInt64 { range.size }
    /// Whether pages get frames on their first fault (`.alloc(populate: false)`).
    public var isLazy: Bool { backend == .alloc(populate: false) }

    /// Host address of guest `gpa` for a linear area.
    @inlinable func linearTarget(_ gpa: GuestPhysAddr) -> HostPhysAddr? {
        guard case let .linear(h) = backend else { return nil }
        return h + (gpa - range.start)
    }

    /// The part of this area inside `r` (`r` must overlap it), keeping the backend's offset.
    func slice(_ r: GuestPhysRange) -> MemoryArea {
        let s = max(start, r.start), e = min(end, r.end)
        var backend = self.backend
        if case let .linear(h) = backend { backend = .linear(hostStart: h + (s - start)) }
        return MemoryArea(range: GuestPhysRange(start: s, end: e), flags: flags, backend: backend)
    }

    /// Range, flags and backend, e.g. `GPA:[0x0, 0x1000) rwx alloc (lazy)`.
    public var description: String { "\(range) \(flags) \(backend)" }
}

/// Counters of an address space, for the hypervisor's statistics.
public struct AddrSpaceStatistics: Equatable, Sendable {
    /// All counters zero.
    public init() {}
    /// Guest frames allocated from the HAL and mapped now (alloc areas).
    public var populatedFrames: Int = 0
    /// Frames used by the nested page table, the root included.
    public var tableFrames: Int = 0
    /// Calls to `handlePageFault` (the sum of the outcomes below).
    public var faults: Int { faultsMapped + faultsSpurious + faultsNotInArea + faultsDenied + faultsOutOfMemory + faultsUnrecoverable }
    /// Faults that mapped new memory, and the pages they mapped.
    public var faultsMapped: Int = 0
    /// Pages those faults mapped (more than the faults with fault-around).
    public var pagesMappedByFaults: Int = 0
    /// Faults that found the page already mapped.
    public var faultsSpurious: Int = 0
    /// Faults refused because no area covers the address.
    public var faultsNotInArea: Int = 0
    /// Faults refused because the area forbids the access.
    public var faultsDenied: Int = 0
    /// Faults refused because the HAL had no frame.
    public var faultsOutOfMemory: Int = 0
    /// Fault records refused because their kind is `.unrecoverable` (not a missing page).
    public var faultsUnrecoverable: Int = 0

    /// `populatedFrames` in bytes.
    public var populatedBytes: UInt64 { UInt64(populatedFrames) * PageSize.size4K.bytes }
}
