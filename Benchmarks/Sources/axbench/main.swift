// The Rust crate's benchmark workloads with the same kind of HAL: a free-list/bump allocator
// over one pre-touched arena (1 GiB + 64 MiB), physToVirt = arena base + pa. Each line is
// the median of 5 repetitions in ns/op; "zeroing" is on (the library always zeroes guest
// frames, as the Rust crate's "HAL zeroes" column). translate is also run through a C
// reference walker over the same tables, in the same process, and the ratio printed.
import AxAddrSpace
import CWalker
import Glibc

final class ArenaHAL: NestedMemoryHAL {
    let base: UnsafeMutableRawPointer
    let size: UInt64
    // Single-threaded like the Rust benchmark's HAL: no runtime exclusivity checks.
    @exclusivity(unchecked) var next: UInt64 = 0x1000
    @exclusivity(unchecked) var free: [UInt64] = []
    /// false: frames are handed out as they are (the Rust table's "HAL does not zero" column).
    var zeroing = true
    /// Zero with non-temporal stores instead of memset (AXBENCH_NT_ZERO=1).
    let nonTemporal = getenv("AXBENCH_NT_ZERO") != nil
    init(size: UInt64) {
        self.size = size
        // Sound: a private anonymous mapping, backed by transparent huge pages where the
        // kernel allows (THP is "madvise" here) and pre-touched, so neither host page faults
        // nor 4 KiB TLB misses on the arena are measured — for Swift and C alike.
        base = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        madvise(base, Int(size), 14 /* MADV_HUGEPAGE */)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Int(size))
    }
    /// Starts over from an empty arena (the walker zeroes its own table frames; guest frames
    /// are never read in these workloads).
    func reset() {
        next = 0x1000
        free.removeAll(keepingCapacity: true)
    }
    @inline(__always) func allocFrame() -> HostPhysAddr? {
        if let f = free.popLast() { return HostPhysAddr(f) }
        guard next + 4096 <= size else { return nil }
        defer { next += 4096 }
        return HostPhysAddr(next)
    }
    @inline(__always) func zeroFrame(_ frame: HostPhysAddr) {
        // Sound: frames lie inside the arena mapping.
        guard zeroing else { return }
        if nonTemporal { cwalker_zero_frame_nt(base + Int(frame.raw)) }
        else { (base + Int(frame.raw)).initializeMemory(as: UInt64.self, repeating: 0, count: 512) }
    }
    @inline(__always) func deallocFrame(_ frame: HostPhysAddr) { free.append(frame.raw) }
    @inline(__always) func physToVirt(_ pa: HostPhysAddr) -> HostVirtAddr { HostVirtAddr(UInt64(UInt(bitPattern: base)) &+ pa.raw) }
    @inline(__always) func virtToPhys(_ va: HostVirtAddr) -> HostPhysAddr { HostPhysAddr(va.raw - UInt64(UInt(bitPattern: base))) }
}

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
        let s = String(cString: line)
        if s.hasPrefix("AnonHugePages:") { return Int(s.split(separator: " ").dropFirst().first ?? "") ?? -1 }
    }
    return -1
}

let gib: UInt64 = 1 << 30
let pages = Int(gib / 4096)
nonisolated(unsafe) let hal = ArenaHAL(size: gib + (64 << 20))
nonisolated(unsafe) var sink: UInt64 = 0

/// Median of 5 runs of `body`, which returns (ns, ops).
func median(_ body: () -> (UInt64, Int)) -> Double {
    var r: [Double] = []
    for _ in 0..<5 { let (ns, ops) = body(); r.append(Double(ns) / Double(ops)) }
    return r.sorted()[2]
}
func fmt(_ v: Double) -> String { String(Double(Int(v * 10 + 0.5)) / 10) }

func lazySpace() -> AddrSpace<EPT, ArenaHAL> {
    hal.reset()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    try! s.mapAlloc(GuestPhysAddr(0), size: gib, flags: .rw, populate: false)
    return s
}

var order = Array(0..<pages)
var rng = Rng(s: 42)
for i in stride(from: pages - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }

print("arena: \(hugePagesKB() / 1024) MiB on transparent huge pages")
var rows: [(String, Double, String)] = []
/// Runs a workload without, then with zeroing: (no-zero ns/op, zeroing ns/op).
/// With AXBENCH_PROFILE set, only the no-zeroing half runs (for perf).
let profiling = getenv("AXBENCH_PROFILE") != nil
func both(_ body: () -> Double) -> (Double, Double) {
    hal.zeroing = false
    let a = body()
    hal.zeroing = true
    return (a, profiling ? 0 : body())
}
var zeroRows: [(String, Double, Double, String)] = []

do { let (n, z) = both { median {
    let s = lazySpace()
    let t = now()
    for p in 0..<pages { _ = s.handlePageFault(GuestPhysAddr(UInt64(p) << 12), access: .write) }
    return (now() - t, pages)
} }; zeroRows.append(("a_fault_seq_1g", n, z, "7.7 / 162")) }
rows.append(("a_setup", median {
    hal.reset()
    let t = now()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    try! s.mapAlloc(GuestPhysAddr(0), size: gib, flags: .rw, populate: false)
    let d = now() - t
    withExtendedLifetime(s) {}
    return (d, pages)
}, "4.5"))
do { let (n, z) = both { median {
    let s = lazySpace()
    let t = now()
    for p in order { _ = s.handlePageFault(GuestPhysAddr(UInt64(p) << 12), access: .write) }
    return (now() - t, pages)
} }; zeroRows.append(("b_fault_rand_1g", n, z, "9.7 / 168")) }
do { let (n, z) = both { median {
    hal.reset()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    let t = now()
    try! s.mapAlloc(GuestPhysAddr(0), size: 256 << 20, flags: .rw, populate: true)
    return (now() - t, 65536)
} }; zeroRows.append(("c_populate_256m", n, z, "5.0 / 161")) }

nonisolated(unsafe) var addrs: [UInt64] = (0..<1_000_000).map { _ in rng.next() % gib }
func translateRow(_ name: String, _ s: AddrSpace<EPT, ArenaHAL>, rust: String) -> (String, Double, String) {
    let swift = median {
        let t = now()
        for a in addrs { sink &+= s.translate(GuestPhysAddr(a))?.raw ?? 0 }
        return (now() - t, addrs.count)
    }
    let base = hal.base.assumingMemoryBound(to: UInt8.self)
    let root = s.pageTableRoot.raw
    let c = median {
        let t = now()
        for a in addrs { sink &+= cwalker_translate(base, root, a) }
        return (now() - t, addrs.count)
    }
    return (name, swift, rust + "; C reference \(fmt(c)), Swift/C \(fmt(swift / c * 100))%")
}
do {
    hal.reset()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    try! s.mapLinear(GuestPhysAddr(0), to: HostPhysAddr(gib), size: gib, flags: .rw)
    rows.append(translateRow("d_translate_1g_huge", s, rust: "2.1"))
}
do {
    hal.reset()
    let s = try! AddrSpace(base: GuestPhysAddr(0), size: 4 * gib, format: EPT(), hal: hal)
    try! s.mapLinear(GuestPhysAddr(0), to: HostPhysAddr(gib + (2 << 20)), size: gib, flags: .rw)
    rows.append(translateRow("d2_translate_2m", s, rust: "2.6"))
}
do {
    let s = lazySpace()
    for p in 0..<pages { _ = s.handlePageFault(GuestPhysAddr(UInt64(p) << 12), access: .write) }
    rows.append(translateRow("e_translate_4k", s, rust: "6.4"))
}
rows.append(("f_unmap_1g", median {
    let s = lazySpace()
    for p in 0..<pages { _ = s.handlePageFault(GuestPhysAddr(UInt64(p) << 12), access: .write) }
    let t = now()
    try! s.unmap(GuestPhysAddr(0), size: gib)
    return (now() - t, pages)
}, "4.0"))

// The floor under the zeroing column: only zero 1 GiB of arena frames in order, nothing else.
let zeroOnly = median {
    let t = now()
    for p in 0..<pages { hal.zeroFrame(HostPhysAddr(0x1000 + UInt64(p) << 12)) }
    return (now() - t, pages)
}
print("zeroing a 4 KiB frame alone (same arena, same order): \(fmt(zeroOnly)) ns")
print("")
print("| workload | Swift ns/op, no zeroing / zeroing | Rust crate ns/op, no zeroing / zeroing (reference file) |")
print("|---|---|---|")
for (n, a, z, r) in zeroRows { print("| \(n) | \(fmt(a)) / \(fmt(z)) | \(r) |") }
print("")
print("| workload | Swift ns/op | Rust crate ns/op (reference file) |")
print("|---|---|---|")
for (n, v, r) in rows { print("| \(n) | \(fmt(v)) | \(r) |") }
if sink == 42 { print("") }
