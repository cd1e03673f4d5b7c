import AxAddrSpace
import CKVM
import KVM

/// Guest-physical layout of the boot structures (all in the first MiB of RAM).
public enum X86Layout {
    public static let gdt: UInt64 = 0x500
    /// The parameter/result page shared with `guests/` (see `GuestParams`).
    public static let params: UInt64 = 0x7000
    public static let pml4: UInt64 = 0x9000
    public static let pdpt: UInt64 = 0xa000
    /// Page directories (one per GiB, 2 MiB pages): an identity map of the first 4 GiB and
    /// of all RAM above. At most 65 of them (64 GiB of RAM ends at 65 GiB), 0x20000–0x61000:
    /// above a real-mode image (0x10000–0x1f000), below the stack.
    public static let pageDirectories: UInt64 = 0x2_0000
    public static let longModeStack: UInt64 = 0x8_0000
    /// vCPU i's stack top: 1 KiB each below `longModeStack` (the guests use a few hundred
    /// bytes), 64 vCPUs down to 0x7_0000, above the page directories.
    public static func stackTop(vcpu i: Int) -> UInt64 { longModeStack - UInt64(i) * 0x400 }
    /// vCPU slots in the parameter page: 48 bytes each from offset 0x100 (checksum,
    /// mismatches, pages, first page, index).
    public static func vcpuSlot(_ i: Int) -> UInt64 { params + 0x100 + UInt64(i) * 48 }
    public static let maxVCPUs = 64
    /// KVM's three-page real-mode TSS area, below 4 GiB and outside RAM.
    public static let tss: UInt64 = 0xfffb_d000
    /// RAM is laid out as on a PC: up to 3 GiB below the 32-bit hole, the rest from 4 GiB.
    /// The hole holds the ROM (0xe000_0000), the TSS and unmapped space (0xc000_0000, read
    /// by the `outside` guest).
    public static let lowRAMLimit: UInt64 = 0xc000_0000
    public static let highRAMBase: UInt64 = 1 << 32

    /// The RAM areas for `size` bytes of guest RAM: [0, min(size, 3 GiB)) and, for more,
    /// [4 GiB, 4 GiB + size − 3 GiB).
    public static func ramRanges(size: UInt64) -> [GuestPhysRange] {
        var out: [GuestPhysRange] = []
        if let low = GuestPhysRange(start: GuestPhysAddr(0), size: min(size, lowRAMLimit)) { out.append(low) }
        if size > lowRAMLimit, let high = GuestPhysRange(start: GuestPhysAddr(highRAMBase), size: size - lowRAMLimit) {
            out.append(high)
        }
        return out
    }
    /// The guest-physical address of byte `offset` of RAM (counted without the hole).
    public static func ramAddress(_ offset: UInt64) -> UInt64 {
        offset < lowRAMLimit ? offset : offset - lowRAMLimit + highRAMBase
    }
}

#if arch(x86_64)
enum X86Boot {
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
            var code = kvm_segment()
            code.base = 0; code.limit = 0xffff_ffff; code.selector = 0x08
            code.type = 11; code.present = 1; code.dpl = 0; code.db = 0; code.s = 1; code.l = 1; code.g = 1
            var data = code
            data.selector = 0x10; data.type = 3; data.db = 1; data.l = 0
            sregs.cs = code
            sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
            sregs.gdt.base = X86Layout.gdt
            sregs.gdt.limit = 39
            sregs.cr3 = X86Layout.pml4
            sregs.cr4 = 1 << 5                           // PAE
            sregs.cr0 = 1 << 0 | 1 << 4 | 1 << 5 | 1 << 31  // PE, ET, NE, PG
            sregs.efer = 1 << 8 | 1 << 10                // LME, LMA
            regs.rip = image.loadAddress + image.entryOffset
            regs.rsp = X86Layout.stackTop(vcpu: index)
            regs.rdi = X86Layout.params
            regs.rsi = UInt64(index)
        case .aarch64:
            return  // not an x86 image: Runner refuses it before any vCPU is set up
        }
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters(regs)
    }
}
#endif
