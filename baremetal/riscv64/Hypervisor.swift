// An HS-mode hypervisor in Embedded Swift: installs AxAddrSpace's G-stage tables (Sv39x4,
// then Sv48x4), runs the VS-mode guest of start.S, resolves its guest-page faults with the
// library and fences with HFENCE.GVMA as the library asks.

@_extern(c, "write_hgatp") func write_hgatp(_ v: UInt64)
@_extern(c, "hfence_gvma") func hfence_gvma(_ operand: UInt64, _ vmid: UInt64)
@_extern(c, "hfence_gvma_all") func hfence_gvma_all(_ vmid: UInt64)
@_extern(c, "enter_guest") func enter_guest(_ entry: UInt64)
@_extern(c, "sbi_shutdown") func sbi_shutdown(_ failure: UInt64)
@_extern(c, "guest_code_start") func guest_code_start() -> UInt64
@_extern(c, "guest_code_end") func guest_code_end() -> UInt64


nonisolated(unsafe) var hal: PoolHAL? = nil
nonisolated(unsafe) var space: AddrSpace<GStage, PoolHAL>? = nil
nonisolated(unsafe) var levels = 3
nonisolated(unsafe) var log = CaseLog()

func tag() -> String { levels == 3 ? "[sv39x4]" : "[sv48x4]" }

func fail(_ message: String) -> Never {
    print("\(tag()) FAIL: \(message)")
    sbi_shutdown(1)
    while true {}
}

func setUp() {
    guard let hal else { fail("no HAL") }
    let format = levels == 3 ? GStage.sv39x4(vmid: 1) : GStage.sv48x4(vmid: 1)
    let s: AddrSpace<GStage, PoolHAL>
    do {
        s = try AddrSpace(base: GuestPhysAddr(0), size: 1 << 32, format: format, hal: hal)
        let code = guest_code_start(), codeEnd = guest_code_end()
        try mapGuestAreas(s, code: code, codeEnd: codeEnd)
    } catch {
        fail("address space: \(error)")
    }
    space = s
    write_hgatp(format.hgatp(root: s.pageTableRoot))
    print("\(tag()) hgatp \(hex(format.hgatp(root: s.pageTableRoot))) (root 16 KiB aligned: \(s.pageTableRoot.isAligned(16384)))")
    log = CaseLog()
}

@_cdecl("hv_main")
func hvMain() {
    print("axvm bare-metal hypervisor: RISC-V HS-mode, AxAddrSpace G-stage")
    hal = PoolHAL { op in
        switch op {
        case let .gstageGPA(operand, vmid): hfence_gvma(operand, UInt64(vmid))
        case let .gstageAll(vmid): hfence_gvma_all(UInt64(vmid))
        default: break
        }
    }
    setUp()
    enter_guest(guestEntry)
}

/// Every trap from the guest. `frame`: x0…x31 (x0 unused), scause, stval, htval, sepc.
@_cdecl("hv_trap")
func hvTrap(_ frame: UnsafeMutablePointer<UInt64>) {
    let scause = frame[32], stval = frame[33], htval = frame[34]
    if scause == 10 {  // ecall from VS-mode: a0 = 1 "case done", a1 = case, a2 = result
        guard frame[10] == 1 else { fail("unknown hypercall \(frame[10])") }
        log.caseDone(tag(), Int(frame[11]), result: frame[12])
        frame[35] += 4
        return
    }
    guard space != nil, let fault = GStageFault(scause: scause, htval: htval, stval: stval).fault else {
        fail("unexpected trap, scause \(hex(scause)) stval \(hex(stval)) at \(hex(frame[35]))")
    }
    let resolution = space?.handlePageFault(fault) ?? .notInArea
    switch log.resolved(tag(), fault, resolution) {
    case .resume: break
    case .skipAccess:
        // Skip the store, or return from the call into non-executable memory.
        if scause == 20 { frame[35] = frame[1] } else { frame[35] += 4 }
    case .stopGuest: finishConfiguration(frame)
    case .outOfMemory: fail("out of frames at \(fault.gpa)")
    }
}

func finishConfiguration(_ frame: UnsafeMutablePointer<UInt64>) {
    space = nil
    print("\(tag()) frames in use after teardown: \(hal?.inUse ?? -1)")
    if levels == 4 {
        print("ALL DONE")
        sbi_shutdown(0)
    }
    levels = 4
    setUp()
    for i in 1..<32 { frame[i] = 0 }
    frame[35] = guestEntry
}
