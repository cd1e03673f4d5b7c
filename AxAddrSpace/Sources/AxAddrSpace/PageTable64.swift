/// Errors of the raw page-table walker. `AddrSpace` turns them into `AddrSpaceError`.
public enum PagingError: Error, Equatable, Sendable {
    /// The HAL returned no frame while working at this address.
    case noMemory(GuestPhysAddr)
    /// The address or size is not a multiple of the page size asked for.
    case notAligned(GuestPhysAddr)
    /// No leaf translates the address.
    case notMapped(GuestPhysAddr)
    /// A leaf already translates the address.
    case alreadyMapped(GuestPhysAddr)
    /// The address lies beyond what the format's walk can translate.
    case outOfRange(GuestPhysAddr)
}

/// A present leaf: where a guest page lives and with which permissions.
public struct LeafMapping: Equatable, Sendable {
    /// Host-physical address of the queried byte (leaf base + offset).
    public var hpa: HostPhysAddr
    /// The permissions and memory kind the leaf encodes.
    public var flags: MappingFlags
    /// The leaf's size: a 4 KiB page or a 2 MiB / 1 GiB block.
    public var size: PageSize
    /// Guest address where the leaf starts.
    public var base: GuestPhysAddr
}

/// A generic 64-bit, 4 KiB-granule, 512-entries-per-table nested page table (the walker of
/// the Rust `page_table_multiarch` crate, for any `NestedPagingFormat`).
///
/// Region operations recurse over the tree once instead of walking from the root for each
/// page, choose 2 MiB / 1 GiB leaves where alignment allows, split huge leaves that are
/// partly changed (break-before-make), free every table that becomes empty, and either
/// succeed or leave the tree as it was. The tree is not thread-safe: the owner serializes.
public final class PageTable64<Format: NestedPagingFormat, HAL: NestedMemoryHAL> {
    /// The hardware format of the entries.
    public let format: Format
    /// Where table frames come from.
    public let hal: HAL
    /// Physical address of the root table (what EPTP / nCR3 / VTTBR / hgatp point to).
    public let root: HostPhysAddr
    /// Frames used by tables, the root's included.
    // Unchecked: the table is single-threaded by contract and no access to it overlaps
    // another, so the runtime exclusivity check on this hot counter only costs time.
    @exclusivity(unchecked) public private(set) var tableFrames: Int

    @usableFromInline let rootTable: UnsafeMutablePointer<UInt64>
    @usableFromInline let lastLevel: Int
    /// The first guest address the walk cannot translate.
    @usableFromInline let limit: UInt64
    /// The format's present mask, kept here so the walks read it once into a register (the
    /// table masks are constants of every format).
    @usableFromInline let presentMask: UInt64
    /// The last 4 KiB leaf built without its address, and for which flags: faults in one
    /// area ask for the same flags again and again (`leaf4K`).
    @exclusivity(unchecked) @usableFromInline var templateFlags: MappingFlags = []
    @exclusivity(unchecked) @usableFromInline var template4K: UInt64
    /// Paging-structure caches, as MMUs keep them: the last-level table the last
    /// `leafSlot` walk ended in with the 2 MiB-aligned guest address it maps, and the table
    /// above it (entries of 2 MiB) with its 1 GiB-aligned address (`.max`: none). Faults
    /// near the previous one skip the upper levels. Both are dropped whenever a table frame
    /// is freed, the only way a cached table can stop being part of the tree.
    @exclusivity(unchecked) @usableFromInline var cachedLeafTable: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) @usableFromInline var cachedLeafBase: UInt64 = .max
    @exclusivity(unchecked) @usableFromInline var cachedDirTable: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) @usableFromInline var cachedDirBase: UInt64 = .max
    private var rootFrames: Int { format.rootEntries / 512 }

    /// An empty table: a zeroed root from the HAL (contiguous frames where the format's root is larger than 4 KiB). Throws `PagingError.noMemory` when the HAL has none.
    public init(format: Format, hal: HAL) throws(PagingError) {
        self.format = format
        self.hal = hal
        let frames = format.rootEntries / 512
        let root: HostPhysAddr? = frames == 1
            ? hal.allocFrame() : hal.allocContiguousFrames(count: frames, alignment: UInt64(frames) * 4096)
        guard let root else { throw .noMemory(GuestPhysAddr(0)) }
        self.root = root
        self.rootTable = Self.pointer(hal, root)
        self.cachedLeafTable = rootTable
        self.cachedDirTable = rootTable
        rootTable.initialize(repeating: 0, count: 512 * frames)
        self.lastLevel = format.levels - 1
        self.limit = format.guestAddressLimit
        self.presentMask = format.presentMask
        self.template4K = format.leafEntry(HostPhysAddr(0), flags: [], size: .size4K)
        self.tableFrames = frames
    }

    deinit {
        freeTables(rootTable, level: 0)
        hal.deallocContiguousFrames(root, count: rootFrames)
    }

    // MARK: Geometry

    /// Table `pa` as entries. Sound: every table frame came from the HAL, which maps all of
    /// its frames for the hypervisor; the HAL contract makes `physToVirt` non-null.
    @inline(__always) @inlinable static func pointer(_ hal: HAL, _ pa: HostPhysAddr) -> UnsafeMutablePointer<UInt64> {
        UnsafeMutablePointer<UInt64>(bitPattern: UInt(hal.physToVirt(pa).raw)).unsafelyUnwrapped
    }
    @inline(__always) @inlinable func table(_ pa: HostPhysAddr) -> UnsafeMutablePointer<UInt64> { Self.pointer(hal, pa) }
    /// Shift and index mask of the root level, from the format: constants where the format's
    /// geometry is (EPT, NPT), so that the walk loops have a known trip count and unroll.
    @inline(__always) @inlinable var rootShift: UInt64 { UInt64(truncatingIfNeeded: 12 &+ 9 &* (format.levels &- 1)) }
    @inline(__always) @inlinable var rootMask: UInt64 { UInt64(truncatingIfNeeded: format.rootEntries &- 1) }
    @inline(__always) @inlinable func shift(_ level: Int) -> UInt64 { rootShift &- 9 &* UInt64(truncatingIfNeeded: level) }
    @inline(__always) @inlinable func index(_ gpa: UInt64, _ level: Int) -> Int {
        Int(truncatingIfNeeded: (gpa &>> shift(level)) & (level == 0 ? rootMask : 511))
    }
    @inline(__always) @inlinable func pageSize(_ level: Int) -> PageSize? { PageSize(rawValue: 1 << shift(level)) }
    /// The first guest-physical address the format cannot translate.
    public var addressLimit: UInt64 { format.guestAddressLimit }

    // MARK: Queries

    /// The leaf entry translating `gpa`, its level and the shift of its page size, or nil.
    @inline(__always) @inlinable func leaf(_ gpa: UInt64) -> (entry: UInt64, level: Int, shift: UInt64)? {
        guard gpa < limit, let l = leafInRange(gpa) else { return nil }
        return (l.entry, Int(truncatingIfNeeded: (rootShift &- l.shift) / 9), l.shift)
    }

    /// The leaf entry translating `gpa` (below `limit`) and the shift of its page size.
    /// The hot loop of every query: the masks in registers, the last level found by its
    /// shift (12), wrapping arithmetic and masking shifts only.
    @inline(__always) @inlinable func leafInRange(_ gpa: UInt64) -> (entry: UInt64, shift: UInt64)? {
        let present = presentMask, tMask = format.tableMask, tBits = format.tableBits
        var sh = rootShift
        var e = rootTable[Int(truncatingIfNeeded: (gpa &>> sh) & rootMask)]
        while true {
            if e & present == 0 { return nil }
            if sh == 12 || e & tMask != tBits { return (e, sh) }
            sh &-= 9
            e = table(format.address(e))[Int(truncatingIfNeeded: (gpa &>> sh) & 511)]
        }
    }

    /// Host-physical address of `gpa` (offset included), or nil if not mapped.
    @inlinable public func translate(_ gpa: GuestPhysAddr) -> HostPhysAddr? {
        guard gpa.raw < limit else { return nil }
        return translateInRange(gpa)
    }

    /// `translate` for a `gpa` the caller knows to be below `addressLimit`.
    @inline(__always) @inlinable func translateInRange(_ gpa: GuestPhysAddr) -> HostPhysAddr? {
        guard let l = leafInRange(gpa.raw) else { return nil }
        let mask = (UInt64(1) &<< l.shift) &- 1
        return HostPhysAddr(format.address(l.entry).raw & ~mask | gpa.raw & mask)
    }

    /// The leaf translating `gpa`, or nil if not mapped.
    public func query(_ gpa: GuestPhysAddr) -> LeafMapping? {
        guard let l = leaf(gpa.raw), let size = pageSize(l.level) else { return nil }
        let e = l.entry
        let mask = size.bytes - 1
        return LeafMapping(hpa: HostPhysAddr(format.address(e).raw & ~mask | gpa.raw & mask),
                           flags: format.leafFlags(e), size: size, base: gpa.alignedDown(size.bytes))
    }

    /// Calls `body` with the guest start and size of every present leaf that overlaps
    /// `[start, start+size)`, in address order; empty tables are skipped whole, so the cost
    /// follows what is mapped, not the size of the range.
    public func forEachLeaf(in start: GuestPhysAddr, size: UInt64, _ body: (GuestPhysAddr, PageSize) -> Void) {
        let lo = start.raw, hi = min(start.raw &+ size, limit)
        guard lo < hi else { return }
        visitLeaves(rootTable, level: 0, base: 0, lo: lo, hi: hi, body)
    }
    private func visitLeaves(_ t: UnsafeMutablePointer<UInt64>, level: Int, base: UInt64, lo: UInt64, hi: UInt64,
                             _ body: (GuestPhysAddr, PageSize) -> Void) {
        let sh = shift(level)
        let span = UInt64(1) << sh
        for i in index(lo, level)...index(hi - 1, level) {
            let e = t[i]
            guard format.isPresent(e) else { continue }
            let slot = base + UInt64(i) << sh
            if level < lastLevel && format.isTable(e) {
                visitLeaves(table(format.address(e)), level: level + 1, base: slot,
                            lo: max(lo, slot), hi: min(hi, slot + span), body)
            } else {
                body(GuestPhysAddr(slot), pageSize(level) ?? .size4K)
            }
        }
    }

    /// Raw entries along the walk of `gpa`, root first (for tests and debugging).
    public func walkEntries(_ gpa: GuestPhysAddr) -> [UInt64] {
        var out: [UInt64] = []
        var t = rootTable
        for level in 0...lastLevel {
            let e = t[index(gpa.raw, level)]
            out.append(e)
            if !format.isPresent(e) || level == lastLevel || !format.isTable(e) { break }
            t = table(format.address(e))
        }
        return out
    }

    // MARK: Single page (the fault path)

    /// Result of `populate`.
    public enum PopulateResult: Equatable {
        /// The page is now mapped to this frame.
        case mapped(HostPhysAddr)
        /// A leaf already translates the page (raw entry given).
        case present(UInt64)
        /// `frame()` returned nil; nothing changed.
        case noMemory
    }

    /// Maps the 4 KiB page at `gpa` to a frame from `frame()` if nothing translates it yet,
    /// in one walk. Tables created on the way are freed again if `frame()` fails.
    @inlinable public func populate(_ gpa: GuestPhysAddr, flags: MappingFlags,
                                    frame: () -> HostPhysAddr?) -> PopulateResult {
        guard gpa.raw < limit else { return .noMemory }
        switch leafSlot(creating: gpa.raw) {
        case let .present(e):
            return .present(e)
        case .noMemory:
            return .noMemory
        case let .empty(slot, undo):
            guard let pa = frame() else {
                if let undo { releaseChain(undo) }
                return .noMemory
            }
            fill(slot, gpa, with: leaf4K(pa, flags: flags))
            return .mapped(pa)
        }
    }

    /// Where a new 4 KiB leaf goes (`leafSlot(creating:)`).
    @usableFromInline enum LeafSlot {
        /// The empty last-level entry. `undo` names the tables the walk created, to be
        /// released (`releaseChain`) if the caller ends up not filling the slot.
        case empty(UnsafeMutablePointer<UInt64>, undo: TableChain?)
        /// A leaf translates the address already (its raw entry).
        case present(UInt64)
        case noMemory
    }

    /// The first entry a walk filled with a new table: `parent[index]`, in the level whose
    /// pages are 2^`shift` bytes.
    @usableFromInline struct TableChain {
        @usableFromInline let parent: UnsafeMutablePointer<UInt64>
        @usableFromInline let index: Int
        @usableFromInline let shift: UInt64
        @usableFromInline init(parent: UnsafeMutablePointer<UInt64>, index: Int, shift: UInt64) {
            self.parent = parent
            self.index = index
            self.shift = shift
        }
    }

    /// Walks to the last-level entry of `v` (below `limit`), creating missing tables.
    /// The walk through existing tables only loads, so it stays in registers; creating
    /// tables is the rare, out-of-line part.
    @inlinable @inline(__always)
    func leafSlot(creating v: UInt64) -> LeafSlot {
        let present = presentMask, tMask = format.tableMask, tBits = format.tableBits
        if v & ~0x1f_ffff == cachedLeafBase {
            let slot = cachedLeafTable + Int(truncatingIfNeeded: (v &>> 12) & 511)
            return slot.pointee & present != 0 ? .present(slot.pointee) : .empty(slot, undo: nil)
        }
        if v & ~0x3fff_ffff == cachedDirBase {
            let e = cachedDirTable[Int(truncatingIfNeeded: (v &>> 21) & 511)]
            if e & present != 0 {
                if e & tMask != tBits { return .present(e) }
                let t = table(format.address(e))
                cachedLeafTable = t
                cachedLeafBase = v & ~0x1f_ffff
                let slot = t + Int(truncatingIfNeeded: (v &>> 12) & 511)
                return slot.pointee & present != 0 ? .present(slot.pointee) : .empty(slot, undo: nil)
            }
            // No last-level table there yet: the full walk below creates it.
        }
        var t = rootTable
        var sh = rootShift
        var i = Int(truncatingIfNeeded: (v &>> sh) & rootMask)
        var dir = t
        while sh != 12 {
            if sh == 21 { dir = t }  // constant-folded where the walk unrolls
            let e = t[i]
            if e & present == 0 { return createTables(t, i, shift: sh, v) }
            if e & tMask != tBits { return .present(e) }
            t = table(format.address(e))
            sh &-= 9
            i = Int(truncatingIfNeeded: (v &>> sh) & 511)
        }
        remember(v, dir: dir, leaf: t)
        let e = t[i]
        return e & present != 0 ? .present(e) : .empty(t + i, undo: nil)
    }

    /// Fills both paging-structure caches after a walk of `v`.
    @inlinable @inline(__always)
    func remember(_ v: UInt64, dir: UnsafeMutablePointer<UInt64>, leaf: UnsafeMutablePointer<UInt64>) {
        cachedDirTable = dir
        cachedDirBase = v & ~0x3fff_ffff
        cachedLeafTable = leaf
        cachedLeafBase = v & ~0x1f_ffff
    }

    /// The rest of `leafSlot` from the empty entry `t[i]` down: a new table per level.
    @usableFromInline @inline(never)
    func createTables(_ t: UnsafeMutablePointer<UInt64>, _ i: Int, shift: UInt64, _ v: UInt64) -> LeafSlot {
        let chain = TableChain(parent: t, index: i, shift: shift)
        var t = t, i = i, sh = shift
        var dir = t
        while sh != 12 {
            if sh == 21 { dir = t }
            guard let pa = allocTable() else {
                releaseChain(chain)  // stops at once if nothing was created yet
                return .noMemory
            }
            t[i] = format.tableEntry(pa)
            t = table(pa)
            sh &-= 9
            i = Int(truncatingIfNeeded: (v &>> sh) & 511)
        }
        remember(v, dir: dir, leaf: t)  // `shift` >= 21, so the loop passed the 2 MiB level
        return .empty(t + i, undo: chain)
    }

    /// `format.leafEntry(pa, flags: flags, size: .size4K)`, from the cached template.
    @inlinable @inline(__always)
    func leaf4K(_ pa: HostPhysAddr, flags: MappingFlags) -> UInt64 {
        if flags != templateFlags {
            templateFlags = flags
            template4K = format.leafEntry(HostPhysAddr(0), flags: flags, size: .size4K)
        }
        return template4K | format.encodeAddress(pa)
    }

    /// Writes the new leaf `entry` for `gpa` into the empty `slot` from `leafSlot`.
    @inlinable @inline(__always)
    func fill(_ slot: UnsafeMutablePointer<UInt64>, _ gpa: GuestPhysAddr, with entry: UInt64) {
        slot.pointee = entry
        if format.cachesInvalidEntries { hal.invalidateTLB(format.invalidation(for: gpa, root: root)) }
    }

    /// Frees a chain of freshly created (otherwise empty) tables starting at `chain`.
    ///
    /// Each table's only present entry (the next link) is read *before* the table's frame
    /// goes back to the HAL: the HAL contract says nothing about a freed frame's contents
    /// (it may be poisoned or handed out again at once), so nothing is read from or written
    /// to a table after `freeTableFrame`.
    @usableFromInline func releaseChain(_ chain: TableChain) {
        var entry = chain.parent[chain.index]
        var lvl = Int(truncatingIfNeeded: (rootShift &- chain.shift) / 9)
        guard format.isPresent(entry), format.isTable(entry) else { return }
        chain.parent[chain.index] = 0
        while lvl < lastLevel, format.isPresent(entry), format.isTable(entry) {
            let child = format.address(entry)
            let childTable = table(child)
            // The chain continues at the only present entry of the child, if any; a
            // last-level table of the chain holds no leaf.
            var next: UInt64 = 0
            if lvl + 1 < lastLevel {
                for j in 0..<512 where childTable[j] != 0 { next = childTable[j]; break }
            }
            freeTableFrame(child)
            entry = next
            lvl += 1
        }
    }

    /// A zeroed table frame. The walker zeroes tables itself, whatever the HAL's policy for
    /// guest frames (`zeroFrame`): an empty table must be all zeros for the walk to be right.
    @usableFromInline func allocTable() -> HostPhysAddr? {
        guard let pa = hal.allocFrame() else { return nil }
        table(pa).initialize(repeating: 0, count: 512)
        tableFrames += 1
        return pa
    }
    @usableFromInline func freeTableFrame(_ pa: HostPhysAddr) {
        cachedLeafBase = .max
        cachedDirBase = .max
        hal.deallocFrame(pa)
        tableFrames -= 1
    }

    // MARK: Regions

    /// Maps `[start, start+size)`. `hpa(gpa)` gives the frame for each leaf start (nil: out
    /// of memory); with `allowHuge`, 2 MiB and 1 GiB leaves are used where the guest range and
    /// `hpa` are aligned. On error nothing stays mapped and no table stays allocated; frames
    /// handed out by `hpa` for leaves that were mapped are passed to `unwind` to be freed.
    public func mapRegion(_ start: GuestPhysAddr, size: UInt64, flags: MappingFlags, allowHuge: Bool,
                          hpa: (GuestPhysAddr) -> HostPhysAddr?,
                          unwind: (GuestPhysAddr, HostPhysAddr, PageSize) -> Void) throws(PagingError) {
        guard start.isPageAligned, size & 0xfff == 0 else { throw .notAligned(start) }
        let end = start.raw &+ size
        guard end >= start.raw, end <= format.guestAddressLimit else { throw .outOfRange(start) }
        if size == 0 { return }
        var flush = InvalidationBatch()
        do {
            try mapRange(rootTable, level: 0, base: 0, lo: start.raw, hi: end, flags: flags,
                         allowHuge: allowHuge, hpa: hpa, flush: &flush)
        } catch {
            let failed: GuestPhysAddr
            switch error {
            case let .noMemory(a), let .alreadyMapped(a), let .notAligned(a), let .notMapped(a),
                 let .outOfRange(a):
                failed = a
            }
            var none = InvalidationBatch()
            var noSplits = SplitReserve()  // this call's leaves lie inside the range
            // Everything below `failed` was mapped by this call; above it only empty tables.
            clearRange(rootTable, level: 0, base: 0, lo: start.raw, hi: failed.raw, leaves: true,
                       onLeaf: unwind, reserve: &noSplits, flush: &none)
            clearRange(rootTable, level: 0, base: 0, lo: failed.raw, hi: end, leaves: false,
                       onLeaf: unwind, reserve: &noSplits, flush: &none)
            throw error
        }
        if format.cachesInvalidEntries { flush.emit(self) }
    }

    private func mapRange(_ t: UnsafeMutablePointer<UInt64>, level: Int, base: UInt64, lo: UInt64, hi: UInt64,
                          flags: MappingFlags, allowHuge: Bool, hpa: (GuestPhysAddr) -> HostPhysAddr?,
                          flush: inout InvalidationBatch) throws(PagingError) {
        let sh = shift(level)
        let span = UInt64(1) << sh
        for i in index(lo, level)...index(hi - 1, level) {
            let slot = base + UInt64(i) << sh
            let covLo = max(lo, slot), covHi = min(hi, slot + span)
            let e = t[i]
            if level == lastLevel {
                if format.isPresent(e) { throw .alreadyMapped(GuestPhysAddr(slot)) }
                guard let pa = hpa(GuestPhysAddr(slot)) else { throw .noMemory(GuestPhysAddr(slot)) }
                t[i] = leaf4K(pa, flags: flags)
                flush.add(GuestPhysAddr(slot))
                continue
            }
            if allowHuge, !format.isPresent(e), covLo == slot, covHi == slot + span,
               let size = pageSize(level), format.allowsHugeLeaf(size),
               let pa = hpa(GuestPhysAddr(slot)), pa.isAligned(span) {
                t[i] = format.leafEntry(pa, flags: flags, size: size)
                flush.add(GuestPhysAddr(slot))
                continue
            }
            let child: HostPhysAddr
            if !format.isPresent(e) {
                guard let pa = allocTable() else { throw .noMemory(GuestPhysAddr(covLo)) }
                t[i] = format.tableEntry(pa)
                child = pa
            } else if format.isTable(e) {
                child = format.address(e)
            } else {
                throw .alreadyMapped(GuestPhysAddr(covLo))
            }
            try mapRange(table(child), level: level + 1, base: slot, lo: covLo, hi: covHi, flags: flags,
                         allowHuge: allowHuge, hpa: hpa, flush: &flush)
        }
    }

    /// Unmaps every present leaf in `[start, start+size)` (holes are fine) and frees tables
    /// that become empty. `onLeaf` gets each removed leaf (its guest start, frame, size).
    /// Huge leaves that stick out of the range are split first; the frames for that are
    /// reserved up front, so the only failure (`noMemory`) happens before any change.
    /// Returns the number of leaves removed.
    @discardableResult
    public func unmapRegion(_ start: GuestPhysAddr, size: UInt64,
                            onLeaf: (GuestPhysAddr, HostPhysAddr, PageSize) -> Void) throws(PagingError) -> Int {
        let (lo, hi) = try checkedRange(start, size)
        if lo == hi { return 0 }
        var reserve = try reserveSplits(lo, hi)
        var flush = InvalidationBatch()
        clearRange(rootTable, level: 0, base: 0, lo: lo, hi: hi, leaves: true, onLeaf: onLeaf,
                   reserve: &reserve, flush: &flush)
        reserve.release(self)
        flush.emit(self)
        return flush.leavesRemoved
    }

    /// Rewrites the flags of every present leaf in the range (holes are skipped), splitting
    /// huge leaves that stick out. Fails only with `noMemory`, before any change.
    public func protectRegion(_ start: GuestPhysAddr, size: UInt64, flags: MappingFlags) throws(PagingError) {
        let (lo, hi) = try checkedRange(start, size)
        if lo == hi { return }
        var reserve = try reserveSplits(lo, hi)
        var flush = InvalidationBatch()
        protectRange(rootTable, level: 0, base: 0, lo: lo, hi: hi, flags: flags, reserve: &reserve, flush: &flush)
        reserve.release(self)
        flush.emit(self)
    }

    private func checkedRange(_ start: GuestPhysAddr, _ size: UInt64) throws(PagingError) -> (UInt64, UInt64) {
        guard start.isPageAligned, size & 0xfff == 0 else { throw .notAligned(start) }
        let end = start.raw &+ size
        guard end >= start.raw, end <= format.guestAddressLimit else { throw .outOfRange(start) }
        return (start.raw, end)
    }

    private func clearRange(_ t: UnsafeMutablePointer<UInt64>, level: Int, base: UInt64, lo: UInt64, hi: UInt64,
                            leaves: Bool, onLeaf: (GuestPhysAddr, HostPhysAddr, PageSize) -> Void,
                            reserve: inout SplitReserve, flush: inout InvalidationBatch) {
        if lo >= hi { return }
        if level == lastLevel {
            if leaves { clearLeaves(t, base: base, lo: lo, hi: hi, onLeaf: onLeaf, flush: &flush) }
            return
        }
        let sh = shift(level)
        let span = UInt64(1) << sh
        for i in index(lo, level)...index(hi - 1, level) {
            let e = t[i]
            guard format.isPresent(e) else { continue }
            let slot = base + UInt64(i) << sh
            let covLo = max(lo, slot), covHi = min(hi, slot + span)
            let whole = covLo == slot && covHi == slot + span
            var isTable = level < lastLevel && format.isTable(e)
            if !isTable {
                guard leaves else { continue }
                if whole {
                    t[i] = 0
                    flush.add(GuestPhysAddr(slot))
                    flush.leavesRemoved &+= 1
                    onLeaf(GuestPhysAddr(slot), format.address(e), pageSize(level) ?? .size4K)
                    continue
                }
                guard split(t, i, level: level, slot: slot, reserve: &reserve) else { continue }
                isTable = true
            }
            let child = format.address(t[i])
            let childTable = table(child)
            clearRange(childTable, level: level + 1, base: slot, lo: covLo, hi: covHi, leaves: leaves,
                       onLeaf: onLeaf, reserve: &reserve, flush: &flush)
            if (whole && leaves) || isEmpty(childTable) {
                t[i] = 0
                flush.add(GuestPhysAddr(slot))
                freeTableFrame(child)
            }
        }
    }

    /// `clearRange` in a last-level table: every 4 KiB leaf in `[lo, hi)` goes.
    @inline(__always)
    private func clearLeaves(_ t: UnsafeMutablePointer<UInt64>, base: UInt64, lo: UInt64, hi: UInt64,
                             onLeaf: (GuestPhysAddr, HostPhysAddr, PageSize) -> Void,
                             flush: inout InvalidationBatch) {
        let present = presentMask
        var i = Int(truncatingIfNeeded: (lo &>> 12) & 511)
        let last = Int(truncatingIfNeeded: ((hi &- 1) &>> 12) & 511)
        while i <= last {
            let e = t[i]
            if e & present != 0 {
                t[i] = 0
                let gpa = GuestPhysAddr(base | UInt64(truncatingIfNeeded: i) &<< 12)
                flush.add(gpa)
                flush.leavesRemoved &+= 1
                onLeaf(gpa, format.address(e), .size4K)
            }
            i &+= 1
        }
    }

    private func protectRange(_ t: UnsafeMutablePointer<UInt64>, level: Int, base: UInt64, lo: UInt64, hi: UInt64,
                              flags: MappingFlags, reserve: inout SplitReserve, flush: inout InvalidationBatch) {
        let sh = shift(level)
        let span = UInt64(1) << sh
        for i in index(lo, level)...index(hi - 1, level) {
            let e = t[i]
            guard format.isPresent(e) else { continue }
            let slot = base + UInt64(i) << sh
            let covLo = max(lo, slot), covHi = min(hi, slot + span)
            if level == lastLevel || !format.isTable(e) {
                if covLo == slot && covHi == slot + span {
                    t[i] = format.leafEntry(format.address(e), flags: flags, size: pageSize(level) ?? .size4K)
                    flush.add(GuestPhysAddr(slot))
                    continue
                }
                guard split(t, i, level: level, slot: slot, reserve: &reserve) else { continue }
            }
            protectRange(table(format.address(t[i])), level: level + 1, base: slot, lo: covLo, hi: covHi,
                         flags: flags, reserve: &reserve, flush: &flush)
        }
    }

    /// Replaces the huge leaf `t[i]` by a table of 512 next-size leaves with the same
    /// translation, break-before-make: clear, invalidate, then install the table.
    private func split(_ t: UnsafeMutablePointer<UInt64>, _ i: Int, level: Int, slot: UInt64,
                       reserve: inout SplitReserve) -> Bool {
        guard let pa = reserve.take(), let small = pageSize(level + 1) else { return false }
        let e = t[i]
        let out = format.address(e)
        let flags = format.leafFlags(e)
        let child = table(pa)
        for j in 0..<512 {
            child[j] = format.leafEntry(out + UInt64(j) * small.bytes, flags: flags, size: small)
        }
        t[i] = 0
        hal.invalidateTLB(format.invalidation(for: GuestPhysAddr(slot), root: root))
        t[i] = format.tableEntry(pa)
        tableFrames += 1
        return true
    }

    @inlinable func isEmpty(_ t: UnsafeMutablePointer<UInt64>) -> Bool {
        for j in 0..<512 where t[j] != 0 { return false }
        return true
    }

    /// Frames needed to split the huge leaves that straddle `lo` or `hi`, allocated now.
    private func reserveSplits(_ lo: UInt64, _ hi: UInt64) throws(PagingError) -> SplitReserve {
        var keys: [(Int, UInt64)] = []
        for b in [lo, hi] {
            guard let level = leaf(b)?.level, level < lastLevel else { continue }
            for l in level..<lastLevel {
                let pieceBase = b & ~((UInt64(1) << shift(l)) - 1)
                if pieceBase == b { break }
                if !keys.contains(where: { $0.0 == l && $0.1 == pieceBase }) { keys.append((l, pieceBase)) }
            }
        }
        var reserve = SplitReserve()
        for _ in keys {
            guard let pa = hal.allocFrame() else {
                reserve.release(self)
                throw .noMemory(GuestPhysAddr(lo))
            }
            reserve.frames.append(pa)  // split() writes all 512 entries
        }
        return reserve
    }

    private func freeTables(_ t: UnsafeMutablePointer<UInt64>, level: Int) {
        guard level < lastLevel else { return }
        let n = level == 0 ? format.rootEntries : 512
        for i in 0..<n {
            let e = t[i]
            guard format.isPresent(e), format.isTable(e) else { continue }
            let child = format.address(e)
            freeTables(table(child), level: level + 1)
            t[i] = 0
            freeTableFrame(child)
        }
    }
}

/// Frames set aside for huge-page splits before a region operation starts.
struct SplitReserve {
    var frames: [HostPhysAddr] = []
    mutating func take() -> HostPhysAddr? { frames.popLast() }
    mutating func release<F, H>(_ pt: PageTable64<F, H>) {
        for f in frames { pt.hal.deallocFrame(f) }
        frames.removeAll()
    }
}

/// Collects the GPAs whose translations changed during one operation and emits the
/// invalidations at its end: one per page up to a small limit, one "all" beyond it (the
/// Rust walker's cursor does the same with 32).
@usableFromInline struct InvalidationBatch {
    static let limit = 16
    var pages: [GuestPhysAddr] = []
    var overflow = false
    /// Leaves removed by the operation (what `unmapRegion` returns).
    var leavesRemoved = 0
    @usableFromInline init() {}
    @usableFromInline mutating func add(_ gpa: GuestPhysAddr) {
        if overflow { return }
        if pages.count == Self.limit { overflow = true; pages.removeAll(); return }
        pages.append(gpa)
    }
    func emit<F, H>(_ pt: PageTable64<F, H>) {
        if overflow { pt.hal.invalidateTLB(pt.format.invalidation(for: nil, root: pt.root)); return }
        var last: TLBInvalidation? = nil
        for p in pages {
            let op = pt.format.invalidation(for: p, root: pt.root)
            if op != last { pt.hal.invalidateTLB(op) }   // EPT/NPT: one context flush suffices
            last = op
        }
    }
}
