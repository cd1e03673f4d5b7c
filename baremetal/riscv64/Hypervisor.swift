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

let guestEntry: UInt64 = 0x4000_0000
let caseNames = ["", "fill-lazy", "fill-populated", "exec-lazy", "write-ro", "fetch-xn", "outside"]

nonisolated(unsafe) var hal: PoolHAL? = nil
nonisolated(unsafe) var space: AddrSpace<GStage, PoolHAL>? = nil
nonisolated(unsafe) var levels = 3
nonisolated(unsafe) var currentCase = 1
nonisolated(unsafe) var caseFaults = 0

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
        try s.mapLinear(GuestPhysAddr(guestEntry), to: HostPhysAddr(code), size: codeEnd - code, flags: [.read, .execute])
        try s.mapAlloc(GuestPhysAddr(0x4100_0000), size: 1 << 20, flags: .rw, populate: false)
        try s.mapAlloc(GuestPhysAddr(0x4200_0000), size: 1 << 20, flags: .rw, populate: true)
        try s.mapAlloc(GuestPhysAddr(0x4300_0000), size: 4096, flags: .rwx, populate: false)
        try s.mapAlloc(GuestPhysAddr(0x4400_0000), size: 4096, flags: .read, populate: true)
        try s.mapAlloc(GuestPhysAddr(0x4500_0000), size: 4096, flags: .rw, populate: true)
    } catch {
        fail("address space: \(error)")
    }
    space = s
    write_hgatp(format.hgatp(root: s.pageTableRoot))
    print("\(tag()) hgatp \(hex(format.hgatp(root: s.pageTableRoot))) (root 16 KiB aligned: \(s.pageTableRoot.isAligned(16384)))")
    currentCase = 1
    caseFaults = 0
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
        let c = Int(frame[11])
        print("\(tag()) case \(c) \(c < caseNames.count ? caseNames[c] : "?"): faults \(caseFaults) result \(hex(frame[12]))")
        currentCase = c + 1
        caseFaults = 0
        frame[35] += 4
        return
    }
    guard space != nil, let fault = GStageFault(scause: scause, htval: htval, stval: stval).fault else {
        fail("unexpected trap, scause \(hex(scause)) stval \(hex(stval)) at \(hex(frame[35]))")
    }
    let resolution = space?.handlePageFault(fault) ?? .notInArea
    let name = currentCase < caseNames.count ? caseNames[currentCase] : "?"
    switch resolution {
    case .mapped:
        caseFaults += 1
    case .alreadyMapped:
        break
    case .accessDenied:
        print("\(tag()) case \(currentCase) \(name): \(fault) -> \(resolution); not mapped")
        // Skip the store, or return from the call into non-executable memory.
        if scause == 20 { frame[35] = frame[1] } else { frame[35] += 4 }
    case .notInArea:
        print("\(tag()) case \(currentCase) \(name): \(fault) -> \(resolution); guest stopped")
        finishConfiguration(frame)
    case .outOfMemory:
        fail("out of frames at \(fault.gpa)")
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
