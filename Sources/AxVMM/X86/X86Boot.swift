import AxAddrSpace
import CKVM
import KVM

#if arch(x86_64)
enum X86Boot {
    /// 64-bit long mode with paging, as the memtest guests and Linux's 64-bit boot protocol
    /// both start (Intel SDM vol. 3A §9.8.5): flat code segment `code` (L = 1) and data
    /// segment `data` in every data register, the GDT at `gdtBase`, CR0.PE|ET|NE|PG,
    /// CR4.PAE, EFER.LME|LMA, CR3 = `cr3`.
    static func enterLongMode(_ sregs: inout kvm_sregs, code selector: UInt16, data dataSelector: UInt16,
                              gdtBase: UInt64, gdtLimit: UInt16, cr3: UInt64) {
        var code = kvm_segment()
        code.base = 0; code.limit = 0xffff_ffff; code.selector = selector
        code.type = 11; code.present = 1; code.dpl = 0; code.db = 0; code.s = 1; code.l = 1; code.g = 1
        var data = code
        data.selector = dataSelector; data.type = 3; data.db = 1; data.l = 0
        sregs.cs = code
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.gdt.base = gdtBase
        sregs.gdt.limit = gdtLimit
        sregs.cr3 = cr3
        sregs.cr4 = 1 << 5                              // PAE
        sregs.cr0 = 1 << 0 | 1 << 4 | 1 << 5 | 1 << 31  // PE, ET, NE, PG
        sregs.efer = 1 << 8 | 1 << 10                   // LME, LMA
    }

    /// Writes the identity page tables and GDT (the parameter page is the caller's).
    static func writeBootData<F>(_ mem: GuestMemory<F>, params: GuestParams) throws(VMMError) {
        var words: [UInt64]
        // GDT (Intel SDM vol. 3A §3.4.5): null, 64-bit code (0x08), data (0x10), and the
        // same at DPL 3 — user code (0x18, selector 0x1b), user data (0x20, selector 0x23).
        words = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff, 0x00af_fb00_0000_ffff, 0x00cf_f300_0000_ffff]
        try mem.write(words, at: GuestPhysAddr(X86Layout.gdt))
        // PML4[0] → PDPT; PDPT[i] → PD i for each GiB up to the end of RAM (4 GiB at
        // least: the ROM and the hole); PDs: 2 MiB pages, P|RW|US|PS (0x87), no 1 GiB pages
        // (not every CPU model has them: qemu64 does not). User access is allowed so guests
        // can run their loops at CPL 3 (see guests/lib.inc).
        let directories = max(4, (params.ramEnd + (1 << 30) - 1) >> 30)
        try mem.write(X86Layout.pdpt | 7, at: GuestPhysAddr(X86Layout.pml4))
        words = (0..<directories).map { X86Layout.pageDirectories + $0 * 0x1000 | 7 }
        try mem.write(words, at: GuestPhysAddr(X86Layout.pdpt))
        words = (0..<directories * 512).map { $0 << 21 | 0x87 }
        try mem.write(words, at: GuestPhysAddr(X86Layout.pageDirectories))
    }

    /// Registers for the image's mode: 64-bit long mode with paging (CR0.PE|PG, CR4.PAE,
    /// EFER.LME|LMA) or real mode with CS = load address >> 4.
    static func setupVCPU(_ vcpu: VCPU, image: GuestImage, index: Int = 0) throws(KVMError) {
        var sregs = try vcpu.specialRegisters()
        var regs = kvm_regs()
        regs.rflags = 2
        switch image.mode {
        case .real:
            let seg = UInt16(image.loadAddress >> 4)
            var segment = sregs.cs
            segment.selector = seg
            segment.base = image.loadAddress
            sregs.cs = segment; sregs.ds = segment; sregs.es = segment
            sregs.ss = segment; sregs.fs = segment; sregs.gs = segment
            regs.rip = image.entryOffset
            regs.rsp = 0xfff0 - UInt64(index) * 0x100
        case .long:
            enterLongMode(&sregs, code: 0x08, data: 0x10, gdtBase: X86Layout.gdt, gdtLimit: 39, cr3: X86Layout.pml4)
            regs.rip = image.loadAddress + image.entryOffset
            regs.rsp = X86Layout.stackTop(vcpu: index)
            regs.rdi = X86Layout.params
            regs.rsi = UInt64(index)
        default:
            return  // not an x86 image: Runner refuses it before any vCPU is set up
        }
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters(regs)
    }
}
#endif
