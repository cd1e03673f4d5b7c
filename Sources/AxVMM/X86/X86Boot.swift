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

/// Parameters the VMM gives a guest and results it reports, at `X86Layout.params`.
/// Offsets (u64 each): 0 magic, 8 memory size, 16 test base, 24 test size, 32 order
/// (0 sequential, 1 random, 2 strided), 40 stride in pages, 48 seed, 56 checksum (out),
/// 64 mismatches (out), 72 pages touched (out), 80 hole start, 88 hole size, 96 spacing,
/// 104 vCPUs, 112 mode (0 split: each vCPU its share of the test pages; 1 overlap: every
/// vCPU all of them, each in its own order). From 0x100, a 48-byte slot per vCPU
/// (`X86Layout.vcpuSlot`): its checksum, mismatches, pages (out), first page and index.
///
/// Test page `k` (0 ≤ k < test size / 4 KiB) is at `a = base + k · spacing · 4 KiB`, plus
/// the hole size if `a` ≥ the hole start (`testPageAddress`): the guests skip the 32-bit
/// hole exactly as the VMM lays RAM out, and with spacing > 1 (`--sparse`) the test pages
/// are spread over all of RAM.
public struct GuestParams: Sendable {
    public static let magic: UInt64 = 0x4d52_4150_4d56_5841  // "AXVMPARM"
    public enum Order: UInt64, Sendable, CaseIterable { case sequential = 0, random = 1, strided = 2 }
    /// How the vCPUs share the test pages.
    public enum Mode: UInt64, Sendable, CaseIterable { case split = 0, overlap = 1 }
    public var memorySize: UInt64
    public var testBase: UInt64
    public var testSize: UInt64
    public var order: Order
    public var stridePages: UInt64
    public var seed: UInt64
    /// Guest RAM is absent from `holeStart` for `holeSize` bytes (size 0: no hole).
    public var holeStart: UInt64 = X86Layout.lowRAMLimit
    public var holeSize: UInt64 = 0
    /// Pages from one test page to the next (1: contiguous).
    public var spacing: UInt64 = 1
    public var vcpus: UInt64 = 1
    public var mode: Mode = .split

    /// The test pages vCPU `i` works on (`vcpu_share` in guests/lib.inc): indexes
    /// `first..<first+count`.
    public func share(of i: UInt64) -> (first: UInt64, count: UInt64) {
        if mode == .overlap { return (0, testPages) }
        // The guest's mul/div: a 128-bit product divided by the vCPU count.
        let a = UInt64((UInt128(testPages) * UInt128(i)) / UInt128(vcpus))
        let b = UInt64((UInt128(testPages) * UInt128(i + 1)) / UInt128(vcpus))
        return (a, b - a)
    }

    public init(memorySize: UInt64, testBase: UInt64, testSize: UInt64, order: Order, stridePages: UInt64,
                seed: UInt64, spacing: UInt64 = 1) {
        self.memorySize = memorySize
        self.testBase = testBase
        self.testSize = testSize
        self.order = order
        self.stridePages = stridePages
        self.seed = seed
        self.spacing = spacing
        if memorySize > X86Layout.lowRAMLimit { holeSize = X86Layout.highRAMBase - X86Layout.lowRAMLimit }
    }

    public var testPages: UInt64 { testSize / 4096 }
    /// Where test page `k` lies (the formula the guests use).
    public func testPageAddress(_ k: UInt64) -> UInt64 {
        let a = testBase + k * spacing * 4096
        return holeSize > 0 && a >= holeStart ? a + holeSize : a
    }
    /// The highest guest-physical address of RAM, plus one.
    public var ramEnd: UInt64 { X86Layout.ramAddress(memorySize - 1) + 1 }
}

enum X86Boot {
    /// Writes the identity page tables and GDT, and the parameter page.
    static func writeBootData<F>(_ mem: GuestMemory<F>, params: GuestParams) throws(VMMError) {
        var words: [UInt64] = [GuestParams.magic, params.memorySize, params.testBase, params.testSize,
                               params.order.rawValue, params.stridePages, params.seed, 0, 0, 0,
                               params.holeStart, params.holeSize, params.spacing, params.vcpus,
                               params.mode.rawValue]
        try mem.write(words, at: GuestPhysAddr(X86Layout.params))
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
            for kp in [\kvm_sregs.cs, \.ds, \.es, \.ss, \.fs, \.gs] as [WritableKeyPath<kvm_sregs, kvm_segment>] {
                sregs[keyPath: kp].selector = seg
                sregs[keyPath: kp].base = image.loadAddress
            }
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
        }
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters(regs)
    }
}
