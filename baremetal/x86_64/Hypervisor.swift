// An AMD SVM hypervisor in Embedded Swift: nested paging with AxAddrSpace's NPT format
// (N_CR3 = the library's root), a 32-bit guest whose #NPF exits (EXITINFO1/2) are decoded
// by the library and resolved by handlePageFault. Runs under QEMU's TCG (-cpu qemu64,+svm,+npt).

@_extern(c, "svm_run") func svm_run(_ vmcb: UInt64, _ regs: UnsafeMutablePointer<UInt64>)
@_extern(c, "svm_enable") func svm_enable(_ hsave: UInt64)
@_extern(c, "qemu_exit") func qemu_exit(_ value: UInt32)
@_extern(c, "guest_code_start") func guest_code_start() -> UInt64
@_extern(c, "guest_code_end") func guest_code_end() -> UInt64

/// VMCB field offsets, AMD APM vol. 2 appendix B (tables B-1 control area, B-2 state save).
enum VMCBField {
    static let interceptMisc1 = 0x00C   // bit 24 HLT, bit 31 shutdown
    static let interceptMisc2 = 0x010   // bit 0 VMRUN (required), bit 1 VMMCALL
    static let asid = 0x058
    static let tlbControl = 0x05C       // 1: flush all, 3: flush this guest's ASID
    static let exitCode = 0x070
    static let exitInfo1 = 0x078
    static let exitInfo2 = 0x080
    static let npEnable = 0x090
    static let nCR3 = 0x0B0
    static let es = 0x400, cs = 0x410, ss = 0x420, ds = 0x430, fs = 0x440, gs = 0x450
    static let gdtr = 0x460, ldtr = 0x470, idtr = 0x480, tr = 0x490
    static let efer = 0x4D0, cr4 = 0x548, cr3 = 0x550, cr0 = 0x558, dr7 = 0x560, dr6 = 0x568
    static let rflags = 0x570, rip = 0x578, rsp = 0x5D8, rax = 0x5F8, gPAT = 0x668
}

struct VMCB {
    let base: UnsafeMutableRawPointer
    func set<T: BitwiseCopyable>(_ offset: Int, _ value: T) { base.storeBytes(of: value, toByteOffset: offset, as: T.self) }
    func get(_ offset: Int) -> UInt64 { base.load(fromByteOffset: offset, as: UInt64.self) }
    /// A segment register: selector, attributes (APM's compressed form), limit, base.
    func segment(_ offset: Int, selector: UInt16, attributes: UInt16, limit: UInt32 = 0xffff_ffff) {
        set(offset, selector)
        set(offset + 2, attributes)
        set(offset + 4, limit)
        set(offset + 8, UInt64(0))
    }
}

nonisolated(unsafe) var hal: PoolHAL? = nil
nonisolated(unsafe) var space: AddrSpace<NPT, PoolHAL>? = nil
nonisolated(unsafe) var log = CaseLog()
nonisolated(unsafe) var flushPending = false
let tag = "[npt]"

func fail(_ message: String) -> Never {
    print("\(tag) FAIL: \(message)")
    qemu_exit(1)
    while true {}
}

@_cdecl("hv_main")
func hvMain() {
    print("axvm bare-metal hypervisor: x86_64 AMD SVM, AxAddrSpace NPT")
    // NPT has no by-address invalidation: the library's request becomes TLB_CONTROL = 3
    // (flush this guest's ASID) on the next VMRUN.
    let pool = PoolHAL { op in if case .nptFlushGuest = op { flushPending = true } }
    hal = pool
    guard let hsave = pool.allocFrame(), let vmcbPA = pool.allocFrame() else { fail("no frames for the VMCB") }
    for f in [hsave, vmcbPA] { pool.zeroFrame(f) }
    svm_enable(hsave.raw)
    let nCR3 = setUp(pool)
    guard let p = pool.physToVirt(vmcbPA).pointer else { fail("VMCB not mapped") }
    let vmcb = VMCB(base: p)
    vmcb.set(VMCBField.interceptMisc1, UInt32(1 << 24 | 1 << 31))
    vmcb.set(VMCBField.interceptMisc2, UInt32(1 << 0 | 1 << 1))
    vmcb.set(VMCBField.asid, UInt32(1))
    vmcb.set(VMCBField.tlbControl, UInt8(1))
    vmcb.set(VMCBField.npEnable, UInt64(1))
    vmcb.set(VMCBField.nCR3, nCR3)
    // 32-bit protected mode, flat segments, paging off: guest addresses are GPAs.
    vmcb.segment(VMCBField.cs, selector: 0x08, attributes: 0xC9B)
    for seg in [VMCBField.ds, VMCBField.es, VMCBField.ss, VMCBField.fs, VMCBField.gs] {
        vmcb.segment(seg, selector: 0x10, attributes: 0xC93)
    }
    vmcb.segment(VMCBField.gdtr, selector: 0, attributes: 0, limit: 0)
    vmcb.segment(VMCBField.idtr, selector: 0, attributes: 0, limit: 0)
    vmcb.segment(VMCBField.ldtr, selector: 0, attributes: 0x82, limit: 0xffff)
    vmcb.segment(VMCBField.tr, selector: 0, attributes: 0x8B, limit: 0xffff)
    vmcb.set(VMCBField.efer, UInt64(1 << 12))          // SVME: required in the guest's EFER
    vmcb.set(VMCBField.cr0, UInt64(0x11))               // PE | ET
    vmcb.set(VMCBField.cr4, UInt64(0))
    vmcb.set(VMCBField.cr3, UInt64(0))
    vmcb.set(VMCBField.dr6, UInt64(0xffff_0ff0))
    vmcb.set(VMCBField.dr7, UInt64(0x400))
    vmcb.set(VMCBField.rflags, UInt64(2))
    vmcb.set(VMCBField.rip, guestEntry)
    vmcb.set(VMCBField.rsp, guestStackTop)
    vmcb.set(VMCBField.gPAT, UInt64(0x0007_0406_0007_0406))
    print("\(tag) N_CR3 \(hex(nCR3))")

    var regs = [UInt64](repeating: 0, count: 15)   // rbx rcx rdx rsi rdi rbp r8..r15
    while true {
        regs.withUnsafeMutableBufferPointer { svm_run(vmcbPA.raw, $0.baseAddress.unsafelyUnwrapped) }
        vmcb.set(VMCBField.tlbControl, UInt8(0))
        let code = vmcb.get(VMCBField.exitCode)
        let rip = vmcb.get(VMCBField.rip)
        switch code {
        case 0x81:  // VMMCALL: eax = 1 "case done", ebx = case, ecx = result
            guard vmcb.get(VMCBField.rax) & 0xffff_ffff == 1 else { fail("unknown hypercall") }
            log.caseDone(tag, Int(regs[0] & 0xffff_ffff), result: regs[1] & 0xffff_ffff)
            vmcb.set(VMCBField.rip, rip + 3)
        case 0x400:  // #NPF
            let fault = NPTFault(exitInfo1: vmcb.get(VMCBField.exitInfo1), exitInfo2: vmcb.get(VMCBField.exitInfo2)).fault
            let resolution = space?.handlePageFault(fault) ?? .notInArea
            switch log.resolved(tag, fault, resolution) {
            case .resume: break
            case .skipAccess:
                // Skip the 2-byte store, or return from the jump into non-executable memory.
                vmcb.set(VMCBField.rip, fault.access == .execute ? regs[3] : rip + 2)
            case .stopGuest:
                finish(pool, vmcbPA: vmcbPA, hsave: hsave)
            case .outOfMemory: fail("out of frames at \(fault.gpa)")
            }
        default:
            fail("unexpected #VMEXIT \(hex(code)) at rip \(hex(rip)), EXITINFO1 \(hex(vmcb.get(VMCBField.exitInfo1)))")
        }
        if flushPending {
            vmcb.set(VMCBField.tlbControl, UInt8(3))
            flushPending = false
        }
    }
}

/// The guest's stack: one populated page of its own (the fill cases overwrite areas A and B).
let guestStackTop: UInt64 = 0x4600_1000

/// Builds the address space; only the global holds it, so `finish` can free it.
func setUp(_ pool: PoolHAL) -> UInt64 {
    do {
        let s = try AddrSpace(base: GuestPhysAddr(0), size: 1 << 32, format: NPT(), hal: pool)
        try mapGuestAreas(s, code: guest_code_start(), codeEnd: guest_code_end())
        try s.mapAlloc(GuestPhysAddr(guestStackTop - 4096), size: 4096, flags: .rw, populate: true)
        space = s
        return s.format.nCR3(root: s.pageTableRoot)
    } catch {
        fail("address space: \(error)")
    }
}

func finish(_ pool: PoolHAL, vmcbPA: HostPhysAddr, hsave: HostPhysAddr) -> Never {
    space = nil
    pool.deallocFrame(vmcbPA)
    pool.deallocFrame(hsave)
    print("\(tag) frames in use after teardown: \(pool.inUse)")
    print("ALL DONE")
    qemu_exit(0)
    while true {}
}
