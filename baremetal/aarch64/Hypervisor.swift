// An EL2 hypervisor in Embedded Swift: installs AxAddrSpace's Stage 2 tables (3 levels,
// then 4), runs the EL1 guest of start.S, and resolves its stage-2 aborts with the library.

@_extern(c, "write_vtcr_el2") func write_vtcr_el2(_ v: UInt64)
@_extern(c, "write_vttbr_el2") func write_vttbr_el2(_ v: UInt64)
@_extern(c, "write_hcr_el2") func write_hcr_el2(_ v: UInt64)
@_extern(c, "tlbi_ipas2e1is") func tlbi_ipas2e1is(_ operand: UInt64)
@_extern(c, "tlbi_vmalls12e1is") func tlbi_vmalls12e1is()
@_extern(c, "enter_guest") func enter_guest(_ entry: UInt64, _ sp: UInt64)
@_extern(c, "semihost_exit") func semihost_exit(_ status: UInt64)
@_extern(c, "guest_code_start") func guest_code_start() -> UInt64
@_extern(c, "guest_code_end") func guest_code_end() -> UInt64


nonisolated(unsafe) var hal: PoolHAL? = nil
nonisolated(unsafe) var space: AddrSpace<Stage2, PoolHAL>? = nil
nonisolated(unsafe) var levels = 3
nonisolated(unsafe) var log = CaseLog()

func tag() -> String { "[stage2 L\(levels)]" }

func fail(_ message: String) -> Never {
    print("\(tag()) FAIL: \(message)")
    semihost_exit(1)
    while true {}
}

/// Builds the address space for `levels` and points VTTBR_EL2 at it.
func setUp() {
    guard let hal else { fail("no HAL") }
    let format: Stage2
    // Cortex-A57 implements 44-bit physical addresses: a wider IPA would fault.
    do { format = try Stage2(levels: levels, ipaBits: levels == 3 ? 39 : 44) } catch { fail("\(error)") }
    let s: AddrSpace<Stage2, PoolHAL>
    do {
        s = try AddrSpace(base: GuestPhysAddr(0), size: 1 << 32, format: format, hal: hal)
        let code = guest_code_start(), codeEnd = guest_code_end()
        try mapGuestAreas(s, code: code, codeEnd: codeEnd)
    } catch {
        fail("address space: \(error)")
    }
    space = s
    write_vtcr_el2(format.vtcr(paRangeBits: 44))
    write_vttbr_el2(format.vttbr(root: s.pageTableRoot))
    tlbi_vmalls12e1is()
    write_hcr_el2(1 << 31 | 1 << 0)   // RW: EL1 is AArch64; VM: stage 2 on
    print("\(tag()) VTCR_EL2 \(hex(format.vtcr(paRangeBits: 44))) VTTBR_EL2 \(hex(format.vttbr(root: s.pageTableRoot)))")
    log = CaseLog()
}

@_cdecl("hv_main")
func hvMain() {
    print("axvm bare-metal hypervisor: AArch64 EL2, AxAddrSpace Stage 2")
    hal = PoolHAL { op in
        switch op {
        case let .stage2IPA(operand, _): tlbi_ipas2e1is(operand)
        case .stage2All: tlbi_vmalls12e1is()
        default: break
        }
    }
    setUp()
    enter_guest(guestEntry, 0)
}

/// Every synchronous exception from the guest. `frame`: x0…x30, ESR, FAR, HPFAR, ELR.
@_cdecl("hv_trap")
func hvTrap(_ frame: UnsafeMutablePointer<UInt64>) {
    let esr = frame[31], far = frame[32], hpfar = frame[33]
    let ec = (esr >> 26) & 0x3f
    if ec == 0x16 {  // HVC: x0 = 1 "case done", x1 = case, x2 = result
        guard frame[0] == 1 else { fail("unknown hypercall \(frame[0])") }
        log.caseDone(tag(), Int(frame[1]), result: frame[2])
        return
    }
    guard space != nil, let fault = Stage2Abort(esr: esr, hpfar: hpfar, far: far).fault else {
        fail("unexpected exception, ESR_EL2 \(hex(esr)) at \(hex(frame[34]))")
    }
    // No local strong reference: finishConfiguration must be able to free the space.
    let resolution = space?.handlePageFault(fault) ?? .notInArea
    switch log.resolved(tag(), fault, resolution) {
    case .resume: break
    case .skipAccess:
        // Skip the store, or return from the call into non-executable memory.
        if ec == 0x24 { frame[34] += 4 } else { frame[34] = frame[30] }
    case .stopGuest: finishConfiguration(frame)
    case .outOfMemory: fail("out of frames at \(fault.gpa)")
    }
}

/// Tears the space down (every frame must come back), then runs the guest again with
/// 4-level tables, or ends.
func finishConfiguration(_ frame: UnsafeMutablePointer<UInt64>) {
    space = nil
    print("\(tag()) frames in use after teardown: \(hal?.inUse ?? -1)")
    if levels == 4 {
        print("ALL DONE")
        semihost_exit(0)
    }
    levels = 4
    setUp()
    for i in 0..<31 { frame[i] = 0 }
    frame[34] = guestEntry
}

@_cdecl("hv_unexpected")
func hvUnexpected(_ esr: UInt64, _ elr: UInt64) {
    fail("unexpected exception at EL2, ESR_EL2 \(hex(esr)), ELR \(hex(elr))")
}
