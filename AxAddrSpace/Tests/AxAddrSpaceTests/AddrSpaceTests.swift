import AxAddrSpace
import Testing

// The Rust crate's address_space.rs tests (base 0x10000, size 0x10000), plus what it lacks.
@Suite struct AddrSpaceTests {
    let base = GuestPhysAddr(0x10000)

    @Test func creationAndDrop() throws {
        let hal = CountingHAL()
        do {
            let s = try space(EPT(), hal, base: 0x10000, size: 0x10000)
            #expect(s.base == base && s.size == 0x10000 && s.end == GuestPhysAddr(0x20000))
            #expect(hal.allocations == 1)
            #expect(s.contains(GuestPhysAddr(0x18000), size: 0x8000))
            #expect(!s.contains(GuestPhysAddr(0xf000), size: 0x2000))
            #expect(!s.contains(GuestPhysAddr(0x1f000), size: 0x2000))
            #expect(!s.contains(GuestPhysAddr(0x10000), size: 0x10001))
        }
        #expect(hal.deallocations == 1)
    }

    @Test func linearTranslateAndLimit() throws {
        let hal = CountingHAL()
        let s = try space(EPT(), hal, base: 0x10000, size: 0x10000)
        try s.mapLinear(GuestPhysAddr(0x18000), to: HostPhysAddr(0x10000), size: 0x8000, flags: .rw)
        #expect(s.translate(GuestPhysAddr(0x18000)) == HostPhysAddr(0x10000))
        #expect(s.translate(GuestPhysAddr(0x19234)) == HostPhysAddr(0x11234))
        // Limit: bytes left in the area from the address, not the area's size.
        #expect(s.translateAndGetLimit(GuestPhysAddr(0x19000))! == (HostPhysAddr(0x11000), 0x7000))
        #expect(s.translate(GuestPhysAddr(0x10000)) == nil)
        #expect(s.translate(GuestPhysAddr(0x30000)) == nil)
        // Host above guest works too (the Rust crate panicked on the subtraction).
        try s.mapLinear(GuestPhysAddr(0x10000), to: HostPhysAddr(0x9_0000_0000), size: 0x1000, flags: .read)
        #expect(s.translate(GuestPhysAddr(0x10010)) == HostPhysAddr(0x9_0000_0010))
    }

    @Test func populateZeroesDistinctFrames() throws {
        let hal = CountingHAL()
        let s = try space(EPT(), hal, base: 0x10000, size: 0x10000)
        try s.mapAlloc(GuestPhysAddr(0x10000), size: 0x2000, flags: .rw, populate: true)
        let a = try #require(s.translate(GuestPhysAddr(0x10000)))
        let b = try #require(s.translate(GuestPhysAddr(0x11000)))
        #expect(a != b)
        #expect(hal.bytes(a).allSatisfy { $0 == 0 } && hal.bytes(b).allSatisfy { $0 == 0 })
        #expect(s.statistics.populatedFrames == 2)
        try s.unmap(GuestPhysAddr(0x10000), size: 0x2000)
        #expect(s.translate(GuestPhysAddr(0x10000)) == nil)
        #expect(s.statistics.populatedFrames == 0)
        #expect(hal.framesInUse == 1)
    }

    @Test func lazyFaultAllocatesOnceAndZeroes() throws {
        let hal = CountingHAL()
        let s = try space(EPT(), hal, base: 0x10000, size: 0x10000)
        try s.mapAlloc(GuestPhysAddr(0x10000), size: 0x4000, flags: .rw, populate: false)
        #expect(s.translate(GuestPhysAddr(0x10000)) == nil)
        let allocs = hal.allocations
        let r = s.handlePageFault(GuestPhysAddr(0x11234), access: .write)
        #expect(r == .mapped(GuestPhysRange(start: GuestPhysAddr(0x11000), end: GuestPhysAddr(0x12000)), pages: 1))
        let f = try #require(s.translate(GuestPhysAddr(0x11000)))
        #expect(hal.bytes(f).allSatisfy { $0 == 0 })
        // A second fault on the same page allocates nothing (the Rust crate leaked a frame).
        let n = hal.allocations
        #expect(s.handlePageFault(GuestPhysAddr(0x11000), access: .read) == .alreadyMapped)
        #expect(hal.allocations == n)
        #expect(hal.allocations > allocs)
        #expect(s.statistics.faults == 2 && s.statistics.faultsSpurious == 1)
    }

    @Test func faultOutcomes() throws {
        let hal = CountingHAL()
        let s = try space(try Stage2(), hal, base: 0x4000_0000, size: 0x100_0000)
        try s.mapAlloc(GuestPhysAddr(0x4000_0000), size: 0x10000, flags: .read, populate: false)
        try s.mapLinear(GuestPhysAddr(0x4100_0000 - 0x1000), to: HostPhysAddr(0x9000_0000), size: 0x1000, flags: .rw)
        #expect(s.handlePageFault(GuestPhysAddr(0x4000_0000), access: .write) == .accessDenied(allowed: .read))
        #expect(s.handlePageFault(GuestPhysAddr(0x4000_0000), access: .execute) == .accessDenied(allowed: .read))
        #expect(s.handlePageFault(GuestPhysAddr(0x4080_0000), access: .read) == .notInArea)
        #expect(s.handlePageFault(GuestPhysAddr(0x1000), access: .read) == .notInArea)
        #expect(s.handlePageFault(GuestPhysAddr(0x40ff_f000), access: .read) == .alreadyMapped)
        hal.failAfter = 0
        #expect(s.handlePageFault(GuestPhysAddr(0x4000_0000), access: .read) == .outOfMemory)
        hal.failAfter = nil
        #expect(s.statistics.faultsDenied == 2 && s.statistics.faultsNotInArea == 2 && s.statistics.faultsOutOfMemory == 1)
    }

    @Test func faultAroundIsAlignedToTheAreaAndClipped() throws {
        let hal = CountingHAL()
        let s = try space(EPT(), hal, base: 0, size: 1 << 30)
        // Area starts at 12 KiB, so a 16 KiB window is [12K, 28K), [28K, 44K), ...
        try s.mapAlloc(GuestPhysAddr(0x3000), size: 0x9000, flags: .rw, populate: false)
        let r = s.handlePageFault(GuestPhysAddr(0x8000), access: .read, faultAround: 0x4000)
        #expect(r == .mapped(GuestPhysRange(start: GuestPhysAddr(0x7000), end: GuestPhysAddr(0xb000)), pages: 4))
        let r2 = s.handlePageFault(GuestPhysAddr(0xb000), access: .read, faultAround: 0x4000)
        #expect(r2 == .mapped(GuestPhysRange(start: GuestPhysAddr(0xb000), end: GuestPhysAddr(0xc000)), pages: 1))
        #expect(s.statistics.populatedFrames == 5)
        // Out of memory halfway through a window: nothing stays.
        let used = hal.framesInUse
        hal.failAfter = 2
        #expect(s.handlePageFault(GuestPhysAddr(0x3000), access: .read, faultAround: 0x4000) == .outOfMemory)
        hal.failAfter = nil
        #expect(hal.framesInUse == used)
        #expect(s.translate(GuestPhysAddr(0x3000)) == nil)
    }

    @Test func badInputIsRejectedWithTheValue() throws {
        let hal = CountingHAL()
        let s = try space(EPT(), hal, base: 0x10000, size: 0x10000)
        try s.mapAlloc(GuestPhysAddr(0x12000), size: 0x2000, flags: .rw, populate: false)
        #expect(throws: AddrSpaceError.overlaps(GuestPhysRange(start: GuestPhysAddr(0x13000), size: 0x2000)!,
                                                existing: GuestPhysRange(start: GuestPhysAddr(0x12000), size: 0x2000)!)) {
            try s.mapLinear(GuestPhysAddr(0x13000), to: HostPhysAddr(0), size: 0x2000, flags: .rw)
        }
        #expect(throws: AddrSpaceError.notAligned(GuestPhysAddr(0x10800), size: 0x1000)) {
            try s.mapAlloc(GuestPhysAddr(0x10800), size: 0x1000, flags: .rw, populate: true)
        }
        #expect(throws: AddrSpaceError.notAligned(GuestPhysAddr(0x10000), size: 0x1001)) {
            try s.unmap(GuestPhysAddr(0x10000), size: 0x1001)
        }
        #expect(throws: AddrSpaceError.hostNotAligned(HostPhysAddr(0x10))) {
            try s.mapLinear(GuestPhysAddr(0x10000), to: HostPhysAddr(0x10), size: 0x1000, flags: .rw)
        }
        #expect(throws: AddrSpaceError.outOfSpace(GuestPhysRange(start: GuestPhysAddr(0x1f000), size: 0x2000)!,
                                                  space: s.range)) {
            try s.mapAlloc(GuestPhysAddr(0x1f000), size: 0x2000, flags: .rw, populate: false)
        }
        #expect(throws: AddrSpaceError.emptyRange(GuestPhysAddr(0x10000), size: 0)) {
            try s.mapAlloc(GuestPhysAddr(0x10000), size: 0, flags: .rw, populate: false)
        }
        #expect(throws: AddrSpaceError.invalidFlags(.write)) {
            try s.mapAlloc(GuestPhysAddr(0x10000), size: 0x1000, flags: .write, populate: false)
        }
        #expect(throws: AddrSpaceError.invalidFlags([])) {
            try s.protect(GuestPhysAddr(0x12000), size: 0x1000, flags: [])
        }
        #expect(throws: AddrSpaceError.outOfSpace(GuestPhysRange(start: GuestPhysAddr(0), size: 1 << 48)!,
                                                  space: GuestPhysRange(start: GuestPhysAddr(0), size: 1 << 39)!)) {
            _ = try AddrSpace(base: GuestPhysAddr(0), size: 1 << 48, format: try Stage2(levels: 3), hal: hal)
        }
        #expect(throws: AddrSpaceError.emptyRange(GuestPhysAddr(0xffff_ffff_ffff_f000), size: 0x2000)) {
            try s.unmap(GuestPhysAddr(0xffff_ffff_ffff_f000), size: 0x2000)
        }
        #expect(AddrSpaceError.notPopulated(GuestPhysAddr(0x12000)).description
            == "GPA:0x12000 is in a lazy area and not populated yet")
        #expect(s.areas.count == 1)
    }

    @Test func unmapSplitsAreasAndProtectChangesFaults() throws {
        let hal = CountingHAL()
        let s = try space(NPT(), hal, base: 0, size: 1 << 32)
        try s.mapLinear(GuestPhysAddr(0), to: HostPhysAddr(1 << 30), size: 1 << 30, flags: .rwx)
        try s.unmap(GuestPhysAddr(0x20_0000), size: 0x1000)
        #expect(s.areas.count == 2)
        #expect(s.areas[1].backend == .linear(hostStart: HostPhysAddr((1 << 30) + 0x20_1000)))
        #expect(s.translate(GuestPhysAddr(0x20_1000)) == HostPhysAddr((1 << 30) + 0x20_1000))
        #expect(s.translate(GuestPhysAddr(0x20_0000)) == nil)
        try s.mapAlloc(GuestPhysAddr(1 << 31), size: 0x4000, flags: .rw, populate: false)
        try s.protect(GuestPhysAddr(1 << 31), size: 0x2000, flags: .read)
        #expect(s.handlePageFault(GuestPhysAddr(1 << 31), access: .write) == .accessDenied(allowed: .read))
        #expect(s.handlePageFault(GuestPhysAddr((1 << 31) + 0x2000), access: .write).isResolved)
        #expect(s.areas.count == 4)
        s.clear()
        #expect(hal.framesInUse == 1 && s.areas.isEmpty)
    }

    @Test func buffersAndAccessorCrossPages() throws {
        let hal = CountingHAL()
        let s = try space(GStage.sv39x4(), hal, base: 0x8000_0000, size: 0x10_0000)
        try s.mapAlloc(GuestPhysAddr(0x8000_0000), size: 0x3000, flags: .rw, populate: true)
        let bufs = try s.translatedBuffers(GuestPhysAddr(0x8000_0f00), length: 0x1100)
        #expect(bufs.reduce(0) { $0 + $1.count } == 0x1100)
        try s.writeObject(UInt64(0x1122_3344_5566_7788), at: GuestPhysAddr(0x8000_0ffc))  // straddles pages
        #expect(try s.readObject(GuestPhysAddr(0x8000_0ffc), as: UInt64.self) == 0x1122_3344_5566_7788)
        #expect(try s.readObject(GuestPhysAddr(0x8000_1000), as: UInt32.self) == 0x1122_3344)
        let msg: [UInt8] = Array(0..<200)
        try msg.withUnsafeBytes { try s.write(GuestPhysAddr(0x8000_1f80), from: $0) }
        var back = [UInt8](repeating: 0, count: 200)
        try back.withUnsafeMutableBytes { try s.read(GuestPhysAddr(0x8000_1f80), into: $0) }
        #expect(back == msg)
        // Errors, not crashes: a lazy page not populated yet, a hole, past the area's end.
        try s.mapAlloc(GuestPhysAddr(0x8001_0000), size: 0x1000, flags: .rw, populate: false)
        #expect(throws: AddrSpaceError.notPopulated(GuestPhysAddr(0x8001_0000))) {
            _ = try s.translatedBuffers(GuestPhysAddr(0x8001_0000), length: 8)
        }
        #expect(throws: AddrSpaceError.notMapped(GuestPhysAddr(0x8000_3000))) {
            _ = try s.translatedBuffers(GuestPhysAddr(0x8000_2000), length: 0x1001)
        }
        #expect(throws: AddrSpaceError.notMapped(GuestPhysAddr(0x7000_0000))) {
            _ = try s.readObject(GuestPhysAddr(0x7000_0000), as: UInt8.self)
        }
    }

    @Test func depopulateMakesTheNextTouchFaultAgain() throws {
        let hal = CountingHAL()
        let s = try space(EPT(), hal)
        try s.mapAlloc(GuestPhysAddr(0x10_0000), size: 0x10_0000, flags: .rw, populate: false)
        _ = s.handlePageFault(GuestPhysAddr(0x10_0000), access: .write, faultAround: 0x10_0000)
        #expect(s.statistics.populatedFrames == 256)
        try s.writeObject(UInt32(7), at: GuestPhysAddr(0x10_5000))
        #expect(try s.depopulate(GuestPhysAddr(0x10_4000), size: 0x4000) == 4)
        #expect(s.statistics.populatedFrames == 252)
        #expect(s.handlePageFault(GuestPhysAddr(0x10_5000), access: .read).isResolved)
        #expect(try s.readObject(GuestPhysAddr(0x10_5000), as: UInt32.self) == 0)
    }

    @Test func riscvAsksForFenceAfterPopulatingAndOthersDoNot() throws {
        let hal = CountingHAL()
        let rv = try space(GStage.sv39x4(vmid: 2), hal, base: 0x8000_0000, size: 0x10_0000)
        try rv.mapAlloc(GuestPhysAddr(0x8000_0000), size: 0x1000, flags: .rw, populate: false)
        _ = rv.handlePageFault(GuestPhysAddr(0x8000_0000), access: .read)
        #expect(hal.invalidations == [.gstageGPA(operand: 0x8000_0000 >> 2, vmid: 2)])
        hal.resetInvalidations()
        let arm = try space(try Stage2(vmid: 4), hal, base: 0x4000_0000, size: 0x10_0000)
        try arm.mapAlloc(GuestPhysAddr(0x4000_0000), size: 0x1000, flags: .rw, populate: false)
        _ = arm.handlePageFault(GuestPhysAddr(0x4000_0000), access: .read)
        #expect(hal.invalidations.isEmpty)
        try arm.unmap(GuestPhysAddr(0x4000_0000), size: 0x1000)
        #expect(hal.invalidations == [.stage2IPA(operand: 0x40000, vmid: 4)])
    }
}

/// A fault record whose cause is not memory must not populate anything.
@Suite struct UnrecoverableFaultTests {
    @Test func externalAbortOnALazyPagePopulatesNothing() throws {
        let hal = CountingHAL()
        let s = try AddrSpace(base: GuestPhysAddr(0x4000_0000), size: 16 << 20, format: try Stage2(), hal: hal)
        try s.mapAlloc(GuestPhysAddr(0x4000_0000), size: 4 << 20, flags: .rw, populate: false)
        let frames = hal.framesInUse
        // Synchronous external abort (DFSC 0b010000) on a read of the lazy page 0x4010_0000.
        let abort = Stage2Abort(esr: 0x24 << 26 | 1 << 25 | 0b010000, hpfar: 0x40100 << 4, far: 0x40)
        let fault = try #require(abort.fault)
        #expect(s.handlePageFault(fault, faultAround: 64 << 10) == .unrecoverable)
        #expect(!s.handlePageFault(fault).isResolved)
        #expect(s.translate(GuestPhysAddr(0x4010_0000)) == nil)
        #expect(hal.framesInUse == frames)
        #expect(s.statistics.faultsUnrecoverable == 2)
        // The same page with a translation fault is populated.
        let missing = Stage2Abort(esr: 0x24 << 26 | 1 << 25 | 0b000111, hpfar: 0x40100 << 4, far: 0x40)
        #expect(s.handlePageFault(try #require(missing.fault)).isResolved)
    }

    /// RISC-V cannot tell a missing page from a permission fault: `.unknown` records are
    /// resolved from the space's own tables.
    @Test func unknownKindIsResolvedFromTheTables() throws {
        let hal = CountingHAL()
        let s = try AddrSpace(base: GuestPhysAddr(0x8000_0000), size: 16 << 20, format: GStage.sv39x4(), hal: hal)
        try s.mapAlloc(GuestPhysAddr(0x8000_0000), size: 4 << 20, flags: .rw, populate: false)
        let load = try #require(GStageFault(scause: 21, htval: 0x8000_1000 >> 2, stval: 0).fault)
        #expect(load.kind == .unknown)
        #expect(s.handlePageFault(load) == .mapped(GuestPhysRange(start: GuestPhysAddr(0x8000_1000), size: 4096)!, pages: 1))
        let fetch = try #require(GStageFault(scause: 20, htval: 0x8000_1000 >> 2, stval: 0).fault)
        #expect(s.handlePageFault(fetch) == .accessDenied(allowed: .rw))
    }
}
