import AxAddrSpace
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SplitMix64: small, seeded, reproducible.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// The plain model: one entry per guest page of the space.
struct ModelPage: Equatable {
    enum Kind: Equatable { case linear(UInt64), lazy, populated }
    var kind: Kind
    var flags: MappingFlags
}

/// Random map / unmap / protect / fault / depopulate sequences against a dictionary model;
/// after every step each page's translation, the flags of present leaves, the frame count
/// and the errors must agree. One step in four runs with a HAL that fails its Nth
/// allocation: the operation must then fail with `noMemory` and change nothing.
@Suite struct PropertyTests {
    static let pages = 2048  // 8 MiB space, 2 MiB aligned, so huge leaves occur
    static let base: UInt64 = 0x4000_0000

    /// Soak knobs (scripts/soak.sh), all unset by default: `AXVM_MODEL_STEPS` steps per run
    /// (default 400); `AXVM_MODEL_SEED` mixed into every run's seed (default: the seeds in
    /// the arguments, as they are); `AXVM_MODEL_FORMATS` a comma-separated list of formats to
    /// run (`ept,npt,stage2L3,stage2L4,sv39x4,sv48x4,sv57x4`; default all).
    static let steps = Self.knob("AXVM_MODEL_STEPS").flatMap { Int($0) } ?? 400
    static let seed = Self.knob("AXVM_MODEL_SEED").flatMap { UInt64($0) }
    static let formats = Self.knob("AXVM_MODEL_FORMATS").map { $0.split(separator: ",").map(String.init) }
    static func knob(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    @Test(arguments: [(AnyFormat.ept, UInt64(1)), (.npt, 2), (.stage2L3, 3), (.stage2L4, 4), (.sv39x4, 5), (.sv48x4, 6), (.sv57x4, 8), (.ept, 7)])
    func randomSequencesAgreeWithModel(_ which: AnyFormat, seed: UInt64) throws {
        if let formats = Self.formats, !formats.contains("\(which)") { return }
        // SplitMix's golden-ratio multiplier keeps the runs of one soak seed apart.
        let seed = Self.seed.map { $0 ^ (seed &* 0x9e37_79b9_7f4a_7c15) } ?? seed
        try which.with { f in try run(f, seed: seed, steps: Self.steps) }
    }

    func run<F: NestedPagingFormat>(_ f: F, seed: UInt64, steps: Int) throws {
        var rng = SeededRandom(state: seed)
        let hal = CountingHAL(frames: Self.pages + 512)
        let s = try AddrSpace(base: GuestPhysAddr(Self.base), size: UInt64(Self.pages) * 4096, format: f, hal: hal)
        var model: [Int: ModelPage] = [:]
        let flagChoices: [MappingFlags] = [.read, .rw, .rwx, [.read, .execute]]

        func gpa(_ page: Int) -> GuestPhysAddr { GuestPhysAddr(Self.base + UInt64(page) * 4096) }
        func randomRange() -> (Int, Int) {
            let big = rng.next() % 4 == 0
            let start = big ? Int(rng.next() % 4) * 512 : Int(rng.next() % UInt64(Self.pages))
            let maxLen = Self.pages - start
            let len = big ? min(maxLen, 512 * Int(1 + rng.next() % 2)) : 1 + Int(rng.next() % UInt64(min(maxLen, 64)))
            return (start, len)
        }
        func snapshot() -> [HostPhysAddr?] { (0..<Self.pages).map { s.translate(gpa($0)) } }

        for step in 0..<steps {
            let inject = rng.next() % 4 == 0
            let before = snapshot(), areasBefore = s.areas, framesBefore = hal.framesInUse
            if inject { hal.failAfter = Int(rng.next() % 3) }
            let (start, len) = randomRange()
            let range = start..<(start + len)
            let flags = flagChoices[Int(rng.next() % UInt64(flagChoices.count))]
            let op = rng.next() % 6
            var failedNoMemory = false
            do {
                switch op {
                case 0, 1:
                    let overlapping = range.first { model[$0] != nil }
                    let linear = op == 0
                    // Host side: 2 MiB aligned half the time so huge leaves are used.
                    let host: UInt64 = (UInt64(1 + rng.next() % 64) << 21) + (rng.next() % 2 == 0 ? 0 : UInt64(start % 512) * 4096)
                    let populate = rng.next() % 2 == 0
                    do {
                        if linear {
                            try s.mapLinear(gpa(start), to: HostPhysAddr(host), size: UInt64(len) * 4096, flags: flags)
                        } else {
                            try s.mapAlloc(gpa(start), size: UInt64(len) * 4096, flags: flags, populate: populate)
                        }
                        #expect(overlapping == nil, "step \(step): map over page \(overlapping ?? -1) succeeded")
                        for p in range {
                            model[p] = ModelPage(kind: linear ? .linear(host + UInt64(p - start) * 4096) : populate ? .populated : .lazy, flags: flags)
                        }
                    } catch {  // typed: an AddrSpaceError
                        if case .overlaps = error { #expect(overlapping != nil, "step \(step): \(error)") }
                        else { throw error }
                    }
                case 2:
                    try s.unmap(gpa(start), size: UInt64(len) * 4096)
                    for p in range { model[p] = nil }
                case 3:
                    try s.protect(gpa(start), size: UInt64(len) * 4096, flags: flags)
                    for p in range { model[p]?.flags = flags }
                case 4:
                    let access: [AccessKind] = [.read, .write, .execute]
                    let a = access[Int(rng.next() % 3)]
                    let around: UInt64 = rng.next() % 3 == 0 ? 0x4000 : 0x1000
                    let r = s.handlePageFault(gpa(start) + rng.next() % 4096, access: a, faultAround: around)
                    let m = model[start]
                    switch r {
                    case .notInArea: #expect(m == nil, "step \(step)")
                    case let .accessDenied(allowed):
                        #expect(m != nil && !m!.flags.contains(a.requiredFlags) && allowed.contains(m!.flags.intersection(.access)), "step \(step)")
                    case .alreadyMapped: #expect(m != nil && m!.kind != .lazy, "step \(step)")
                    case let .mapped(window, pages):
                        // The faulting page itself may be populated already: a window
                        // around it still maps its lazy neighbours.
                        #expect(m?.kind == .lazy || (m?.kind == .populated && pages > 0), "step \(step)")
                        var n = 0
                        var p = window.start
                        while p < window.end {
                            let i = Int((p.raw - Self.base) / 4096)
                            if model[i]?.kind == .lazy { model[i]?.kind = .populated; n += 1 }
                            p = p + 4096
                        }
                        #expect(n == pages, "step \(step)")
                    case .outOfMemory:
                        #expect(inject, "step \(step): out of memory without injection")
                        failedNoMemory = true
                    case .unrecoverable:
                        Issue.record("step \(step): a plain fault was refused as unrecoverable")
                    }
                default:
                    try s.depopulate(gpa(start), size: UInt64(len) * 4096)
                    for p in range where model[p]?.kind == .populated { model[p]?.kind = .lazy }
                }
            } catch {
                guard let e = error as? AddrSpaceError, case .noMemory = e else {
                    Issue.record("step \(step) op \(op): unexpected \(error)")
                    return
                }
                #expect(inject, "step \(step): \(error) without injection")
                failedNoMemory = true
            }
            hal.failAfter = nil
            if failedNoMemory {
                #expect(snapshot() == before, "step \(step) op \(op): failed operation changed translations")
                #expect(s.areas == areasBefore, "step \(step): failed operation changed areas")
                #expect(hal.framesInUse == framesBefore, "step \(step): failed operation leaked frames")
                continue
            }
            // Every page agrees with the model.
            var seen = Set<HostPhysAddr>()
            for p in 0..<Self.pages {
                let t = s.translate(gpa(p))
                switch model[p]?.kind {
                case nil, .lazy?: #expect(t == nil, "step \(step) op \(op): page \(p) should not translate")
                case let .linear(h)?: #expect(t == HostPhysAddr(h), "step \(step) op \(op): page \(p)")
                case .populated?:
                    #expect(t != nil, "step \(step) op \(op): page \(p) should be populated")
                    if let t { #expect(seen.insert(t).inserted, "step \(step): frame \(t) mapped twice") }
                }
                if t != nil, let m = model[p] {
                    let leaf = s.pageTable.query(gpa(p))?.flags.intersection(.access)
                    // NPT cannot express "no read": execute-only is impossible here (flags always have read).
                    #expect(leaf == m.flags, "step \(step) op \(op): flags of page \(p)")
                }
            }
            let populated = model.values.filter { $0.kind == .populated }.count
            #expect(s.statistics.populatedFrames == populated, "step \(step)")
            #expect(hal.framesInUse == populated + s.pageTable.tableFrames, "step \(step) op \(op): frame count")
        }
        s.clear()
        #expect(hal.framesInUse == f.rootEntries / 512)
    }
}
