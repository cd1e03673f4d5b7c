import AxAddrSpace
import Testing

/// The formats the generic tests run over, as closures (formats are different types).
enum AnyFormat: CaseIterable {
    case ept, npt, stage2L3, stage2L4, sv39x4, sv48x4, sv57x4

    /// Runs `body` with the concrete format.
    func with<R>(_ body: (any NestedPagingFormat) throws -> R) rethrows -> R {
        switch self {
        case .ept: try body(EPT())
        case .npt: try body(NPT())
        case .stage2L3: try body(try! Stage2(levels: 3))
        case .stage2L4: try body(try! Stage2(levels: 4))
        case .sv39x4: try body(GStage.sv39x4())
        case .sv48x4: try body(GStage.sv48x4())
        case .sv57x4: try body(GStage.sv57x4())
        }
    }
}

func space<F: NestedPagingFormat>(_ f: F, _ hal: CountingHAL, base: UInt64 = 0, size: UInt64 = 1 << 32) throws -> AddrSpace<F, CountingHAL> {
    try AddrSpace(base: GuestPhysAddr(base), size: size, format: f, hal: hal)
}

@Suite struct WalkerTests {
    @Test(arguments: AnyFormat.allCases)
    func hugeLeavesChosenWhenAligned(_ which: AnyFormat) throws {
        try which.with { f in try hugeLeaves(f) }
    }
    func hugeLeaves<F: NestedPagingFormat>(_ f: F) throws {
        let hal = CountingHAL()
        let pt = try PageTable64(format: f, hal: hal)
        // 1 GiB + 2 MiB + 4 KiB at an address where all three fit.
        let size: UInt64 = (1 << 30) + (2 << 20) + 4096
        try pt.mapRegion(GuestPhysAddr(1 << 30), size: size, flags: .rwx, allowHuge: true,
                         hpa: { HostPhysAddr($0.raw + (3 << 30)) }, unwind: { _, _, _ in })
        #expect(pt.query(GuestPhysAddr(1 << 30))?.size == .size1G)
        #expect(pt.query(GuestPhysAddr((2 << 30) + 5))?.size == .size2M)
        #expect(pt.query(GuestPhysAddr((2 << 30) + (2 << 20)))?.size == .size4K)
        #expect(pt.translate(GuestPhysAddr((1 << 30) + 0x12345)) == HostPhysAddr((4 << 30) + 0x12345))
        #expect(pt.translate(GuestPhysAddr((2 << 30) + (2 << 20) + 4096)) == nil)
        // Misaligned host side: no huge leaf.
        try pt.mapRegion(GuestPhysAddr(8 << 30), size: 2 << 20, flags: .rw, allowHuge: true,
                         hpa: { HostPhysAddr($0.raw + 0x1000) }, unwind: { _, _, _ in })
        #expect(pt.query(GuestPhysAddr(8 << 30))?.size == .size4K)
        try pt.unmapRegion(GuestPhysAddr(0), size: 16 << 30, onLeaf: { _, _, _ in })
        #expect(pt.tableFrames == f.rootEntries / 512)
    }

    @Test(arguments: AnyFormat.allCases)
    func splitOnPartialUnmapAndProtect(_ which: AnyFormat) throws {
        try which.with { f in try split(f) }
    }
    func split<F: NestedPagingFormat>(_ f: F) throws {
        let hal = CountingHAL()
        let pt = try PageTable64(format: f, hal: hal)
        let g = GuestPhysAddr(1 << 30)
        try pt.mapRegion(g, size: 1 << 30, flags: .rwx, allowHuge: true, hpa: { HostPhysAddr($0.raw) },
                         unwind: { _, _, _ in })
        let before = pt.tableFrames
        // Unmap one 4 KiB page in the middle of the 1 GiB leaf: 1G → 2M table → 4K table.
        var removed: [(GuestPhysAddr, PageSize)] = []
        try pt.unmapRegion(g + 0x20_3000, size: 0x1000, onLeaf: { a, _, s in removed.append((a, s)) })
        #expect(removed.count == 1 && removed[0].0 == g + 0x20_3000 && removed[0].1 == .size4K)
        #expect(pt.tableFrames == before + 2)
        #expect(pt.translate(g + 0x20_3000) == nil)
        #expect(pt.translate(g + 0x20_2fff) == HostPhysAddr(g.raw + 0x20_2fff))
        #expect(pt.translate(g + 0x20_4000) == HostPhysAddr(g.raw + 0x20_4000))
        #expect(pt.query(g + 0x40_0000)?.size == .size2M)
        #expect(pt.query(g + 0x20_4000)?.size == .size4K)
        // The split was break-before-make: each replaced leaf was invalidated.
        #expect(hal.invalidations.count >= 2)
        // Protect 2 MiB + 4 KiB: the 2 MiB leaf is rewritten whole, the next one split.
        try pt.protectRegion(g + 0x40_0000, size: 0x20_1000, flags: .read)
        #expect(pt.query(g + 0x40_0000)?.size == .size2M)
        #expect(pt.query(g + 0x40_0000)?.flags.contains(.write) == false)
        #expect(pt.query(g + 0x60_0000)?.flags.contains(.write) == false)
        #expect(pt.query(g + 0x60_1000)?.flags.contains(.write) == true)
        #expect(pt.tableFrames == before + 3)
        // Unmapping everything frees every table but the root.
        try pt.unmapRegion(g, size: 1 << 30, onLeaf: { _, _, _ in })
        #expect(pt.tableFrames == f.rootEntries / 512)
        #expect(hal.framesInUse == f.rootEntries / 512)
    }

    @Test func splitFailsCleanlyWithoutMemory() throws {
        let hal = CountingHAL()
        let pt = try PageTable64(format: EPT(), hal: hal)
        try pt.mapRegion(GuestPhysAddr(1 << 30), size: 1 << 30, flags: .rw, allowHuge: true,
                         hpa: { HostPhysAddr($0.raw) }, unwind: { _, _, _ in })
        let frames = hal.framesInUse
        hal.failAfter = 1  // the split needs two frames
        #expect(throws: PagingError.noMemory(GuestPhysAddr((1 << 30) + 0x1000))) {
            try pt.unmapRegion(GuestPhysAddr((1 << 30) + 0x1000), size: 0x1000, onLeaf: { _, _, _ in })
        }
        #expect(hal.framesInUse == frames)
        #expect(pt.query(GuestPhysAddr((1 << 30) + 0x1000))?.size == .size1G)
    }

    @Test func deinitReturnsEveryTable() throws {
        let hal = CountingHAL()
        do {
            let pt = try PageTable64(format: GStage.sv48x4(), hal: hal)
            try pt.mapRegion(GuestPhysAddr(0x1234_5000), size: 64 << 20, flags: .rw, allowHuge: false,
                             hpa: { HostPhysAddr($0.raw) }, unwind: { _, _, _ in })
            #expect(hal.framesInUse > 4)
        }
        #expect(hal.framesInUse == 0)
    }

    @Test func sv39x4RootIs16KiBAligned() throws {
        let hal = CountingHAL()
        let pt = try PageTable64(format: GStage.sv39x4(), hal: hal)
        #expect(pt.root.isAligned(16 << 10))
        #expect(pt.tableFrames == 4)
        // GPA bits 40:39 select the upper root frames (the "x4").
        try pt.mapRegion(GuestPhysAddr(0x180_0000_0000), size: 4096, flags: .rw, allowHuge: false,
                         hpa: { _ in HostPhysAddr(0x9000) }, unwind: { _, _, _ in })
        #expect(pt.translate(GuestPhysAddr(0x180_0000_0010)) == HostPhysAddr(0x9010))
        let e = pt.walkEntries(GuestPhysAddr(0x180_0000_0000))
        #expect(e.count == 3)
        #expect(throws: PagingError.outOfRange(GuestPhysAddr(1 << 41))) {
            try pt.mapRegion(GuestPhysAddr(1 << 41), size: 4096, flags: .rw, allowHuge: false,
                             hpa: { _ in HostPhysAddr(0x9000) }, unwind: { _, _, _ in })
        }
    }

    @Test func mapOverPresentLeafFailsAndRollsBack() throws {
        let hal = CountingHAL()
        let pt = try PageTable64(format: NPT(), hal: hal)
        try pt.mapRegion(GuestPhysAddr(0x5000), size: 0x1000, flags: .rw, allowHuge: false,
                         hpa: { _ in HostPhysAddr(0x7000) }, unwind: { _, _, _ in })
        let frames = hal.framesInUse
        #expect(throws: PagingError.alreadyMapped(GuestPhysAddr(0x5000))) {
            try pt.mapRegion(GuestPhysAddr(0x1000), size: 0x8000, flags: .rw, allowHuge: false,
                             hpa: { HostPhysAddr($0.raw) }, unwind: { _, _, _ in })
        }
        #expect(pt.translate(GuestPhysAddr(0x1000)) == nil)
        #expect(pt.translate(GuestPhysAddr(0x5000)) == HostPhysAddr(0x7000))
        #expect(hal.framesInUse == frames)
    }
}
