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
    public static let maxVCPUs = GuestParams.maxVCPUs
    /// A read-only area (KVM_MEM_READONLY) holding "AXVMROM!", for the read-only test guest.
    /// Linux's virtio-mmio transports (`VirtioSet`): 0x200 apart in the MMIO hole, on IOAPIC
    /// pins 16-23 (above the ISA interrupts), level-triggered.
    public static let virtioBase: UInt64 = 0xd000_0000
    public static let virtioFirstGSI: UInt32 = 16
    public static let romBase: UInt64 = 0xe000_0000
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

extension GuestArch {
    /// x86_64: RAM from 0 with the PC's 32-bit hole (`X86Layout.ramRanges`), real- and
    /// long-mode memtest guests in guests/build/, Linux from a bzImage with ACPI.
    public static let x86_64 = GuestArch(
        name: "x86_64", ramBase: 0, romBase: X86Layout.romBase, pcName: "rip", guestDirectory: "guests/build/",
        imageModes: [.real, .long],
        linux: LinuxTraits(defaultCmdline: LinuxBootConfig.x86Cmdline, virtioNeedsACPI: true, bootsRawBinaries: false,
                          resamplesSerialIRQ: true, powerOff: "ACPI sleep state S5", reset: "KVM system event: reboot"),
        layout: { X86Layout.ramRanges(size: $0) },
        // RAM above 3 GiB moves past the 32-bit hole to 4 GiB.
        hole: { size in (X86Layout.lowRAMLimit, size > X86Layout.lowRAMLimit ? X86Layout.highRAMBase - X86Layout.lowRAMLimit : 0) })
}

extension GuestImage.Mode {
    /// x86 real mode: loaded at 0x10000 (CS = 0x1000).
    public static let real = GuestImage.Mode(rawValue: 16, name: "x86 real mode", loadAddress: 0x10000)
    /// x86 long mode: loaded at 1 MiB.
    public static let long = GuestImage.Mode(rawValue: 64, name: "x86 long mode", loadAddress: 0x10_0000)
}
