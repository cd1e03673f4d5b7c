import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// The host's "physical memory": one sparse memfd, mapped once into the VMM.
/// A host-physical address is an offset into the file; offset 0 is never handed out.
public final class HostMemory: @unchecked Sendable {  // fd and mapping immutable after init
    public let fd: OwnedFD
    public let capacity: UInt64
    /// The VMM's own view of the whole file (never registered with userfaultfd).
    public let base: UnsafeMutableRawPointer

    public init(capacity: UInt64) throws(VMMError) {
        let raw = ckvm_memfd_create("axvm-host-ram", 1 /* MFD_CLOEXEC */)
        guard raw >= 0 else { throw .host("memfd_create: \(errnoString(errno))") }
        fd = OwnedFD(raw)
        guard ftruncate(raw, off_t(capacity)) == 0 else { throw .host("ftruncate(memfd, \(capacity)): \(errnoString(errno))") }
        let p = mmap(nil, Int(capacity), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, raw, 0)
        guard let p, p != MAP_FAILED else { throw .host("mmap(memfd, \(capacity)): \(errnoString(errno))") }
        base = p
        self.capacity = capacity
    }
    deinit { munmap(base, Int(capacity)) }

    /// Makes the kernel hold the pages of `[offset, offset+length)` (fresh ones read as
    /// zero) without mapping them into the VMM: UFFDIO_CONTINUE then maps them into a
    /// guest window. Pages already there are left as they are.
    public func materialize(_ offset: UInt64, _ length: UInt64) throws(VMMError) {
        while ckvm_allocate(fd.raw, Int64(offset), Int64(length)) != 0 {
            if errno == EINTR { continue }
            throw .host("fallocate(memfd, 0x\(String(offset, radix: 16)), \(length)): \(errnoString(errno))")
        }
    }

    /// Drops the VMM view's mappings of `[offset, offset+length)` (the pages stay in the
    /// file, and in any guest window): after the loader wrote guest pages through this view,
    /// they count once in the process's RSS, not twice.
    public func dropView(_ offset: UInt64, _ length: UInt64) {
        _ = madvise(base + Int(offset), Int(length), MADV_DONTNEED)
    }

    /// MADV_POPULATE_READ and MADV_POPULATE_WRITE (Linux 5.14, include/uapi/asm-generic/mman-common.h).
    static let populateRead: Int32 = 22, populateWrite: Int32 = 23

    /// Maps `[offset, offset+length)` in the VMM's view in one call (readable, or writable),
    /// rather than a page fault per page when a device's transfer first touches it. Best
    /// effort: a kernel without MADV_POPULATE_* leaves the faults to the transfer.
    public func populateView(_ offset: UInt64, _ length: UInt64, write: Bool) {
        _ = madvise(base + Int(offset), Int(length), write ? Self.populateWrite : Self.populateRead)
    }

    /// Gives the pages back to the kernel; the range reads as zeros afterwards.
    public func punchHole(_ offset: UInt64, _ length: UInt64) {
        _ = ckvm_punch_hole(fd.raw, Int64(offset), Int64(length))
    }

    /// Which pages of `[offset, offset+length)` the kernel really holds (mincore on the
    /// VMM's view: page-cache residency of the memfd).
    public func residentPages(_ offset: UInt64, _ length: UInt64) -> [Bool] {
        let pages = Int((length + 4095) / 4096)
        var vec = [UInt8](repeating: 0, count: pages)
        let r = vec.withUnsafeMutableBufferPointer { mincore(base + Int(offset), Int(length), $0.baseAddress) }
        return r == 0 ? vec.map { $0 & 1 != 0 } : [Bool](repeating: false, count: pages)
    }
}

/// The frame allocator over `HostMemory` that `AddrSpace` uses (the HAL).
///
/// - Page-table frames come from a pool at the start of the file.
/// - Each RAM area gets a *span*: a contiguous run of the file reserved up front, and the
///   placement hint puts guest page `g` of the area at `span + (g − area start)`, so the
///   area is one `MAP_SHARED` mapping (one VMA) however its pages are touched.
/// - Freed frames are punched out of the file, so every frame handed out is a hole that
///   reads as zero: `zeroFrame` has nothing to do. Guest frames are never touched through
///   the VMM's view (that would map them a second time and count them twice in the RSS):
///   the pager materializes them with `fallocate` before UFFDIO_CONTINUE, a populated
///   window is prefaulted through the window itself, and the loader drops its view after
///   writing.
///
/// Not thread-safe; `GuestMemory` calls it under its lock.
public final class MemfdHAL: NestedMemoryHAL, @unchecked Sendable {  // used under GuestMemory's lock
    public let memory: HostMemory
    private let tablePoolEnd: UInt64
    private var nextTable: UInt64 = 0x1000
    private var freeTables: [UInt64] = []
    private var nextSpan: UInt64
    private var spans: [(range: GuestPhysRange, offset: UInt64)] = []
    public private(set) var framesInUse = 0
    /// Guest frames (placed in a span) the HAL hands out at most; nil: no cap. Past it the
    /// placement hint returns nil, so the fault is resolved as out of memory.
    public var guestFrameLimit: Int?
    private var guestFrames = 0
    /// A restored VM's snapshot: each guest frame handed out gets the snapshot's page, if it
    /// holds one (`SnapshotPages.fill`); nil: frames stay zero holes.
    var contents: SnapshotPages?
    /// Inside `batchingPunches`: the guest frames freed so far, punched together at its end.
    private var pendingPunches: [UInt64]?

    /// `tablePool` bytes at the start of the file are for page tables (and other frames
    /// without a placement).
    public init(memory: HostMemory, tablePool: UInt64 = 64 << 20) {
        self.memory = memory
        tablePoolEnd = tablePool
        nextSpan = tablePool
    }

    /// Reserves the file span backing `area`; returns its offset (2 MiB aligned so the
    /// kernel can use huge pages where it wants).
    public func reserveSpan(for area: GuestPhysRange) throws(VMMError) -> UInt64 {
        let start = (nextSpan + 0x1f_ffff) & ~0x1f_ffff
        guard start + area.size <= memory.capacity else {
            throw .badSize(what: "guest memory", value: area.size, reason: "exceeds the host memory file (\(memory.capacity) bytes)")
        }
        nextSpan = start + area.size
        spans.append((area, start))
        return start
    }

    /// Forgets a span (after its area is unmapped) and punches it out entirely.
    public func releaseSpan(for area: GuestPhysRange) {
        guard let i = spans.firstIndex(where: { $0.range == area }) else { return }
        memory.punchHole(spans[i].offset, area.size)
        spans.remove(at: i)
    }

    public func allocFrame() -> HostPhysAddr? {
        if let f = freeTables.popLast() { framesInUse += 1; return HostPhysAddr(f) }
        guard nextTable < tablePoolEnd else { return nil }
        defer { nextTable += 0x1000 }
        framesInUse += 1
        return HostPhysAddr(nextTable)
    }

    /// Contiguous table frames, `alignment` aligned, for a root larger than a frame (RISC-V's
    /// 16 KiB "x4" G-stage root): from the pool's unused end; the frames skipped to align
    /// go to the free list.
    public func allocContiguousFrames(count: Int, alignment: UInt64) -> HostPhysAddr? {
        guard count > 0 else { return nil }
        let align = max(alignment, 0x1000)
        guard align & (align - 1) == 0 else { return nil }
        let start = (nextTable + align - 1) & ~(align - 1)
        let size = UInt64(count) * 0x1000
        guard start <= tablePoolEnd, size <= tablePoolEnd - start else { return nil }
        var skipped = nextTable
        while skipped < start { freeTables.append(skipped); skipped += 0x1000 }
        nextTable = start + size
        framesInUse += count
        return HostPhysAddr(start)
    }

    public func allocFrame(for gpa: GuestPhysAddr, in area: GuestPhysRange) -> HostPhysAddr? {
        // Areas may have been split by protect/unmap; the span is found by containment.
        for s in spans where s.range.contains(gpa) {
            if let limit = guestFrameLimit, guestFrames >= limit { return nil }
            let frame = s.offset + (gpa - s.range.start)
            if let contents, !contents.fill(gpa, memfd: memory.fd.raw, at: frame) { return nil }
            framesInUse += 1
            guestFrames += 1
            return HostPhysAddr(frame)
        }
        return allocFrame()
    }

    public func deallocFrame(_ frame: HostPhysAddr) {
        framesInUse -= 1
        if frame.raw < tablePoolEnd {
            // A table frame may be handed out again at once: punched now.
            memory.punchHole(frame.raw, 0x1000)
            freeTables.append(frame.raw)
            return
        }
        guestFrames -= 1
        if pendingPunches != nil { pendingPunches?.append(frame.raw) } else { memory.punchHole(frame.raw, 0x1000) }
    }

    /// Runs `body` (a depopulation, under the address space's lock) with the guest frames it
    /// frees punched at the end in runs of adjacent frames: one fallocate per run instead of
    /// one per 4 KiB frame (free page reports give back megabytes at a time). A guest frame
    /// is placed by its address (`allocFrame(for:in:)`), so none is handed out again before
    /// the lock is dropped.
    func batchingPunches<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pendingPunches = []
        defer {
            let frames = (pendingPunches ?? []).sorted()
            pendingPunches = nil
            for run in consecutiveRuns(frames, step: 0x1000) {
                memory.punchHole(frames[run.lowerBound], UInt64(run.count) * 0x1000)
            }
        }
        return try body()
    }

    public func physToVirt(_ pa: HostPhysAddr) -> HostVirtAddr {
        HostVirtAddr(UInt64(UInt(bitPattern: memory.base)) + pa.raw)
    }
    public func virtToPhys(_ va: HostVirtAddr) -> HostPhysAddr {
        HostPhysAddr(va.raw - UInt64(UInt(bitPattern: memory.base)))
    }

    public func zeroFrame(_ frame: HostPhysAddr) {
        // Every frame handed out is a hole of the memfd (never used, or punched on free),
        // so it already reads as zero. Nothing to store (see the type's comment).
    }
}
