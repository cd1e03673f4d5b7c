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
    /// Four page directories: an identity map of the first 4 GiB with 2 MiB pages.
    public static let pageDirectories: UInt64 = 0xb000
    public static let longModeStack: UInt64 = 0x8_0000
    /// KVM's three-page real-mode TSS area, below 4 GiB and outside RAM.
    public static let tss: UInt64 = 0xfffb_d000
}

/// Parameters the VMM gives a guest and results it reports, at `X86Layout.params`.
/// Offsets (u64 each): 0 magic, 8 memory size, 16 test base, 24 test size, 32 order
/// (0 sequential, 1 random, 2 strided), 40 stride in pages, 48 seed, 56 checksum (out),
/// 64 mismatches (out), 72 pages touched (out).
public struct GuestParams: Sendable {
    public static let magic: UInt64 = 0x4d52_4150_4d56_5841  // "AXVMPARM"
    public enum Order: UInt64, Sendable, CaseIterable { case sequential = 0, random = 1, strided = 2 }
    public var memorySize: UInt64
    public var testBase: UInt64
    public var testSize: UInt64
    public var order: Order
    public var stridePages: UInt64
    public var seed: UInt64
}

enum X86Boot {
    /// Writes the identity page tables and GDT, and the parameter page.
    static func writeBootData<F>(_ mem: GuestMemory<F>, params: GuestParams) throws(VMMError) {
        var words: [UInt64] = [GuestParams.magic, params.memorySize, params.testBase, params.testSize,
                               params.order.rawValue, params.stridePages, params.seed, 0, 0, 0]
        try mem.write(words, at: GuestPhysAddr(X86Layout.params))
        // GDT (Intel SDM vol. 3A §3.4.5): null, 64-bit code (0x08), data (0x10), and the
        // same at DPL 3 — user code (0x18, selector 0x1b), user data (0x20, selector 0x23).
        words = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff, 0x00af_fb00_0000_ffff, 0x00cf_f300_0000_ffff]
        try mem.write(words, at: GuestPhysAddr(X86Layout.gdt))
        // PML4[0] → PDPT; PDPT[0..3] → PD0..3; PDs: 2 MiB pages, P|RW|US|PS (0x87). User
        // access is allowed so guests can run their loops at CPL 3 (see guests/lib.inc).
        try mem.write(X86Layout.pdpt | 7, at: GuestPhysAddr(X86Layout.pml4))
        words = (0..<4).map { X86Layout.pageDirectories + $0 * 0x1000 | 7 }
        try mem.write(words, at: GuestPhysAddr(X86Layout.pdpt))
        words = (0..<2048).map { $0 << 21 | 0x87 }
        try mem.write(words, at: GuestPhysAddr(X86Layout.pageDirectories))
    }

    /// Registers for the image's mode: 64-bit long mode with paging (CR0.PE|PG, CR4.PAE,
    /// EFER.LME|LMA) or real mode with CS = load address >> 4.
    static func setupVCPU(_ vcpu: VCPU, image: GuestImage) throws(KVMError) {
        var sregs = try vcpu.specialRegisters()
        var regs = kvm_regs()
        regs.rflags = 2
        switch image.mode {
        case .real:
            let seg = UInt16(image.loadAddress >> 4)
            for kp in [\kvm_sregs.cs, \.ds, \.es, \.ss, \.fs, \.gs] as [WritableKeyPath<kvm_sregs, kvm_segment>] {
                sregs[keyPath: kp].selector = seg
                sregs[keyPath: kp].base = image.loadAddress
            }
            regs.rip = image.entryOffset
            regs.rsp = 0xfff0
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
            regs.rsp = X86Layout.longModeStack
            regs.rdi = X86Layout.params
        }
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters(regs)
    }
}
