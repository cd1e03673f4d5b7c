import AxAddrSpace
import Testing

// Expected raw values are worked out from the manuals' bit tables (cited in the formats),
// not copied from the implementation.

@Suite struct EPTFormatTests {
    let ept = EPT()
    let pa = HostPhysAddr(0x1234_5000)

    @Test(arguments: [
        // flags, size, expected: R=1 W=2 X=4, WB=6<<3=0x30, UC=0, WC=1<<3=0x8, IPAT=0x40, PS=0x80
        (MappingFlags.read, PageSize.size4K, UInt64(0x1234_5000 | 0x1 | 0x30)),
        ([.read, .write], .size4K, 0x1234_5000 | 0x3 | 0x30),
        ([.read, .write, .execute], .size4K, 0x1234_5000 | 0x7 | 0x30),
        ([.read, .execute], .size2M, 0x1234_5000 | 0x5 | 0x30 | 0x80),
        ([.read, .write, .device], .size4K, 0x1234_5000 | 0x3 | 0x00 | 0x40),
        ([.read, .write, .uncached], .size1G, 0x1234_5000 | 0x3 | 0x08 | 0x80),
        ([.read, .execute, .user], .size4K, 0x1234_5000 | 0x5 | 0x30),  // no MBEC: bit 10 unused
    ] as [(MappingFlags, PageSize, UInt64)])
    func leafBits(flags: MappingFlags, size: PageSize, expected: UInt64) {
        #expect(ept.leafEntry(pa, flags: flags, size: size) == expected)
    }

    @Test func modeBasedExecuteSetsBit10AndRoundTrips() {
        let mbec = EPT(modeBasedExecute: true)
        let e = mbec.leafEntry(pa, flags: [.read, .execute, .user], size: .size4K)
        #expect(e == 0x1234_5000 | 0x5 | 0x30 | 0x400)
        #expect(mbec.leafFlags(e) == [.read, .execute, .user])
        #expect(mbec.isPresent(0x400))
        #expect(!EPT().isPresent(0x400))
    }

    @Test func flagsRoundTrip() {
        for f: MappingFlags in [.read, .rw, .rwx, [.read, .execute], [.read, .write, .device], [.read, .uncached]] {
            #expect(ept.leafFlags(ept.leafEntry(pa, flags: f, size: .size4K)) == f)
        }
    }

    @Test func tableAndEPTP() {
        #expect(ept.tableEntry(HostPhysAddr(0xabc000)) == 0xabc007)
        #expect(ept.address(0x8000_000f_ffff_f0ff) == HostPhysAddr(0xf_ffff_f000))
        // EPTP: WB (6) | (4 - 1) << 3 = 0x1e; A/D enable adds bit 6.
        #expect(ept.eptp(root: HostPhysAddr(0x5000)) == 0x501e)
        #expect(ept.eptp(root: HostPhysAddr(0x5000), accessedDirty: true) == 0x505e)
        #expect(ept.invalidation(for: GuestPhysAddr(0x1000), root: HostPhysAddr(0x5000)) == .inveptSingleContext(eptp: 0x501e))
    }

    @Test(arguments: [
        // qualification bits: 0 read, 1 write, 2 fetch; 3-5 permissions present
        (UInt64(0x1), AccessKind.read, NestedFaultKind.translation),
        (0x2, .write, .translation),
        (0x4, .execute, .translation),
        (0x2 | 0x8, .write, .permission),          // write to a read-only page
        (0x4 | 0x8 | 0x10, .execute, .permission),  // fetch from RW, non-X page
        (0x181, .read, .translation),              // bits 7/8: linear address valid
    ] as [(UInt64, AccessKind, NestedFaultKind)])
    func violationDecoder(q: UInt64, access: AccessKind, kind: NestedFaultKind) {
        let f = EPTViolation(qualification: q, guestPhysicalAddress: 0xfee0_0123).fault
        #expect(f == NestedPageFault(gpa: GuestPhysAddr(0xfee0_0123), access: access, kind: kind))
    }
}

@Suite struct NPTFormatTests {
    let npt = NPT()
    let pa = HostPhysAddr(0x20_0000)

    @Test(arguments: [
        // P=1 RW=2 US=4 PWT=8 PCD=0x10 PS=0x80 NX=1<<63
        (MappingFlags.read, PageSize.size4K, UInt64(0x20_0000 | 0x5) | 1 << 63),
        (.rw, .size4K, UInt64(0x20_0000 | 0x7) | 1 << 63),
        (.rwx, .size4K, 0x20_0000 | 0x7),
        (.rwx, .size2M, 0x20_0000 | 0x87),
        ([.read, .write, .device], .size4K, UInt64(0x20_0000 | 0x7 | 0x18) | 1 << 63),
        ([.read, .write, .uncached], .size4K, UInt64(0x20_0000 | 0x7 | 0x10) | 1 << 63),
    ] as [(MappingFlags, PageSize, UInt64)])
    func leafBits(flags: MappingFlags, size: PageSize, expected: UInt64) {
        let e = npt.leafEntry(pa, flags: flags, size: size)
        #expect(e == expected)
        #expect(npt.leafFlags(e) == flags)
    }

    @Test func tableEntryIsUserWritable() {
        #expect(npt.tableEntry(HostPhysAddr(0x3000)) == 0x3007)
        #expect(npt.nCR3(root: HostPhysAddr(0x7000)) == 0x7000)
    }

    @Test func npfDecoder() {
        // Not present, write, final translation (bit 32).
        let w = NPTFault(exitInfo1: 1 << 32 | 0x2 | 0x4, exitInfo2: 0x1_0000_0040).fault
        #expect(w == NestedPageFault(gpa: GuestPhysAddr(0x1_0000_0040), access: .write, kind: .translation))
        // Present + instruction fetch: NX violation.
        let x = NPTFault(exitInfo1: 1 << 32 | 0x11, exitInfo2: 0x5000).fault
        #expect(x == NestedPageFault(gpa: GuestPhysAddr(0x5000), access: .execute, kind: .permission))
        #expect(NPTFault(exitInfo1: 1 << 33, exitInfo2: 0).duringGuestPageWalk)
        #expect(NPTFault(exitInfo1: 1 << 33, exitInfo2: 0).fault.access == .read)
        // RSV (bit 3): a reserved bit in a nested entry; P is set as well.
        let rsv = NPTFault(exitInfo1: 1 << 32 | 0x8 | 0x1 | 0x2, exitInfo2: 0x5000).fault
        #expect(rsv.kind == .unrecoverable)
    }
}

@Suite struct Stage2FormatTests {
    let pa = HostPhysAddr(0x4000_0000)

    @Test(arguments: [
        // VALID=1, page=2, MemAttr<<2 (normal 0xf → 0x3c, NC 0x5 → 0x14, device nGnRE 0x1 → 0x4),
        // S2AP R=0x40 W=0x80, SH inner=0x300, AF=0x400, XN=1<<54
        (MappingFlags.read, PageSize.size4K, UInt64(0x4000_0000 | 0x3 | 0x3c | 0x40 | 0x300 | 0x400) | 1 << 54),
        (.rw, .size4K, UInt64(0x4000_0000 | 0x3 | 0x3c | 0xc0 | 0x300 | 0x400) | 1 << 54),
        (.rwx, .size4K, 0x4000_0000 | 0x3 | 0x3c | 0xc0 | 0x300 | 0x400),
        (.rwx, .size2M, 0x4000_0000 | 0x1 | 0x3c | 0xc0 | 0x300 | 0x400),  // block: bit 1 clear
        ([.read, .write, .device], .size4K, UInt64(0x4000_0000 | 0x3 | 0x04 | 0xc0 | 0x300 | 0x400) | 1 << 54),
        ([.read, .write, .uncached], .size4K, UInt64(0x4000_0000 | 0x3 | 0x14 | 0xc0 | 0x300 | 0x400) | 1 << 54),
        ([.read, .execute], .size1G, 0x4000_0000 | 0x1 | 0x3c | 0x40 | 0x300 | 0x400),
    ] as [(MappingFlags, PageSize, UInt64)])
    func descriptorBits(flags: MappingFlags, size: PageSize, expected: UInt64) throws {
        let s2 = try Stage2()
        let e = s2.leafEntry(pa, flags: flags, size: size)
        #expect(e == expected)
        // Decoding: write is S2AP[1] set (the Rust crate decoded it inverted), XN respected.
        #expect(s2.leafFlags(e) == flags)
    }

    @Test func customAttributeTable() throws {
        let s2 = try Stage2(attributes: Stage2Attributes(normal: 0b1010, device: 0b0000))  // WT, nGnRnE
        #expect(Stage2Descriptor(rawValue: s2.leafEntry(pa, flags: .rw, size: .size4K)).memAttr == 0b1010)
        let dev = s2.leafEntry(pa, flags: [.read, .device], size: .size4K)
        #expect(Stage2Descriptor(rawValue: dev).memAttr == 0b0000)
        #expect(s2.leafFlags(dev).contains(.device))
    }

    /// Linux KVM maps stage 2 device memory as Device-nGnRE (MemAttr 0b0001); so does the
    /// default attribute table.
    @Test func defaultDeviceMemoryIsNGnRE() throws {
        #expect(Stage2Attributes().device == 0b0001)
        let dev = try Stage2().leafEntry(pa, flags: [.read, .write, .device], size: .size4K)
        #expect(Stage2Descriptor(rawValue: dev).memAttr == 0b0001)
    }

    /// Status codes that are not translation, access-flag or permission faults: a missing
    /// page is not their cause (Arm ARM D13.2.37, DFSC/IFSC encodings).
    @Test(arguments: [
        (UInt64(0b000001), "address size, level 1"),
        (0b010000, "synchronous external abort"),
        (0b010101, "synchronous external abort on a walk, level 1"),
        (0b011000, "parity/ECC error"),
        (0b100001, "alignment fault"),
        (0b110000, "TLB conflict abort"),
        (0b110001, "unsupported atomic hardware update"),
    ])
    func nonTranslationAbortsAreUnrecoverable(dfsc: UInt64, what: String) {
        let data = Stage2Abort(esr: 0x24 << 26 | 1 << 25 | dfsc, hpfar: 0x48123 << 4, far: 0x123)
        #expect(data.fault?.kind == .unrecoverable, "\(what)")
        let fetch = Stage2Abort(esr: 0x20 << 26 | 1 << 25 | dfsc, hpfar: 0x48123 << 4, far: 0x123)
        #expect(fetch.fault?.kind == .unrecoverable, "\(what)")
    }

    /// FnV (ISS bit 10): FAR_EL2 is not valid, so the IPA is HPFAR's page alone.
    @Test func farNotValidDropsThePageOffset() {
        let a = Stage2Abort(esr: 0x24 << 26 | 1 << 25 | 1 << 10 | 0b000111, hpfar: 0x48123 << 4, far: 0xdead_beef)
        #expect(a.farNotValid)
        #expect(a.fault == NestedPageFault(gpa: GuestPhysAddr(0x4812_3000), access: .read, kind: .translation))
    }

    @Test func vtcrAndVttbr() throws {
        // 3 levels: T0SZ=25, SL0=1, IRGN/ORGN=01, SH=11, TG0=4K, PS=40 bits (2), RES1 bit 31.
        let l3 = try Stage2(levels: 3, vmid: 5)
        #expect(l3.vtcr(paRangeBits: 40) == 25 | 1 << 6 | 1 << 8 | 1 << 10 | 3 << 12 | 2 << 16 | 1 << 31)
        let l4 = try Stage2(levels: 4)
        #expect(l4.vtcr(paRangeBits: 48) == 16 | 2 << 6 | 1 << 8 | 1 << 10 | 3 << 12 | 5 << 16 | 1 << 31)
        #expect(l3.vttbr(root: HostPhysAddr(0x4008_0000)) == 0x0005_0000_4008_0000)
        #expect(l3.guestAddressLimit == 1 << 39)
        #expect(l4.guestAddressLimit == 1 << 48)
        #expect(throws: AddrSpaceError.unsupportedLevels(2)) { try Stage2(levels: 2) }
    }

    @Test func invalidationOperands() throws {
        let s2 = try Stage2(vmid: 3)
        #expect(s2.invalidation(for: GuestPhysAddr(0x8765_4321), root: pa) == .stage2IPA(operand: 0x87654, vmid: 3))
        #expect(s2.invalidation(for: nil, root: pa) == .stage2All(vmid: 3))
    }

    @Test func abortDecoder() {
        // EC 0x24 data abort, WnR (bit 6), DFSC 0b000111 translation level 3, ISV.
        let esr: UInt64 = 0x24 << 26 | 1 << 25 | 1 << 6 | 0b000111
        // HPFAR.FIPA (bits 43:4) = IPA >> 12 for IPA 0x4812_3000.
        let abort = Stage2Abort(esr: esr, hpfar: 0x48123 << 4, far: 0xffff_0000_0000_0abc)
        #expect(abort.level == 3)
        #expect(abort.fault == NestedPageFault(gpa: GuestPhysAddr(0x4812_3abc), access: .write, kind: .translation))
        // Instruction abort, permission fault level 2 (IFSC 0b001110).
        let ia = Stage2Abort(esr: 0x20 << 26 | 1 << 25 | 0b001110, hpfar: 0x50 << 4, far: 0x10)
        #expect(ia.fault == NestedPageFault(gpa: GuestPhysAddr(0x50010), access: .execute, kind: .permission))
        // Access-flag fault on a read.
        let af = Stage2Abort(esr: 0x24 << 26 | 0b001011, hpfar: 1 << 4, far: 0)
        #expect(af.fault?.kind == .accessFlag)
        #expect(af.fault?.access == .read)
        // An HVC (EC 0x16) is not an abort.
        #expect(Stage2Abort(esr: 0x16 << 26, hpfar: 0, far: 0).fault == nil)
    }
}

@Suite struct GStageFormatTests {
    let pa = HostPhysAddr(0x8020_0000)

    @Test(arguments: [
        // PPN = pa >> 12 at bit 10: 0x80200 << 10 = 0x2008_0000; V=1 R=2 W=4 X=8 U=0x10 A=0x40 D=0x80
        (MappingFlags.read, UInt64(0x2008_0000 | 0x1 | 0x2 | 0x10 | 0xc0)),
        (.rw, 0x2008_0000 | 0x1 | 0x6 | 0x10 | 0xc0),
        (.rwx, 0x2008_0000 | 0x1 | 0xe | 0x10 | 0xc0),
        ([.read, .execute], 0x2008_0000 | 0x1 | 0xa | 0x10 | 0xc0),
    ] as [(MappingFlags, UInt64)])
    func pteBits(flags: MappingFlags, expected: UInt64) {
        let g = GStage.sv39x4()
        let e = g.leafEntry(pa, flags: flags, size: .size4K)
        #expect(e == expected)
        #expect(g.leafFlags(e) == flags)
        #expect(g.address(e) == pa)
        #expect(!g.isTable(e))
    }

    @Test func rootAndHgatp() throws {
        let sv39 = GStage.sv39x4(vmid: 7)
        #expect(sv39.rootEntries == 2048)
        #expect(sv39.guestAddressLimit == 1 << 41)
        #expect(GStage.sv48x4().guestAddressLimit == 1 << 50)
        #expect(sv39.tableEntry(HostPhysAddr(0x8000_4000)) == 0x8000_4 << 10 | 1)
        // MODE 8, VMID 7 at bit 44, PPN of a 16 KiB-aligned root.
        #expect(sv39.hgatp(root: HostPhysAddr(0x8010_0000)) == UInt64(8) << 60 | 7 << 44 | 0x80100)
        #expect(GStage.sv48x4().hgatp(root: HostPhysAddr(0x8010_0000)) == UInt64(9) << 60 | 1 << 44 | 0x80100)
        #expect(GStage.sv57x4().guestAddressLimit == 1 << 59)
        #expect(GStage.sv57x4().hgatp(root: HostPhysAddr(0x8010_0000)) == UInt64(10) << 60 | 1 << 44 | 0x80100)
        #expect(try GStage(levels: 5).levels == 5)
        #expect(throws: AddrSpaceError.unsupportedLevels(6)) { try GStage(levels: 6) }
        #expect(throws: AddrSpaceError.unsupportedLevels(2)) { try GStage(levels: 2) }
        // HFENCE.GVMA takes GPA >> 2.
        #expect(sv39.invalidation(for: GuestPhysAddr(0x8000_1000), root: pa) == .gstageGPA(operand: 0x2000_0400, vmid: 7))
    }

    @Test func guestPageFaultDecoder() {
        // Store fault at GPA 0x8040_1236: htval = GPA >> 2, stval low bits 0b10.
        let f = GStageFault(scause: 23, htval: 0x8040_1236 >> 2, stval: 0x1_0000_0236).fault
        #expect(f == NestedPageFault(gpa: GuestPhysAddr(0x8040_1236), access: .write, kind: .unknown))
        #expect(GStageFault(scause: 20, htval: 0x100, stval: 0).fault?.access == .execute)
        #expect(GStageFault(scause: 21, htval: 0x100, stval: 0).fault?.access == .read)
        #expect(GStageFault(scause: 13, htval: 0, stval: 0).fault == nil)  // ordinary load page fault
    }
}

@Suite struct Stage2IPAWidthTests {
    @Test func ipaWidthSetsT0SZAndLimit() throws {
        // 4 levels, 44-bit IPA (Cortex-A57's PA range): T0SZ = 20, SL0 = 2, PS = 44 bits (4).
        let s = try Stage2(levels: 4, ipaBits: 44)
        #expect(s.vtcr(paRangeBits: 44) == 20 | 2 << 6 | 1 << 8 | 1 << 10 | 3 << 12 | 4 << 16 | 1 << 31)
        #expect(s.guestAddressLimit == 1 << 44)
        #expect(throws: AddrSpaceError.unsupportedIPABits(40, levels: 3)) { try Stage2(levels: 3, ipaBits: 40) }
        #expect(throws: AddrSpaceError.unsupportedIPABits(49, levels: 4)) { try Stage2(levels: 4, ipaBits: 49) }
    }
}

/// What the walker's fast paths assume of every format: a leaf is its address-less template
/// OR the encoded address, `address` inverts `encodeAddress`, and the entry-kind masks agree
/// with the entries the format builds.
@Suite struct FormatInvariantTests {
    static let flagSets: [MappingFlags] = [.read, .rw, .rwx, [.read, .execute], [.read, .write, .device],
                                           [.read, .uncached], [.read, .execute, .user]]

    func check<F: NestedPagingFormat>(_ f: F) {
        for pa in [HostPhysAddr(0x1000), HostPhysAddr(0x1234_5000), HostPhysAddr(0xf_ffff_e000)] {
            #expect(f.address(f.encodeAddress(pa)) == pa)
            #expect(f.isPresent(f.tableEntry(pa)) && f.isTable(f.tableEntry(pa)))
            for flags in Self.flagSets {
                for size in [PageSize.size4K, .size2M, .size1G] {
                    let e = f.leafEntry(pa, flags: flags, size: size)
                    #expect(e == f.leafEntry(HostPhysAddr(0), flags: flags, size: size) | f.encodeAddress(pa))
                    #expect(f.isPresent(e))
                    if size != .size4K { #expect(!f.isTable(e)) }
                }
            }
        }
        #expect(!f.isPresent(0))
    }

    @Test func ept() { check(EPT()); check(EPT(modeBasedExecute: true, normalMemoryType: .writeThrough)) }
    @Test func npt() { check(NPT()) }
    @Test func stage2() throws { check(try Stage2(levels: 3)); check(try Stage2(levels: 4, ipaBits: 44)) }
    @Test func gstage() { check(GStage.sv39x4()); check(GStage.sv48x4()); check(GStage.sv57x4()) }
}
