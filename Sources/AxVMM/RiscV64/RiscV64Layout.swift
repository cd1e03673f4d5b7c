import AxAddrSpace

/// Guest-physical layout of a riscv64 guest (guests/riscv64/defs.inc is the guest's side):
/// devices by MMIO below 2 GiB, RAM from 2 GiB as one area (QEMU virt's DRAM base).
public enum RiscV64Layout {
    public static let ramBase: UInt64 = 0x8000_0000
    /// The parameter/result page (`GuestParams`), as on the other architectures at RAM + 0x7000.
    public static let params: UInt64 = ramBase + 0x7000
    /// The image is loaded at RAM + 1 MiB.
    public static let imageBase: UInt64 = ramBase + 0x10_0000
    public static let stackBase: UInt64 = ramBase + 0x8_0000
    /// Hart i's stack top: 1 KiB each below `stackBase`.
    public static func stackTop(vcpu i: Int) -> UInt64 { stackBase - UInt64(i) * 0x400 }
    public static func vcpuSlot(_ i: Int) -> UInt64 { params + 0x100 + UInt64(i) * 48 }
    /// The memtest console: a byte stored at offset 0 is sent; every register reads 0.
    public static let uart: UInt64 = 0x1000_0000
    public static let uartSize: UInt64 = 0x1000
    /// A 32-bit store ends this hart with the low byte as its exit code.
    public static let exitDevice: UInt64 = 0x1010_0000
    /// A store asks the VMM to reclaim the test region (retouch).
    public static let reclaimDevice: UInt64 = 0x1010_0008
    /// The read-only area ("AXVMROM!") and an address with nothing behind it.
    public static let romBase: UInt64 = 0x3000_0000
    public static let unmapped: UInt64 = 0x2000_0000
    /// One RAM area, [2 GiB, 2 GiB + size).
    public static func ramRanges(size: UInt64) -> [GuestPhysRange] {
        GuestPhysRange(start: GuestPhysAddr(ramBase), size: size).map { [$0] } ?? []
    }
}

extension GuestArch {
    /// riscv64: one RAM area from 2 GiB, S-mode memtest guests in guests/build/riscv64/,
    /// Linux from a riscv64 Image with a device tree.
    public static let riscv64 = GuestArch(
        name: "riscv64", ramBase: RiscV64Layout.ramBase, romBase: RiscV64Layout.romBase, pcName: "pc",
        guestDirectory: "guests/build/riscv64/", imageModes: [.riscv64],
        linux: LinuxTraits(defaultCmdline: "console=ttyS0 panic=-1 quiet", virtioNeedsACPI: false, bootsRawBinaries: false,
                          resamplesSerialIRQ: false, powerOff: "SBI system reset: shutdown", reset: "SBI system reset: reboot"),
        layout: { RiscV64Layout.ramRanges(size: $0) })
}

extension GuestImage.Mode {
    /// riscv64 S-mode (VS-mode under KVM), no translation: loaded at RAM + 1 MiB.
    public static let riscv64 = GuestImage.Mode(rawValue: 0x5264, name: "riscv64 S-mode", loadAddress: RiscV64Layout.imageBase)
}

/// KVM_{GET,SET}_ONE_REG register ids of riscv64 (arch/riscv/include/uapi/asm/kvm.h): the
/// type in bits 24-31, the index of the field in its structure (in unsigned longs) below.
public enum RiscV64Register {
    static let riscv: UInt64 = 0x8000_0000_0000_0000
    static let sizeU64: UInt64 = 0x0030_0000_0000_0000
    static func id(type: UInt64, index: UInt64) -> UInt64 { riscv | sizeU64 | type << 24 | index }
    /// struct kvm_riscv_config: isa (the single-letter extensions as a bitmap, bit 0 = 'a').
    public static let isa = id(type: 1, index: 0)
    /// struct kvm_riscv_core: regs (pc, then x1..x31), then mode.
    public static let pc = id(type: 2, index: 0)
    /// General register x`n` (1...31): ra = x1, sp = x2, a0 = x10, a1 = x11.
    public static func x(_ n: Int) -> UInt64 { id(type: 2, index: UInt64(n)) }
    public static let sp = x(2)
    public static let a0 = x(10)
    public static let a1 = x(11)
    /// The privilege mode the vCPU runs in: 1 S (KVM_RISCV_MODE_S), 0 U.
    public static let mode = id(type: 2, index: 32)
    /// struct kvm_riscv_csr (the guest's VS-mode CSRs).
    public static let sstatus = id(type: 3, index: 0)
    public static let stvec = id(type: 3, index: 2)
    public static let sepc = id(type: 3, index: 4)
    public static let scause = id(type: 3, index: 5)
    public static let stval = id(type: 3, index: 6)
    public static let satp = id(type: 3, index: 8)
    /// KVM_REG_RISCV_SBI_EXT (type 8), single subtype: 1 turns an SBI extension on for the
    /// hart (before it first runs); `sbiDebugConsole` is KVM_RISCV_SBI_EXT_DBCN (Linux 6.8).
    public static func sbiExtension(_ n: UInt64) -> UInt64 { id(type: 8, index: n) }
    public static let sbiDebugConsole: UInt64 = 9
}
