/// A guest's physical address space: a list of areas and the nested page table that maps
/// them (the Rust crate's `AddrSpace<H>`).
///
/// Every operation checks its input first and either succeeds or leaves the space exactly
/// as it was (areas, page table, frames). Not thread-safe: a hypervisor serializes calls
/// (axvm's fault thread holds a lock).
public final class AddrSpace<Format: NestedPagingFormat, HAL: NestedMemoryHAL> {
    /// The guest-physical range this space manages.
    public let range: GuestPhysRange
    /// The nested page table: its root goes into the hardware's register (`EPT.eptp(root:)`, `Stage2.vttbr(root:)`, …).
    public let pageTable: PageTable64<Format, HAL>
    /// Areas sorted by start, never overlapping.
    // Unchecked exclusivity: the space is single-threaded by contract and never holds an
    // access to these across a call that could touch them again.
    @exclusivity(unchecked) public private(set) var areas: [MemoryArea] = [] {
        didSet { hot = HotArea() }
    }
    @exclusivity(unchecked) private var counters = AddrSpaceStatistics()
    /// The area of the last fault: faults come in runs inside one area.
    @exclusivity(unchecked) private var hot = HotArea()

    /// The HAL (the page table's own, kept here so the fault path loads it directly).
    public let hal: HAL
    /// The table's hardware format.
    public var format: Format { pageTable.format }
    /// The lowest guest-physical address of the space.
    public var base: GuestPhysAddr { range.start }
    /// The first guest-physical address after the space.
    public var end: GuestPhysAddr { range.end }
    /// The space's length in bytes.
    public var size: UInt64 { range.size }
    /// Physical address of the root table, for EPTP / nCR3 / VTTBR_EL2 / hgatp.
    public var pageTableRoot: HostPhysAddr { pageTable.root }

    /// An empty space over `[base, base+size)` (the Rust crate's `new_empty`). Allocates
    /// the root table. `base` and `size` must be 4 KiB multiples, and the range must fit
    /// the format's walk (e.g. 2^39 bytes for 3-level Stage 2, 2^41 for Sv39x4).
    public init(base: GuestPhysAddr, size: UInt64, format: Format, hal: HAL) throws(AddrSpaceError) {
        guard base.isPageAligned, size & 0xfff == 0 else { throw .notAligned(base, size: size) }
        guard size > 0, let r = GuestPhysRange(start: base, size: size) else { throw .emptyRange(base, size: size) }
        let limit = GuestPhysRange(start: GuestPhysAddr(0), end: GuestPhysAddr(format.guestAddressLimit))
        guard limit.contains(r) else { throw .outOfSpace(r, space: limit) }
        do {
            pageTable = try PageTable64(format: format, hal: hal)
        } catch {
            throw .noMemory(base)
        }
        range = r
        self.hal = hal
    }

    deinit { clear() }

    /// The counters now: populated frames, table frames and the outcome of every fault so far.
    public var statistics: AddrSpaceStatistics {
        var s = counters
        s.tableFrames = pageTable.tableFrames
        return s
    }

    /// Whether `[start, start+size)` lies inside the space.
    public func contains(_ start: GuestPhysAddr, size: UInt64) -> Bool {
        guard let r = GuestPhysRange(start: start, size: size) else { return false }
        return range.contains(r)
    }

    /// The area containing `gpa`, if any.
    public func area(containing gpa: GuestPhysAddr) -> MemoryArea? {
        areaIndex(gpa).map { areas[$0] }
    }

    /// Index of the area containing `gpa` (binary search).
    func areaIndex(_ gpa: GuestPhysAddr) -> Int? {
        let n = areas.count
        var lo = 0, hi = n
        while lo < hi {
            let mid = (lo + hi) / 2
            if areas[mid].end <= gpa { lo = mid + 1 } else { hi = mid }
        }
        guard lo < n, areas[lo].start <= gpa else { return nil }
        return lo
    }

    // MARK: Mapping

    /// Maps `[gpa, gpa+size)` to host-physical `[hpa, hpa+size)`, with 2 MiB / 1 GiB leaves
    /// where both sides are aligned.
    public func mapLinear(_ gpa: GuestPhysAddr, to hpa: HostPhysAddr, size: UInt64,
                          flags: MappingFlags) throws(AddrSpaceError) {
        let r = try checkNew(gpa, size: size, flags: flags)
        guard hpa.isPageAligned else { throw .hostNotAligned(hpa) }
        do {
            try pageTable.mapRegion(gpa, size: size, flags: flags, allowHuge: true,
                                    hpa: { hpa + ($0 - gpa) }, unwind: { _, _, _ in })
        } catch {
            throw mapError(error)
        }
        insert(MemoryArea(range: r, flags: flags, backend: .linear(hostStart: hpa)))
    }

    /// Adds an area whose frames come from the HAL: all now (`populate: true`, each frame
    /// zeroed) or each on its first fault (`populate: false`).
    public func mapAlloc(_ gpa: GuestPhysAddr, size: UInt64, flags: MappingFlags,
                         populate: Bool) throws(AddrSpaceError) {
        let r = try checkNew(gpa, size: size, flags: flags)
        if populate {
            // Page by page, as faults would (the walk cache makes that one table lookup per
            // page); the area is new, so no page is mapped yet.
            var p = r.start
            while p < r.end {
                guard case .mapped = self.populate(p, flags: flags, area: r, invalidate: false) else {
                    // Out of frames: give back what this call mapped (frames and tables).
                    _ = try? pageTable.unmapRegion(r.start, size: p - r.start, onLeaf: { _, f, _ in hal.deallocFrame(f) })
                    throw .noMemory(p)
                }
                p = p + PageSize.size4K.bytes
            }
            // One invalidation for the lot where invalid entries may be cached (RISC-V).
            if format.cachesInvalidEntries { hal.invalidateTLB(format.invalidation(for: nil, root: pageTableRoot)) }
            counters.populatedFrames += Int(r.size / PageSize.size4K.bytes)
        }
        insert(MemoryArea(range: r, flags: flags, backend: .alloc(populate: populate)))
    }

    /// Removes `[gpa, gpa+size)` from the space: whole areas inside are dropped, areas
    /// partly inside shrink or split, holes are fine. Frames of alloc areas go back to the
    /// HAL; huge leaves of linear areas are split where the range cuts them.
    public func unmap(_ gpa: GuestPhysAddr, size: UInt64) throws(AddrSpaceError) {
        let r = try checkRange(gpa, size: size)
        try removeLeaves(in: r)
        var kept: [MemoryArea] = []
        kept.reserveCapacity(areas.count + 1)
        for a in areas {
            guard a.range.overlaps(r) else { kept.append(a); continue }
            if a.start < r.start { kept.append(a.slice(GuestPhysRange(start: a.start, end: r.start))) }
            if r.end < a.end { kept.append(a.slice(GuestPhysRange(start: r.end, end: a.end))) }
        }
        areas = kept
    }

    /// Releases the populated frames of lazy (alloc) pages in `[gpa, gpa+size)` but keeps
    /// the areas: the next guest touch faults and gets a fresh zeroed frame. Linear areas
    /// in the range are left alone. Returns the number of frames released.
    @discardableResult
    public func depopulate(_ gpa: GuestPhysAddr, size: UInt64) throws(AddrSpaceError) -> Int {
        let r = try checkRange(gpa, size: size)
        let before = counters.populatedFrames
        for a in areas where a.range.overlaps(r) && !a.isLinear {
            let s = a.slice(r)
            try removeLeaves(in: s.range)
        }
        return before - counters.populatedFrames
    }

    /// Changes the flags of `[gpa, gpa+size)`: areas are split at the boundaries, present
    /// leaves rewritten, lazy pages get the new flags when they fault.
    public func protect(_ gpa: GuestPhysAddr, size: UInt64, flags: MappingFlags) throws(AddrSpaceError) {
        let r = try checkRange(gpa, size: size)
        try checkFlags(flags)
        do {
            try pageTable.protectRegion(gpa, size: size, flags: flags)
        } catch {
            throw mapError(error)
        }
        var out: [MemoryArea] = []
        out.reserveCapacity(areas.count + 2)
        for a in areas {
            guard a.range.overlaps(r) else { out.append(a); continue }
            if a.start < r.start { out.append(a.slice(GuestPhysRange(start: a.start, end: r.start))) }
            var mid = a.slice(r)
            mid.flags = flags
            out.append(mid)
            if r.end < a.end { out.append(a.slice(GuestPhysRange(start: r.end, end: a.end))) }
        }
        areas = out
    }

    /// Unmaps every area and returns every frame. Cannot fail: no leaf sticks out of the
    /// whole space, so nothing needs a split (the only allocating step of an unmap).
    public func clear() {
        try? removeLeaves(in: range)
        areas.removeAll()
    }

    // MARK: Translation

    /// Host-physical address of `gpa`, or nil if outside the space or not mapped (yet).
    @inlinable public func translate(_ gpa: GuestPhysAddr) -> HostPhysAddr? {
        // The space lies below the walk's limit (checked in init): one range check suffices.
        guard range.contains(gpa) else { return nil }
        return pageTable.translateInRange(gpa)
    }

    /// `gpa`'s host-physical address and how many bytes from there on are contiguous in
    /// host memory: up to the area's end for linear areas, up to the end of the page for
    /// alloc areas (their frames need not be adjacent). The Rust crate returned the whole
    /// area's size, which let a caller run off the end of a page.
    public func translateAndGetLimit(_ gpa: GuestPhysAddr) -> (HostPhysAddr, UInt64)? {
        guard range.contains(gpa), let i = areaIndex(gpa), let leaf = pageTable.query(gpa) else { return nil }
        let a = areas[i]
        if a.isLinear { return (leaf.hpa, a.end - gpa) }
        return (leaf.hpa, min(a.end, leaf.base + leaf.size.bytes) - gpa)
    }

    /// Host memory backing `[gpa, gpa+length)`, as few host spans as possible (adjacent
    /// pieces are merged). Throws instead of crashing on holes or lazy pages not populated.
    public func translatedBuffers(_ gpa: GuestPhysAddr, length: UInt64) throws(AddrSpaceError)
        -> [UnsafeMutableRawBufferPointer]
    {
        var out: [UnsafeMutableRawBufferPointer] = []
        var cur = gpa
        var left = length
        while left > 0 {
            let span = try hostSpan(at: cur)
            let n = min(UInt64(span.count), left)
            let piece = UnsafeMutableRawBufferPointer(rebasing: span[0..<Int(n)])
            if let last = out.last, let lb = last.baseAddress, lb + last.count == piece.baseAddress {
                out[out.count - 1] = UnsafeMutableRawBufferPointer(start: lb, count: last.count + Int(n))
            } else {
                out.append(piece)
            }
            cur = cur + n
            left -= n
        }
        return out
    }

    // MARK: Faults

    /// Resolves a nested page fault at `gpa` for `access` (the Rust crate's
    /// `handle_page_fault`, with a reason instead of a bool).
    ///
    /// In a lazy area the page — or, with `faultAround` > 4 KiB, every unpopulated page of
    /// the `faultAround`-aligned window around it (aligned relative to the area's start and
    /// clipped to the area) — gets a zeroed frame from `HAL.allocFrame(for:in:)`. A page
    /// that is already mapped allocates nothing. On out-of-memory nothing stays mapped.
    public func handlePageFault(_ gpa: GuestPhysAddr, access: AccessKind,
                                faultAround: UInt64 = PageSize.size4K.bytes) -> FaultResolution {
        // The common case inline: one page of the lazy area the last fault was in.
        let a = hot
        guard a.contains(gpa), !a.isLinear, faultAround <= PageSize.size4K.bytes,
              a.flags.contains(access.requiredFlags) else {
            return handlePageFaultInGeneral(gpa, access: access, faultAround: faultAround)
        }
        let page = gpa.alignedDown(PageSize.size4K.bytes)
        return resolveOne(page, access: access, flags: a.flags,
                          populate(page, flags: a.flags, area: a.range, invalidate: true))
    }

    /// `handlePageFault` for every case: area lookup, refused accesses, linear areas,
    /// fault-around windows.
    @inline(never)
    private func handlePageFaultInGeneral(_ gpa: GuestPhysAddr, access: AccessKind,
                                          faultAround: UInt64) -> FaultResolution {
        // Areas lie inside the space, so finding one is the range check too.
        var a = hot
        if !a.contains(gpa) {
            guard let i = areaIndex(gpa) else {
                counters.faultsNotInArea &+= 1
                return .notInArea
            }
            a = HotArea(areas[i])
            hot = a
        }
        let flags = a.flags
        guard flags.contains(access.requiredFlags) else {
            counters.faultsDenied &+= 1
            return .accessDenied(allowed: flags)
        }
        let page = gpa.alignedDown(PageSize.size4K.bytes)
        let area = a.range
        if a.isLinear {
            // Mapped completely when created: a fault there is spurious or a permission one.
            return resolveOne(page, access: access, flags: flags, pageTable.populate(page, flags: flags, frame: { nil }))
        }
        // Whole pages only: a window that is not a 4 KiB multiple is rounded down.
        let window = max(PageSize.size4K.bytes, faultAround & ~(PageSize.size4K.bytes - 1))
        if window == PageSize.size4K.bytes {
            return resolveOne(page, access: access, flags: flags, populate(page, flags: flags, area: area, invalidate: true))
        }
        let offset = (page - area.start) / window * window
        let wStart = area.start + offset
        let wEnd = min(area.end, wStart + window)
        var mapped: [(GuestPhysAddr, HostPhysAddr)] = []
        var p = wStart
        while p < wEnd {
            switch populate(p, flags: flags, area: area, invalidate: true) {
            case let .mapped(f): mapped.append((p, f))
            case .present: break
            case .noMemory:
                rollBack(mapped)
                counters.faultsOutOfMemory &+= 1
                return .outOfMemory
            }
            p = p + PageSize.size4K.bytes
        }
        if mapped.isEmpty { return spurious(pageTable.query(gpa)?.flags ?? flags, access: access) }
        counters.populatedFrames &+= mapped.count
        counters.faultsMapped &+= 1
        counters.pagesMappedByFaults &+= mapped.count
        return .mapped(GuestPhysRange(start: wStart, end: wEnd), pages: mapped.count)
    }

    /// Same, from a decoded hardware fault record. A record whose kind is `.unrecoverable`
    /// (external abort, alignment, reserved bit) is refused with `.unrecoverable` and
    /// populates nothing; the other kinds, `.unknown` included, are resolved from the
    /// space's own areas and tables, which know better than the record whether a page is
    /// missing.
    public func handlePageFault(_ fault: NestedPageFault, faultAround: UInt64 = PageSize.size4K.bytes)
        -> FaultResolution
    {
        if fault.kind == .unrecoverable {
            counters.faultsUnrecoverable &+= 1
            return .unrecoverable
        }
        return handlePageFault(fault.gpa, access: fault.access, faultAround: faultAround)
    }

    /// Calls `body` with the guest start and size of every mapped leaf overlapping `range`
    /// (populated pages of alloc areas, the blocks of linear ones), in address order. The
    /// cost follows what is mapped: a lazy 64 GiB area with 10 pages populated is 10 calls.
    public func forEachMapping(in range: GuestPhysRange, _ body: (GuestPhysAddr, PageSize) -> Void) {
        pageTable.forEachLeaf(in: range.start, size: range.size, body)
    }

    /// Whether the 4 KiB page at `gpa` has a translation now.
    public func isPopulated(_ gpa: GuestPhysAddr) -> Bool { translate(gpa) != nil }

    // MARK: Internals

    /// The outcome of populating one 4 KiB page.
    @inline(__always)
    private func resolveOne(_ page: GuestPhysAddr, access: AccessKind, flags: MappingFlags,
                            _ result: PageTable64<Format, HAL>.PopulateResult) -> FaultResolution {
        switch result {
        case .mapped:
            counters.populatedFrames &+= 1
            counters.faultsMapped &+= 1
            counters.pagesMappedByFaults &+= 1
            return .mapped(GuestPhysRange(start: page, end: page + PageSize.size4K.bytes), pages: 1)
        case let .present(e):
            return spurious(format.leafFlags(e), access: access)
        case .noMemory:
            counters.faultsOutOfMemory &+= 1
            return .outOfMemory
        }
    }

    /// A fault on a page that is mapped already: refused if the leaf does not allow the
    /// access (a permission fault), else spurious (another vCPU got there first).
    private func spurious(_ leafFlags: MappingFlags, access: AccessKind) -> FaultResolution {
        if !leafFlags.contains(access.requiredFlags) {
            counters.faultsDenied &+= 1
            return .accessDenied(allowed: leafFlags)
        }
        counters.faultsSpurious &+= 1
        return .alreadyMapped
    }

    /// Maps the guest page `page` (inside the alloc area `area`) to a fresh zeroed frame
    /// unless something translates it already: `PageTable64.populate` with the frame
    /// allocation written out, so that the whole fault path is one inlined function.
    /// `invalidate: false` leaves the invalidation a format may need to the caller.
    @inline(__always)
    private func populate(_ page: GuestPhysAddr, flags: MappingFlags, area: GuestPhysRange, invalidate: Bool)
        -> PageTable64<Format, HAL>.PopulateResult
    {
        switch pageTable.leafSlot(creating: page.raw) {
        case let .present(e):
            return .present(e)
        case .noMemory:
            return .noMemory
        case let .empty(slot, undo):
            guard let f = hal.allocFrame(for: page, in: area) else {
                if let undo { pageTable.releaseChain(undo) }
                return .noMemory
            }
            hal.zeroFrame(f)
            if invalidate {
                pageTable.fill(slot, page, with: pageTable.leaf4K(f, flags: flags))
            } else {
                slot.pointee = pageTable.leaf4K(f, flags: flags)
            }
            return .mapped(f)
        }
    }

    private func rollBack(_ mapped: [(GuestPhysAddr, HostPhysAddr)]) {
        for (p, _) in mapped {
            // 4 KiB leaves: unmapping never splits, so it cannot fail.
            _ = try? pageTable.unmapRegion(p, size: PageSize.size4K.bytes, onLeaf: { _, f, _ in hal.deallocFrame(f) })
        }
    }

    /// Clears the leaves in `r`, releasing the frames of alloc areas.
    private func removeLeaves(in r: GuestPhysRange) throws(AddrSpaceError) {
        var released = 0
        do {
            if !areas.contains(where: { $0.isLinear && $0.range.overlaps(r) }) {
                // Only alloc areas (the usual unmap): every leaf's frame goes back.
                let hal = self.hal  // a local: the loop need not reload it through self
                released = try pageTable.unmapRegion(r.start, size: r.size, onLeaf: { _, f, _ in hal.deallocFrame(f) })
            } else {
                // The area of the previous leaf, as plain values (leaves come in address
                // order); an empty range until the first lookup.
                var areaStart: UInt64 = 0, areaEnd: UInt64 = 0, releases = false
                try pageTable.unmapRegion(r.start, size: r.size, onLeaf: { gpa, f, _ in
                    if gpa.raw &- areaStart >= areaEnd &- areaStart {
                        let a = area(containing: gpa)
                        (areaStart, areaEnd, releases) = a.map { ($0.start.raw, $0.end.raw, !$0.isLinear) } ?? (0, 0, false)
                    }
                    if releases {
                        hal.deallocFrame(f)
                        released &+= 1
                    }
                })
            }
        } catch {
            throw mapError(error)
        }
        counters.populatedFrames -= released
    }

    private func checkRange(_ gpa: GuestPhysAddr, size: UInt64) throws(AddrSpaceError) -> GuestPhysRange {
        guard gpa.isPageAligned, size & 0xfff == 0 else { throw .notAligned(gpa, size: size) }
        guard size > 0, let r = GuestPhysRange(start: gpa, size: size) else { throw .emptyRange(gpa, size: size) }
        guard range.contains(r) else { throw .outOfSpace(r, space: range) }
        return r
    }

    private func checkFlags(_ flags: MappingFlags) throws(AddrSpaceError) {
        // Every format needs read or execute in a present leaf, and none allows write
        // without read (EPT: misconfiguration, SDM 29.3.3.1; RISC-V: reserved encoding).
        let hasAccess = !flags.intersection([.read, .execute]).isEmpty
        guard hasAccess, !(flags.contains(.write) && !flags.contains(.read)) else { throw .invalidFlags(flags) }
    }

    private func checkNew(_ gpa: GuestPhysAddr, size: UInt64, flags: MappingFlags) throws(AddrSpaceError)
        -> GuestPhysRange
    {
        let r = try checkRange(gpa, size: size)
        try checkFlags(flags)
        let i = insertionIndex(r.start)
        if i > 0, areas[i - 1].range.overlaps(r) { throw .overlaps(r, existing: areas[i - 1].range) }
        if i < areas.count, areas[i].range.overlaps(r) { throw .overlaps(r, existing: areas[i].range) }
        return r
    }

    private func insertionIndex(_ start: GuestPhysAddr) -> Int {
        var lo = 0, hi = areas.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if areas[mid].start < start { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func insert(_ a: MemoryArea) { areas.insert(a, at: insertionIndex(a.start)) }

    private func mapError(_ e: PagingError) -> AddrSpaceError {
        switch e {
        case let .noMemory(a): .noMemory(a)
        case let .notAligned(a): .notAligned(a, size: 0)
        case let .notMapped(a): .notMapped(a)
        case let .alreadyMapped(a): .overlaps(GuestPhysRange(start: a, end: a + 0x1000), existing: GuestPhysRange(start: a, end: a + 0x1000))
        case let .outOfRange(a): .outOfSpace(GuestPhysRange(start: a, end: a), space: range)
        }
    }
}

/// What the fault path needs of an area, as plain values. The default is an empty range,
/// which contains nothing.
private struct HotArea {
    var start: UInt64 = 0
    var end: UInt64 = 0
    var flags: MappingFlags = []
    var isLinear = false

    init() {}
    init(_ a: MemoryArea) { (start, end, flags, isLinear) = (a.start.raw, a.end.raw, a.flags, a.isLinear) }

    @inline(__always) func contains(_ gpa: GuestPhysAddr) -> Bool { gpa.raw &- start < end &- start }
    var range: GuestPhysRange { GuestPhysRange(start: GuestPhysAddr(start), end: GuestPhysAddr(end)) }
}

extension MemoryArea {
    /// Whether the area maps host memory at a constant offset (`.linear`).
    @inlinable public var isLinear: Bool {
        if case .linear = backend { return true }
        return false
    }
}

extension AddrSpace: GuestMemoryAccessor {
    /// The host bytes of `gpa` up to the end of its contiguous host run.
    public func hostSpan(at gpa: GuestPhysAddr) throws(AddrSpaceError) -> UnsafeMutableRawBufferPointer {
        guard range.contains(gpa), area(containing: gpa) != nil else { throw .notMapped(gpa) }
        guard let (hpa, limit) = translateAndGetLimit(gpa) else { throw .notPopulated(gpa) }
        // Sound: the HAL maps every frame it handed out; `limit` stays inside frames the
        // area owns (one page for alloc areas, the linear run for linear areas).
        guard let p = hal.physToVirt(hpa).pointer else { throw .notMapped(gpa) }
        return UnsafeMutableRawBufferPointer(start: p, count: Int(limit))
    }
}
