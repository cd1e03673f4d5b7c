// The benchmark HAL, shared by axbench and the ordo-one harness (Benchmarks/ordo links this
// file): the same kind of HAL as the Rust crate's benchmark — a bump allocator and a free
// list over one pre-touched arena, physToVirt = arena base + pa — with three ways of giving
// guest frames their zeros.
import AxAddrSpace
import CWalker
import Glibc

/// How ArenaHAL gives guest frames their zeros.
enum Zeroing: String, CaseIterable {
    /// Not at all (the Rust crate's HAL; its "HAL does not zero" column).
    case none
    /// `zeroFrame` stores 4 KiB of zeros (memset: temporal stores, read-for-ownership).
    case memset
    /// Guest frames come from a small pool zeroed ahead, 32 at a time, with non-temporal
    /// stores and one store fence per batch; `zeroFrame` has nothing left to do.
    case nonTemporalBatch = "nt-batch"
}

/// A stack of frame addresses with a fixed capacity: the free list of a HAL that, like the
/// Rust benchmark's, is single-threaded (Array's copy-on-write checks cost a runtime call
/// per push and pop).
struct FrameStack {
    let slots: UnsafeMutablePointer<UInt64>
    let capacity: Int
    var count = 0
    init(capacity: Int) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
    }
    var isEmpty: Bool { count == 0 }
    @inline(__always) mutating func push(_ f: UInt64) {
        precondition(count < capacity, "more frames freed than the arena has")
        slots[count] = f
        count += 1
    }
    @inline(__always) mutating func pop() -> UInt64? {
        guard count > 0 else { return nil }
        count -= 1
        return slots[count]
    }
}

// Unchecked Sendable: the benchmarks use one HAL from one thread, one workload at a time.
final class ArenaHAL: NestedMemoryHAL, @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let size: UInt64
    // Single-threaded like the Rust benchmark's HAL: no runtime exclusivity checks.
    /// Guest frames are bump-allocated from the bottom of the arena, table frames from the
    /// top (growing down), so the tables stay together as in the Rust benchmark, whose
    /// lazy map_alloc creates all 515 tables before the first fault.
    @exclusivity(unchecked) var next: UInt64 = 0
    @exclusivity(unchecked) var tableNext: UInt64 = 0
    @exclusivity(unchecked) var free: FrameStack
    /// Frames zeroed ahead (nt-batch mode), handed out in address order: `zeroed[taken..<count]`.
    @exclusivity(unchecked) var zeroed = FrameStack(capacity: 32)
    @exclusivity(unchecked) var taken = 0
    var zeroing = Zeroing.none
    init(size: UInt64) {
        self.size = size
        free = FrameStack(capacity: Int(size / 4096))
        // Sound: a private anonymous mapping, backed by transparent huge pages where the
        // kernel allows (THP is "madvise" here) and pre-touched, so neither host page faults
        // nor 4 KiB TLB misses on the arena are measured — for Swift and C alike.
        base = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        madvise(base, Int(size), 14 /* MADV_HUGEPAGE */)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Int(size))
        reset()
    }
    /// Starts over from an empty arena (the walker zeroes its own table frames).
    func reset() {
        next = 0x1000
        tableNext = size
        free.count = 0
        zeroed.count = 0
        taken = 0
    }
    /// A table frame (the walker zeroes it).
    @inline(__always) func allocFrame() -> HostPhysAddr? {
        if let f = free.pop() { return HostPhysAddr(f) }
        guard tableNext - 4096 >= next else { return nil }
        tableNext -= 4096
        return HostPhysAddr(tableNext)
    }
    /// A guest frame.
    @inline(__always) func allocFrame(for gpa: GuestPhysAddr, in area: GuestPhysRange) -> HostPhysAddr? {
        if zeroing == .nonTemporalBatch {
            if taken == zeroed.count { refill() }
            guard taken < zeroed.count else { return nil }
            taken += 1
            return HostPhysAddr(zeroed.slots[taken - 1])
        }
        return guestFrame()
    }
    @inline(__always) func guestFrame() -> HostPhysAddr? {
        if let f = free.pop() { return HostPhysAddr(f) }
        guard next + 4096 <= tableNext else { return nil }
        defer { next += 4096 }
        return HostPhysAddr(next)
    }
    /// Zeroes up to 32 frames ahead with non-temporal stores, then fences once.
    @inline(never) func refill() {
        zeroed.count = 0
        taken = 0
        for _ in 0..<zeroed.capacity {
            guard let f = guestFrame() else { break }
            cwalker_zero_frame_nt(base + Int(f.raw))  // Sound: frames lie inside the arena.
            zeroed.push(f.raw)
        }
        cwalker_store_fence()
    }
    @inline(__always) func zeroFrame(_ frame: HostPhysAddr) {
        // Sound: frames lie inside the arena mapping.
        if zeroing == .memset { (base + Int(frame.raw)).initializeMemory(as: UInt64.self, repeating: 0, count: 512) }
    }
    @inline(__always) func deallocFrame(_ frame: HostPhysAddr) { free.push(frame.raw) }
    @inline(__always) func physToVirt(_ pa: HostPhysAddr) -> HostVirtAddr { HostVirtAddr(UInt64(UInt(bitPattern: base)) &+ pa.raw) }
    @inline(__always) func virtToPhys(_ va: HostVirtAddr) -> HostPhysAddr { HostPhysAddr(va.raw - UInt64(UInt(bitPattern: base))) }
}
