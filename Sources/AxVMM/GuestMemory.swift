import AxAddrSpace
#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM
import Synchronization

/// One RAM area as KVM sees it: a memslot over one host window of the memfd.
public struct RAMRegion: Sendable, Equatable {
    public var range: GuestPhysRange
    /// Host virtual address of the window (the memslot's userspace_addr).
    public var window: UInt64
    public var slot: UInt32
    /// Offset of the window in the memfd (the HAL's span).
    public var spanOffset: UInt64
    public var lazy: Bool
    public var readOnly: Bool
    /// KVM records the pages the guest writes (for a diff snapshot).
    public var logDirty = false
    /// Under the pager's control (registered with userfaultfd): every writable area, lazy
    /// or populated, since a populated area can be reclaimed and its next touch must go
    /// through `handlePageFault` too. Read-only areas are never reclaimed.
    public var registered: Bool { !readOnly }
}

/// The guest's memory: `AddrSpace` is the single source of truth; every area is mirrored
/// into a KVM memslot; lazy areas are registered with userfaultfd.
///
/// Thread-safe: the vCPU thread (loader, hypercalls) and the fault thread share it.
public final class GuestMemory<Format: NestedPagingFormat>: @unchecked Sendable {  // state behind `lock`
    let lock = Lock()
    /// Orders fault resolution against reclaim. A fault thread holds it shared from
    /// `handlePageFault` until UFFDIO_CONTINUE has mapped the pages (several threads at
    /// once); a reclaim holds it exclusively. Without it a reclaim could punch a page
    /// between the library mapping it and CONTINUE (which then fails), or after the
    /// thread's fallocate (which would bring the page back behind the library's back).
    /// Lock order: `resolution`, then `lock`.
    let resolution = RWLock()
    let space: AddrSpace<Format, MemfdHAL>
    let hal: MemfdHAL
    let vm: VirtualMachine
    let userfault: Userfault
    private var regionList: [RAMRegion] = []
    private var nextSlot: UInt32 = 0
    /// Per dirty-logged area (by slot): the pages the VMM's devices wrote since the last
    /// `dirtyPages`, one bit per page; KVM's dirty log sees only the guest's writes. Under `lock`.
    private var vmmWritten: [UInt32: [UInt64]] = [:]
    /// Guest pages (by page number) that were populated when `returnToHost` gave them back
    /// and that no guest fault has mapped since: a fault that maps one again is a re-fault
    /// (`takeReturned`). Under `lock`; `anyReturned` lets the pager skip the lookup.
    private var returnedPages = Set<UInt64>()
    private let anyReturned = Atomic<Bool>(false)

    init(vm: VirtualMachine, format: Format, hostCapacity: UInt64, spaceSize: UInt64) throws(VMMError) {
        let host = try HostMemory(capacity: hostCapacity)
        hal = MemfdHAL(memory: host)
        do {
            space = try AddrSpace(base: GuestPhysAddr(0), size: spaceSize, format: format, hal: hal)
        } catch {
            throw .addrSpace(error)
        }
        self.vm = vm
        userfault = try Userfault()
    }

    deinit {
        for r in regionList { teardown(r) }
    }

    public var regions: [RAMRegion] { lock.withLock { regionList } }
    public var host: HostMemory { hal.memory }

    /// Adds RAM at `gpa`: an `AddrSpace` alloc area (lazy or populated), one window of the
    /// memfd, one memslot. Read-only areas get `KVM_MEM_READONLY`: guest writes exit as MMIO.
    /// On failure every step already taken is undone.
    @discardableResult
    public func addRAM(at gpa: GuestPhysAddr, size: UInt64, lazy: Bool, readOnly: Bool = false,
                       logDirty: Bool = false) throws(VMMError) -> RAMRegion {
        try lock.withLock { () throws(VMMError) -> RAMRegion in
            guard let range = GuestPhysRange(start: gpa, size: size) else {
                throw .addrSpace(.emptyRange(gpa, size: size))
            }
            let flags: MappingFlags = readOnly ? [.read, .execute] : .rwx
            let span = try hal.reserveSpan(for: range)
            do throws(AddrSpaceError) {
                // The library checks alignment, range and overlap; populating zeroes every
                // frame at its placement in the span.
                try space.mapAlloc(gpa, size: size, flags: flags, populate: !lazy)
            } catch {
                hal.releaseSpan(for: range)
                throw .addrSpace(error)
            }
            var undo: [() -> Void] = [{ [space, hal] in try? space.unmap(gpa, size: size); hal.releaseSpan(for: range) }]
            do throws(VMMError) {
                let prot = readOnly ? PROT_READ : PROT_READ | PROT_WRITE
                let p = mmap(nil, Int(size), prot, MAP_SHARED, hal.memory.fd.raw, off_t(span))
                guard let p, p != MAP_FAILED else { throw VMMError.host("mmap(window of \(range)): \(errnoString(errno))") }
                let window = UInt64(UInt(bitPattern: p))
                undo.append { munmap(p, Int(size)) }
                var region = RAMRegion(range: range, window: window, slot: nextSlot, spanOffset: span,
                                       lazy: lazy, readOnly: readOnly)
                region.logDirty = logDirty && !readOnly
                if !lazy && !readOnly {
                    // Populated: the library holds every frame; map them all into the
                    // window now (before registering, so no event is raised), so the
                    // guest's first touches cost no fault at all.
                    try prefault(p, size)
                }
                if region.registered {
                    try userfault.register(window, size)
                    undo.append { [userfault] in userfault.unregister(window, size) }
                }
                do throws(KVMError) {
                    try vm.setMemorySlot(MemorySlot(slot: region.slot, guestPhysAddr: gpa.raw, size: size,
                                                    userspaceAddr: window, readOnly: readOnly, logDirty: region.logDirty))
                } catch {
                    throw VMMError.kvm(error)
                }
                nextSlot += 1
                regionList.append(region)
                return region
            } catch {
                for u in undo.reversed() { u() }
                throw error
            }
        }
    }

    /// Removes the RAM area starting at `gpa`: memslot deleted, window unmapped, frames freed.
    public func removeRAM(at gpa: GuestPhysAddr) throws(VMMError) {
        try lock.withLock { () throws(VMMError) in
            guard let i = regionList.firstIndex(where: { $0.range.start == gpa }) else {
                throw .addrSpace(.notMapped(gpa))
            }
            let r = regionList.remove(at: i)
            do throws(KVMError) { try vm.deleteMemorySlot(r.slot) } catch { throw .kvm(error) }
            teardown(r)
        }
    }

    /// Maps every page of a fresh window writable (MADV_POPULATE_WRITE, Linux 5.14; else one
    /// store per page). The pages are holes of the memfd, so they come in as zero pages.
    /// In pieces of `prefaultChunk` bytes with a `Termination` check between them: a large
    /// guest takes seconds to populate, and a signal must end that too.
    private func prefault(_ p: UnsafeMutableRawPointer, _ size: UInt64) throws(VMMError) {
        var done: UInt64 = 0
        while done < size {
            try Termination.checkpoint("populate")
            let n = Int(min(Self.prefaultChunk, size - done))
            let q = p + Int(done)
            if madvise(q, n, HostMemory.populateWrite) != 0 {
                guard errno == EINVAL else { throw .host("madvise(MADV_POPULATE_WRITE, \(n) bytes): \(errnoString(errno))") }
                var off = 0
                while off < n { (q + off).storeBytes(of: 0, as: UInt8.self); off += 4096 }
            }
            done += UInt64(n)
        }
        try Termination.check()
    }
    static var prefaultChunk: UInt64 { 64 << 20 }

    /// After a fatal pager failure: every registered window becomes inaccessible, then
    /// unregistered. Threads blocked on a fault wake up, retry, and fail with EFAULT (so
    /// KVM_RUN returns) instead of getting pages the library never handed out: no page is
    /// populated past a failure, and the library's view stays the host's.
    func fence() {
        lock.withLock {
            for r in regionList where r.registered {
                let p = UnsafeMutableRawPointer(bitPattern: UInt(r.window))
                _ = mprotect(p, Int(r.range.size), PROT_NONE)
                userfault.unregister(r.window, r.range.size)
            }
        }
    }

    private func teardown(_ r: RAMRegion) {
        if r.registered { userfault.unregister(r.window, r.range.size) }
        munmap(UnsafeMutableRawPointer(bitPattern: UInt(r.window)), Int(r.range.size))
        try? space.unmap(r.range.start, size: r.range.size)
        hal.releaseSpan(for: r.range)
    }

    /// The RAM area whose window holds host address `hva`.
    func region(containingHostAddress hva: UInt64) -> RAMRegion? {
        lock.withLock { regionList.first { hva >= $0.window && hva < $0.window + $0.range.size } }
    }

    /// Runs `body` with the address space under the lock.
    public func withSpace<R, E: Error>(_ body: (AddrSpace<Format, MemfdHAL>) throws(E) -> R) throws(E) -> R {
        try lock.withLock { () throws(E) -> R in try body(space) }
    }

    /// Writes `bytes` at `gpa` with the VMM's rights (read-only areas too), populating
    /// lazy pages first through `handlePageFault`, as a guest read would. Used by loaders.
    public func write(_ bytes: UnsafeRawBufferPointer, at gpa: GuestPhysAddr) throws(VMMError) {
        try withSpace { s throws(VMMError) in
            try Self.populate(s, gpa, count: bytes.count)
            do throws(AddrSpaceError) { try s.write(gpa, from: bytes) } catch { throw .addrSpace(error) }
            // The bytes went through the VMM's view of the memfd; drop that view's mappings
            // of guest pages so they count once in the RSS (the data stays in the file).
            var page = gpa.alignedDown(4096)
            while page < gpa + UInt64(bytes.count) {
                if let hpa = s.translate(page) { host.dropView(hpa.raw, 4096) }
                page = page + 4096
            }
        }
    }

    /// Maps the populated pages of `[gpa, gpa + size)` into the guest's lazy windows now
    /// (UFFDIO_CONTINUE, one call per area) instead of on the guest's first touch: for what
    /// the loader wrote and the guest will run at once (a kernel), so that each of its pages
    /// costs no minor fault. Populated windows were mapped when they were made.
    public func mapForGuest(_ gpa: GuestPhysAddr, size: UInt64) throws(VMMError) {
        let start = gpa.alignedDown(4096).raw, end = gpa.raw + size
        for r in regions where r.lazy && r.registered {
            let lo = max(start, r.range.start.raw), hi = min((end + 0xfff) & ~0xfff, r.range.end.raw)
            guard lo < hi else { continue }
            let at = r.window + (lo - r.range.start.raw)
            try userfault.resolve(at, hi - lo, faultAddress: at)
        }
    }

    public func write<T: BitwiseCopyable>(_ value: T, at gpa: GuestPhysAddr) throws(VMMError) {
        try write([value], at: gpa)
    }

    /// Writes the elements of `values` back to back at `gpa`.
    public func write<T: BitwiseCopyable>(_ values: [T], at gpa: GuestPhysAddr) throws(VMMError) {
        var result: Result<Void, VMMError> = .success(())
        values.withUnsafeBytes { b in result = Result { () throws(VMMError) in try write(b, at: gpa) } }
        try result.get()
    }

    /// Reads a value. A page not populated yet is populated first, as a guest read would
    /// (after a lazy restore: with the snapshot's contents).
    public func read<T: BitwiseCopyable>(_ gpa: GuestPhysAddr, as: T.Type = T.self) throws(VMMError) -> T {
        try withSpace { s throws(VMMError) -> T in
            try Self.populate(s, gpa, count: MemoryLayout<T>.size)
            do throws(AddrSpaceError) { return try s.readObject(gpa, as: T.self) } catch { throw .addrSpace(error) }
        }
    }

    /// Populates the pages of `[gpa, gpa + count)` through `handlePageFault`, as a guest read
    /// would (a page already there stays as it is). Called under the lock (`withSpace`).
    private static func populate(_ s: AddrSpace<Format, MemfdHAL>, _ gpa: GuestPhysAddr, count: Int) throws(VMMError) {
        var page = gpa.alignedDown(4096)
        while page < gpa + UInt64(count) {
            let r = s.handlePageFault(page, access: .read)
            guard r.isResolved else { throw .addrSpace(r == .notInArea ? .notMapped(page) : .noMemory(page)) }
            page = page + 4096
        }
    }

    /// Drops the populated frames of `[gpa, gpa+size)`: the page table entries go, the memfd
    /// pages are punched (which also unmaps them from the window and from KVM), and the next
    /// guest touch faults again.
    @discardableResult
    public func reclaim(_ gpa: GuestPhysAddr, size: UInt64) throws(VMMError) -> Int {
        try resolution.exclusive { () throws(VMMError) -> Int in
            try withSpace { s throws(VMMError) -> Int in
                if let range = GuestPhysRange(start: gpa, size: size) { hal.contents?.forget(range) }
                do throws(AddrSpaceError) {
                    return try hal.batchingPunches { () throws(AddrSpaceError) in try s.depopulate(gpa, size: size) }
                } catch { throw .addrSpace(error) }
            }
        }
    }

    /// Gives guest RAM back to the host (virtio-balloon's inflated and reported pages):
    /// [gpa, gpa + size) must lie in one writable RAM area; its populated frames are dropped
    /// from the address space and punched out of the memfd under the fault-resolution lock
    /// held exclusively, as `reclaim` does, so a racing fault is served before or faults
    /// again after. Returns the bytes that were populated; they are remembered, and a guest
    /// fault that maps one again counts as a re-fault.
    public func returnToHost(_ gpa: UInt64, size: UInt64) throws(DeviceMemoryError) -> UInt64 {
        guard size > 0 else { return 0 }
        let (end, overflow) = gpa.addingReportingOverflow(size)
        guard !overflow, regions.contains(where: { !$0.readOnly && $0.range.start.raw <= gpa && end <= $0.range.end.raw }) else {
            throw .outsideRAM(gpa: gpa, length: size)
        }
        let outcome: Result<[UInt64], VMMError> = resolution.exclusive {
            withSpace { s in
                var populated: [UInt64] = []
                var page = GuestPhysAddr(gpa).alignedDown(4096)
                while page.raw < end {
                    if s.translate(page) != nil { populated.append(page.raw >> 12) }
                    page = page + 4096
                }
                if let range = GuestPhysRange(start: GuestPhysAddr(gpa), size: size) { hal.contents?.forget(range) }
                do throws(AddrSpaceError) {
                    _ = try hal.batchingPunches { () throws(AddrSpaceError) in try s.depopulate(GuestPhysAddr(gpa), size: size) }
                } catch { return .failure(.addrSpace(error)) }
                return .success(populated)
            }
        }
        let pages: [UInt64]
        switch outcome {
        case let .success(p): pages = p
        case let .failure(e): throw .failed(gpa: gpa, reason: "\(e)")
        }
        if !pages.isEmpty {
            lock.withLock { for p in pages { returnedPages.insert(p) } }
            anyReturned.store(true, ordering: .releasing)
        }
        return UInt64(pages.count) * 4096
    }

    /// How many pages of `range` were given back by `returnToHost` and are now mapped again
    /// (a guest fault mapped `range`); they are forgotten.
    func takeReturned(_ range: GuestPhysRange) -> Int {
        guard anyReturned.load(ordering: .acquiring) else { return 0 }
        return lock.withLock {
            var n = 0
            var p = range.start.raw >> 12
            while p < (range.end.raw + 4095) >> 12 {
                if returnedPages.remove(p) != nil { n += 1 }
                p += 1
            }
            return n
        }
    }

    /// Pages of `region` where the library's view (populated or not) and the host's
    /// (memfd page resident or not, by mincore) disagree. Empty when they match.
    public func residencyMismatches(_ region: RAMRegion) -> [GuestPhysAddr] {
        let resident = host.residentPages(region.spanOffset, region.range.size)
        var populated = [Bool](repeating: false, count: resident.count)
        forEachPopulatedPage(region) { populated[$0] = true }
        var out: [GuestPhysAddr] = []
        for i in resident.indices where populated[i] != resident[i] {
            out.append(region.range.start + UInt64(i) * 4096)
        }
        return out
    }

    /// Bytes of `region` the library has populated.
    public func populatedBytes(_ region: RAMRegion) -> UInt64 {
        var n: UInt64 = 0
        forEachPopulatedPage(region) { _ in n += 4096 }
        return n
    }

    /// The pages of `region` the guest wrote since the last call (since it was added, the
    /// first time), one bit per page; nil if KVM does not record them for it.
    func dirtyPages(_ region: RAMRegion) throws(VMMError) -> [UInt64]? {
        guard region.logDirty else { return nil }
        var log: [UInt64]
        do { log = try vm.dirtyLog(slot: region.slot, pages: Int(region.range.size / 4096)) } catch { throw .kvm(error) }
        let written = lock.withLock { vmmWritten.removeValue(forKey: region.slot) }
        if let written { for i in log.indices where i < written.count { log[i] |= written[i] } }
        return log
    }

    /// Records that the VMM wrote [gpa, gpa + count) of `region` (a device's write), for a
    /// diff snapshot. Called under `lock`.
    func markWritten(_ region: RAMRegion, _ gpa: UInt64, _ count: Int) {
        guard region.logDirty, count > 0 else { return }
        let pages = Int(region.range.size / 4096)
        var bits = vmmWritten[region.slot] ?? [UInt64](repeating: 0, count: (pages + 63) / 64)
        var p = Int((gpa - region.range.start.raw) / 4096)
        let last = Int((gpa + UInt64(count) - 1 - region.range.start.raw) / 4096)
        while p <= last && p < pages {
            bits[p / 64] |= 1 << UInt64(p % 64)
            p += 1
        }
        vmmWritten[region.slot] = bits
    }

    /// Index (from the region's start) of each populated 4 KiB page of `region`.
    func forEachPopulatedPage(_ region: RAMRegion, _ body: (Int) -> Void) {
        withSpace { s in
            s.forEachMapping(in: region.range) { gpa, size in
                let first = max(gpa.raw, region.range.start.raw), last = min(gpa.raw + size.bytes, region.range.end.raw)
                var p = first
                while p < last {
                    body(Int((p - region.range.start.raw) / 4096))
                    p += 4096
                }
            }
        }
    }
}
