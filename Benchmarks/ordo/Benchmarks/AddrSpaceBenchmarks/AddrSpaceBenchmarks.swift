// The Rust crate's workloads (shared/reference/axaddrspace-bench.md) as ordo-one benchmarks,
// with a HAL like its own: free list + bump over one pre-touched arena. Each benchmark
// measures one operation per `scaledIterations` step; translate also runs through the C
// reference walker over the same tables, so the two lines of one run can be compared.
import AxAddrSpace
import Benchmark
import CWalker
import Glibc

final class ArenaHAL: NestedMemoryHAL, @unchecked Sendable {  // one benchmark at a time
    let base: UnsafeMutableRawPointer
    let size: UInt64
    @exclusivity(unchecked) var next: UInt64 = 0x1000
    @exclusivity(unchecked) var free: [UInt64] = []
    init(size: UInt64) {
        self.size = size
        // Sound: private anonymous mapping on huge pages where allowed, pre-touched.
        base = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        madvise(base, Int(size), 14 /* MADV_HUGEPAGE */)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Int(size))
    }
    func reset() { next = 0x1000; free.removeAll(keepingCapacity: true) }
    func allocFrame() -> HostPhysAddr? {
        if let f = free.popLast() { return HostPhysAddr(f) }
        guard next + 4096 <= size else { return nil }
        defer { next += 4096 }
        return HostPhysAddr(next)
    }
    func deallocFrame(_ frame: HostPhysAddr) { free.append(frame.raw) }
    func physToVirt(_ pa: HostPhysAddr) -> HostVirtAddr { HostVirtAddr(UInt64(UInt(bitPattern: base)) &+ pa.raw) }
    func virtToPhys(_ va: HostVirtAddr) -> HostPhysAddr { HostPhysAddr(va.raw &- UInt64(UInt(bitPattern: base))) }
}

let gib: UInt64 = 1 << 30
nonisolated(unsafe) let hal = ArenaHAL(size: gib + (64 << 20))

func freshSpace() -> AddrSpace<EPT, ArenaHAL> {
    hal.reset()
    return try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput], maxDuration: .seconds(10), maxIterations: 5)

    // Per-operation benchmarks: scaledIterations operations per measured iteration.
    let pages = 1 << 18  // 1 GiB of 4 KiB pages
    Benchmark("a_fault_seq_1g (per fault, zeroing)", configuration: .init(scalingFactor: .kilo)) { b in
        let s = freshSpace()
        try! s.mapAlloc(GuestPhysAddr(0), size: gib, flags: .rw, populate: false)
        b.startMeasurement()
        for p in b.scaledIterations where p < pages { blackHole(s.handlePageFault(GuestPhysAddr(UInt64(p) << 12), access: .write)) }
    }
    Benchmark("c_populate (per page, zeroing)", configuration: .init(scalingFactor: .kilo)) { b in
        let s = freshSpace()
        let size = UInt64(b.scaledIterations.count) * 4096
        b.startMeasurement()
        try! s.mapAlloc(GuestPhysAddr(0), size: size, flags: .rw, populate: true)
    }
    for (name, hostOffset) in [("d_translate_1g_huge", gib), ("d2_translate_2m", gib + (2 << 20))] {
        Benchmark("\(name) Swift", configuration: .init(scalingFactor: .mega)) { b in
            let s = freshSpace()
            try! s.mapLinear(GuestPhysAddr(0), to: HostPhysAddr(hostOffset), size: gib, flags: .rw)
            var x: UInt64 = 88172645463325252
            b.startMeasurement()
            for _ in b.scaledIterations {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                blackHole(s.translate(GuestPhysAddr(x % gib)))
            }
        }
        Benchmark("\(name) C reference", configuration: .init(scalingFactor: .mega)) { b in
            let s = freshSpace()
            try! s.mapLinear(GuestPhysAddr(0), to: HostPhysAddr(hostOffset), size: gib, flags: .rw)
            let base = hal.base.assumingMemoryBound(to: UInt8.self), root = s.pageTableRoot.raw
            var x: UInt64 = 88172645463325252
            b.startMeasurement()
            for _ in b.scaledIterations {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                blackHole(cwalker_translate(base, root, x % gib))
            }
        }
    }
}
