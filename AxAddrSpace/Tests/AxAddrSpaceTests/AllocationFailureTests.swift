import AxAddrSpace
import Glibc
import Testing

/// Allocation failure at every N, with a HAL that poisons freed frames and hands the most
/// recently freed frame out again first (`CountingHAL`): both are legal, since the HAL
/// contract promises nothing about a frame once it is freed. Whatever the step that fails,
/// the operation must report out-of-memory, leave no frame allocated, leave the space
/// usable, and the space must return every frame when dropped.
@Suite struct AllocationFailureTests {
    /// An operation on a space with one lazy area (`areaStart`, 8 MiB, not 2 MiB-aligned,
    /// so windows and populated ranges straddle last-level tables).
    enum Operation: CaseIterable, CustomStringConvertible {
        case fault4K, faultAround64K, faultAround2M, mapAllocPopulated
        var description: String {
            switch self {
            case .fault4K: "fault, 4 KiB"
            case .faultAround64K: "fault-around 64 KiB"
            case .faultAround2M: "fault-around 2 MiB"
            case .mapAllocPopulated: "mapAlloc(populate: true)"
            }
        }
    }
    static let areaStart: UInt64 = 0x4010_0000
    static let areaSize: UInt64 = 8 << 20
    static let faultAt = GuestPhysAddr(0x4030_5000)
    /// Four pages across a 2 MiB boundary, outside the lazy area: two last-level tables.
    static let populatedAt = GuestPhysAddr(0x409f_e000)

    /// Runs `op` on `s`; true if it succeeded.
    func perform<F>(_ op: Operation, on s: AddrSpace<F, CountingHAL>) -> Bool {
        switch op {
        case .fault4K: return s.handlePageFault(Self.faultAt, access: .write).isResolved
        case .faultAround64K: return s.handlePageFault(Self.faultAt, access: .write, faultAround: 64 << 10).isResolved
        case .faultAround2M: return s.handlePageFault(Self.faultAt, access: .write, faultAround: 2 << 20).isResolved
        case .mapAllocPopulated:
            do {
                try s.mapAlloc(Self.populatedAt, size: 0x4000, flags: .rw, populate: true)
                return true
            } catch {
                #expect(isNoMemory(error), "\(error)")
                return false
            }
        }
    }
    func isNoMemory(_ e: AddrSpaceError) -> Bool { if case .noMemory = e { true } else { false } }

    /// Every N from 0 to `needed - 1`. A 2 MiB window makes 500+ allocations, almost all
    /// of them guest frames after the tables exist: by default every N through the table
    /// creation and the first frames, then every 7th, and the last few; AXVM_EXHAUSTIVE=1
    /// (the soak script) tries them all.
    static func failurePoints(needed: Int, levels: Int) -> [Int] {
        let exhaustive = getenv("AXVM_EXHAUSTIVE").map { String(cString: $0) == "1" } ?? false
        if exhaustive || needed <= 64 { return Array(0..<needed) }
        return (0..<needed).filter { $0 < levels + 8 || $0 % 7 == 0 || $0 >= needed - 3 }
    }

    func makeSpace<F: NestedPagingFormat>(_ f: F, _ hal: CountingHAL) throws -> AddrSpace<F, CountingHAL> {
        let s = try AddrSpace(base: GuestPhysAddr(0x4000_0000), size: 64 << 20, format: f, hal: hal)
        try s.mapAlloc(GuestPhysAddr(Self.areaStart), size: Self.areaSize, flags: .rw, populate: false)
        return s
    }

    @Test(arguments: AnyFormat.allCases, Operation.allCases)
    func failedAllocationLeavesNoFrameBehind(_ which: AnyFormat, _ op: Operation) throws {
        try which.with { f in try everyN(f, op) }
    }

    func everyN<F: NestedPagingFormat>(_ f: F, _ op: Operation) throws {
        // How many allocations the operation makes when nothing fails.
        let needed: Int
        do {
            let hal = CountingHAL(frames: 1024)
            let s = try makeSpace(f, hal)
            let before = hal.allocations
            #expect(perform(op, on: s))
            needed = hal.allocations - before
        }
        #expect(needed >= f.levels, "the operation should create tables on the way: \(needed)")
        for n in Self.failurePoints(needed: needed, levels: f.levels) {
            let hal = CountingHAL(frames: 1024)
            do {
                let s = try makeSpace(f, hal)
                let framesBefore = hal.framesInUse, tablesBefore = s.statistics.tableFrames
                hal.failAfter = n
                #expect(!perform(op, on: s), "allocation \(n) of \(needed) failed, yet the operation succeeded")
                #expect(hal.framesInUse == framesBefore, "N = \(n): \(hal.framesInUse - framesBefore) frame(s) leaked")
                #expect(s.statistics.tableFrames == tablesBefore, "N = \(n): table count \(s.statistics.tableFrames)")
                #expect(s.translate(Self.faultAt) == nil)
                // The space is still sound: the same operation now succeeds and maps real,
                // zeroed memory (a stale cached table would map into a freed frame).
                hal.failAfter = nil
                #expect(perform(op, on: s), "N = \(n): the space is unusable after the failure")
                if op != .mapAllocPopulated {
                    let pa = try #require(s.translate(Self.faultAt))
                    #expect(hal.bytes(pa).allSatisfy { $0 == 0 })
                }
            }
            #expect(hal.framesInUse == 0, "N = \(n): \(hal.framesInUse) frame(s) still in use after the space was dropped")
        }
    }
}
