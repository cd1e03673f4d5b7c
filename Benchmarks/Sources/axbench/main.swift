// The Rust crate's benchmark workloads with the same kind of HAL: a free-list/bump allocator
// over one pre-touched arena (1 GiB + 64 MiB), physToVirt = arena base + pa. Each line is
// the median of 5 repetitions (AXBENCH_RUNS) in ns/op. The fault workloads run three times:
// with a HAL that does not zero (the Rust table's first column), one that zeroes each frame
// with memset, and one that zeroes ahead in batches with non-temporal stores. translate and
// the fault path are also run through a C reference over the same arena, in the same
// process, and the ratios printed.
import AxAddrSpace
import CWalker
import Glibc

func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

struct Rng { var s: UInt64; mutating func next() -> UInt64 { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s } }

/// AnonHugePages of this process, from /proc/self/smaps_rollup (kB).
func hugePagesKB() -> Int {
    guard let f = fopen("/proc/self/smaps_rollup", "r") else { return -1 }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, 256, f) != nil {
        let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if s.hasPrefix("AnonHugePages:") { return Int(s.split(separator: " ").dropFirst().first ?? "") ?? -1 }
    }
    return -1
}

let gib: UInt64 = 1 << 30
let pages = Int(gib / 4096)
let hal = ArenaHAL(size: gib + (64 << 20))
nonisolated(unsafe) var sink: UInt64 = 0

/// Repetitions per workload (AXBENCH_RUNS, default 5; more for profiling).
let runs = getenv("AXBENCH_RUNS").flatMap { Int(String(cString: $0)) }.map { max(1, $0) } ?? 5
/// One run of `body`, which returns (ns, ops), as ns per op.
func nsPerOp(_ body: () -> (UInt64, Int)) -> Double {
    let (ns, ops) = body()
    return Double(ns) / Double(ops)
}
/// Median of `runs` runs of `body`, which returns (ns, ops).
func median(_ body: () -> (UInt64, Int)) -> Double {
    let r = (0..<runs).map { _ in nsPerOp(body) }
    return r.sorted()[runs / 2]
}
/// Runs `swift` and `c` alternately `runs` times (so that both see the same machine: this
/// one's speed drifts by tens of percent between seconds) and returns their medians and
/// the median of the per-pair ratios swift / c.
func paired(_ swift: () -> (UInt64, Int), _ c: () -> (UInt64, Int)) -> (swift: Double, c: Double, ratio: Double) {
    var a: [Double] = [], b: [Double] = [], r: [Double] = []
    for i in 0..<runs {
        let (x, y) = i % 2 == 0 ? (nsPerOp(swift), nsPerOp(c)) : { let y = nsPerOp(c); return (nsPerOp(swift), y) }()
        a.append(x)
        b.append(y)
        r.append(x / y)
    }
    return (a.sorted()[runs / 2], b.sorted()[runs / 2], r.sorted()[runs / 2])
}
func fmt(_ v: Double) -> String { String(Double(Int(v * 10 + 0.5)) / 10) }

func lazySpace() -> AddrSpace<EPT, ArenaHAL> {
    hal.reset()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    try! s.mapAlloc(GuestPhysAddr(0), size: gib, flags: .rw, populate: false)
    return s
}

/// `lazySpace()` with every page faulted in, in order.
func faultedSpace() -> AddrSpace<EPT, ArenaHAL> {
    let s = lazySpace()
    for p in 0..<pages { _ = s.handlePageFault(GuestPhysAddr(UInt64(p) << 12), access: .write) }
    return s
}

var order = Array(0..<pages)
var rng = Rng(s: 42)
for i in stride(from: pages - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }

print("arena: \(hugePagesKB() / 1024) MiB on transparent huge pages")
var rows: [(String, Double, String)] = []
/// With AXBENCH_PROFILE set, the fault workloads run without zeroing only (for perf).
let profiling = getenv("AXBENCH_PROFILE") != nil
/// AXBENCH_ONLY=a_fault_seq_1g,e_translate_4k runs only those workloads (for profiling).
let only: [Substring]? = getenv("AXBENCH_ONLY").map { String(cString: $0).split(separator: ",") }
func wanted(_ name: String) -> Bool { only?.contains(Substring(name)) ?? true }

/// A fault-path row: for each zeroing mode Swift's ns/op and the C reference's, and the
/// Rust figures.
struct FaultRow {
    var name: String
    /// Per zeroing mode: Swift ns/op, and the C reference's ns/op and the median Swift/C
    /// ratio where there is a C reference.
    var ns: [Zeroing: (swift: Double, c: Double?, ratio: Double?)]
    var rust: String
}
var faultRows: [FaultRow] = []
func eachZeroing<T>(_ body: () -> T) -> [Zeroing: T] {
    var out: [Zeroing: T] = [:]
    for z in profiling ? [.none] : Zeroing.allCases {
        hal.zeroing = z
        out[z] = body()
    }
    hal.zeroing = .none  // the other workloads never read guest frames
    return out
}

/// One run of the C reference fault path over the same arena and layout (frames from the
/// bottom, tables from the top), zeroing as `hal.zeroing` says, for the pages in `pageOrder`.
func cFaults(_ pageOrder: [Int]) -> (UInt64, Int) {
    let mode: Int32 = switch hal.zeroing { case .none: 0; case .memset: 1; case .nonTemporalBatch: 2 }
    hal.reset()
    let base = hal.base.assumingMemoryBound(to: UInt8.self)
    var bump: UInt64 = 0x1000
    var tables: UInt64 = hal.size - 0x1000
    (base + Int(tables)).initialize(repeating: 0, count: 4096)
    let root = tables
    let t = now()
    for p in pageOrder { sink &+= cwalker_populate(base, root, UInt64(p) << 12, &bump, &tables, mode) }
    return (now() - t, pageOrder.count)
}

/// One run of `handlePageFault` on every page of a fresh lazy 1 GiB area, in `pageOrder`.
func faultAll(_ pageOrder: [Int]) -> (UInt64, Int) {
    let s = lazySpace()
    let t = now()
    for p in pageOrder { _ = s.handlePageFault(GuestPhysAddr(UInt64(p) << 12), access: .write) }
    return (now() - t, pageOrder.count)
}

func faultRow(_ name: String, _ pageOrder: [Int], rust: String) -> FaultRow {
    FaultRow(name: name, ns: eachZeroing {
        let p = paired({ faultAll(pageOrder) }, { cFaults(pageOrder) })
        return (p.swift, p.c, p.ratio)
    }, rust: rust)
}
if wanted("a_fault_seq_1g") { faultRows.append(faultRow("a_fault_seq_1g", Array(0..<pages), rust: "7.7 / 162")) }
if wanted("a_setup") { rows.append(("a_setup", median {
    hal.reset()
    let t = now()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    try! s.mapAlloc(GuestPhysAddr(0), size: gib, flags: .rw, populate: false)
    let d = now() - t
    withExtendedLifetime(s) {}
    return (d, pages)
}, "4.5")) }
if wanted("b_fault_rand_1g") { faultRows.append(faultRow("b_fault_rand_1g", order, rust: "9.7 / 168")) }
if wanted("c_populate_256m") {
    // The C reference is its fault path over the same 65,536 pages in order.
    let first = Array(0..<65536)
    faultRows.append(FaultRow(name: "c_populate_256m", ns: eachZeroing {
        let p = paired({
            hal.reset()
            let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
            let t = now()
            try! s.mapAlloc(GuestPhysAddr(0), size: 256 << 20, flags: .rw, populate: true)
            return (now() - t, 65536)
        }, { cFaults(first) })
        return (p.swift, p.c, p.ratio)
    }, rust: "5.0 / 161"))
}

nonisolated(unsafe) var addrs: [UInt64] = (0..<1_000_000).map { _ in rng.next() % gib }
func translateRow(_ name: String, _ s: AddrSpace<EPT, ArenaHAL>, rust: String) -> (String, Double, String) {
    let base = hal.base.assumingMemoryBound(to: UInt8.self)
    let root = s.pageTableRoot.raw
    // Both loops sum into a local and publish it once (a store to a global per call would
    // make the inlined Swift walk reload its table pointers every iteration).
    let p = paired({
        var sum: UInt64 = 0
        let t = now()
        for a in addrs { sum &+= s.translate(GuestPhysAddr(a))?.raw ?? 0 }
        let d = now() - t
        sink &+= sum
        return (d, addrs.count)
    }, {
        var sum: UInt64 = 0
        let t = now()
        for a in addrs { sum &+= cwalker_translate(base, root, a) }
        let d = now() - t
        sink &+= sum
        return (d, addrs.count)
    })
    return (name, p.swift, rust + "; C reference \(fmt(p.c)), Swift/C \(fmt(p.ratio * 100))%")
}
if wanted("d_translate_1g_huge") {
    hal.reset()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    try! s.mapLinear(GuestPhysAddr(0), to: HostPhysAddr(gib), size: gib, flags: .rw)
    rows.append(translateRow("d_translate_1g_huge", s, rust: "2.1"))
}
if wanted("d2_translate_2m") {
    hal.reset()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    try! s.mapLinear(GuestPhysAddr(0), to: HostPhysAddr(gib + (2 << 20)), size: gib, flags: .rw)
    rows.append(translateRow("d2_translate_2m", s, rust: "2.6"))
}
if wanted("e_translate_4k") { rows.append(translateRow("e_translate_4k", faultedSpace(), rust: "6.4")) }
if wanted("f_unmap_1g") {
    // Both sides unmap the same faulted 1 GiB (every page, then the tables): the library
    // through `unmap`, the C reference by clearing the tree onto the HAL's free stack.
    let p = paired({
        let s = faultedSpace()
        let t = now()
        try! s.unmap(GuestPhysAddr(0), size: gib)
        return (now() - t, pages)
    }, {
        let s = faultedSpace()
        var count = Int64(hal.free.count)
        let t = now()
        cwalker_unmap_all(hal.base.assumingMemoryBound(to: UInt8.self), s.pageTableRoot.raw, hal.free.slots, &count)
        let d = now() - t
        hal.free.count = Int(count)
        return (d, pages)
    })
    rows.append(("f_unmap_1g", p.swift, "4.0; C reference \(fmt(p.c)), Swift/C \(fmt(p.ratio * 100))%"))
}

// The floor under the zeroing columns: only zero 1 GiB of arena frames in order.
if wanted("zero_only") {
    let memsetOnly = median {
        let t = now()
        for p in 0..<pages { (hal.base + 0x1000 + p << 12).initializeMemory(as: UInt64.self, repeating: 0, count: 512) }
        return (now() - t, pages)
    }
    let ntOnly = median {
        let t = now()
        for p in 0..<pages {
            cwalker_zero_frame_nt(hal.base + 0x1000 + p << 12)
            if p % 32 == 31 { cwalker_store_fence() }
        }
        cwalker_store_fence()
        return (now() - t, pages)
    }
    print("zeroing a 4 KiB frame alone (same arena, in order): memset \(fmt(memsetOnly)) ns, non-temporal in batches of 32 \(fmt(ntOnly)) ns")
}
print("")
print("| workload | Swift ns/op: HAL does not zero / memset / nt-batch | Rust crate ns/op: does not zero / zeroes (reference file) | C reference fault path ns/op, same modes (Swift/C) |")
print("|---|---|---|---|")
for r in faultRows {
    let swift = Zeroing.allCases.map { r.ns[$0].map { fmt($0.swift) } ?? "–" }.joined(separator: " / ")
    let c = Zeroing.allCases.map { z in
        guard let v = r.ns[z], let c = v.c, let ratio = v.ratio else { return "–" }
        return "\(fmt(c)) (\(fmt(ratio * 100))%)"
    }.joined(separator: " / ")
    print("| \(r.name) | \(swift) | \(r.rust) | \(c) |")
}
print("")
print("| workload | Swift ns/op | Rust crate ns/op (reference file) |")
print("|---|---|---|")
for (n, v, r) in rows { print("| \(n) | \(fmt(v)) | \(r) |") }
if sink == 42 { print("") }
