// The Rust crate axaddrspace's benchmark workloads (docs/performance.md) as ordo-one benchmarks,
// with axbench's HAL (ArenaHAL.swift, linked from Benchmarks/Sources/axbench): free list +
// bump over one pre-touched arena. Each benchmark measures one operation per
// `scaledIterations` step; translate also runs through the C reference walker over the same
// tables, so the two lines of one run can be compared.
import AxAddrSpace
import Benchmark
import CWalker
import Glibc

let gib: UInt64 = 1 << 30
let hal = ArenaHAL(size: gib + (64 << 20))

func freshSpace() -> AddrSpace<EPT, ArenaHAL> {
    hal.reset()
    return try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput], maxDuration: .seconds(10), maxIterations: 5)

    // Per-operation benchmarks: scaledIterations operations per measured iteration.
    let pages = 1 << 18  // 1 GiB of 4 KiB pages
    for zeroing in [Zeroing.none, .nonTemporalBatch] {
        Benchmark("a_fault_seq_1g (per fault, zeroing: \(zeroing.rawValue))", configuration: .init(scalingFactor: .kilo)) { b in
            let s = freshSpace()
            hal.zeroing = zeroing
            try! s.mapAlloc(GuestPhysAddr(0), size: gib, flags: .rw, populate: false)
            b.startMeasurement()
            for p in b.scaledIterations where p < pages { blackHole(s.handlePageFault(GuestPhysAddr(UInt64(p) << 12), access: .write)) }
        }
        Benchmark("c_populate (per page, zeroing: \(zeroing.rawValue))", configuration: .init(scalingFactor: .kilo)) { b in
            let s = freshSpace()
            hal.zeroing = zeroing
            let size = UInt64(b.scaledIterations.count) * 4096
            b.startMeasurement()
            try! s.mapAlloc(GuestPhysAddr(0), size: size, flags: .rw, populate: true)
        }
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
