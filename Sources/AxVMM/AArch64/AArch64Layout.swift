import AxAddrSpace

/// Guest-physical layout of an AArch64 guest (guests/aarch64/defs.inc is the guest's side):
/// devices by MMIO in the first GiB, RAM from 1 GiB as one area (QEMU virt's layout).
public enum AArch64Layout {
    public static let ramBase: UInt64 = 0x4000_0000
    /// The parameter/result page (`GuestParams`), as on x86 at RAM + 0x7000.
    public static let params: UInt64 = ramBase + 0x7000
    /// The stage 1 identity map: one level-1 table of 1 GiB blocks (512 entries).
    public static let stage1Table: UInt64 = ramBase + 0x9000
    /// The image is loaded at RAM + 1 MiB.
    public static let imageBase: UInt64 = ramBase + 0x10_0000
    public static let stackBase: UInt64 = ramBase + 0x8_0000
    /// vCPU i's stack top: 1 KiB each below `stackBase`.
    public static func stackTop(vcpu i: Int) -> UInt64 { stackBase - UInt64(i) * 0x400 }
    public static func vcpuSlot(_ i: Int) -> UInt64 { params + 0x100 + UInt64(i) * 48 }
    /// PL011-style UART: a byte written to DR (offset 0) is sent; FR (0x18) reads 0.
    public static let uart: UInt64 = 0x0900_0000
    public static let uartSize: UInt64 = 0x1000
    /// A 32-bit store ends this vCPU with the low byte as its exit code.
    public static let exitDevice: UInt64 = 0x0910_0000
    /// A store asks the VMM to reclaim the test region (retouch).
    public static let reclaimDevice: UInt64 = 0x0910_0008
    /// The read-only area ("AXVMROM!") and an address with nothing behind it.
    public static let romBase: UInt64 = 0x3000_0000
    public static let unmapped: UInt64 = 0x2000_0000
    /// One RAM area, [1 GiB, 1 GiB + size).
    public static func ramRanges(size: UInt64) -> [GuestPhysRange] {
        GuestPhysRange(start: GuestPhysAddr(ramBase), size: size).map { [$0] } ?? []
    }

    /// The level-1 table of the guest's stage 1 identity map (VMSAv8-64, 4 KiB granule,
    /// 39-bit VA: TCR_EL1.T0SZ = 25, walks start at level 1): entry i maps GiB i as a block.
    /// GiB 0 (devices, ROM): Device-nGnRnE (MAIR attr 0), execute-never; RAM GiBs: Normal
    /// write-back (attr 1), inner shareable. Access flag set everywhere (no AF faults).
    public static func stage1Entries(ramEnd: UInt64) -> [UInt64] {
        let blocks = min(512, (ramEnd + (1 << 30) - 1) >> 30)
        let valid: UInt64 = 0b01, af: UInt64 = 1 << 10, innerShareable: UInt64 = 3 << 8
        let pxn: UInt64 = 1 << 53, uxn: UInt64 = 1 << 54
        return (0..<blocks).map { i in
            i == 0 ? valid | af | pxn | uxn                                  // attr 0: Device
                   : i << 30 | valid | 1 << 2 | innerShareable | af          // attr 1: Normal WB
        }
    }
}

/// The system register values that turn the guest's MMU on over `stage1Entries`.
public enum AArch64SystemRegisters {
    /// MAIR_EL1: attr 0 = 0x00 (Device-nGnRnE), attr 1 = 0xff (Normal, inner/outer WB RW-allocate).
    public static let mair: UInt64 = 0xff << 8
    /// TCR_EL1: T0SZ 25 (39-bit VA), IRGN0/ORGN0 write-back, SH0 inner shareable, TG0 4 KiB,
    /// EPD1 (no TTBR1 walks), IPS 40-bit (0b010).
    public static let tcr: UInt64 = 25 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23 | 0b010 << 32
    /// SCTLR_EL1: M (MMU), C (data cache), I (instruction cache), plus the RES1 bits
    /// (29, 28, 23, 22, 20, 11).
    public static let sctlr: UInt64 = 0x30d0_0800 | 1 << 0 | 1 << 2 | 1 << 12
    /// PSTATE: EL1h (SPSel = 1), D, A, I, F masked.
    public static let pstate: UInt64 = 0x3c5
}

/// KVM_{GET,SET}_ONE_REG register ids of arm64 (Documentation/virt/kvm/api.rst, "ARM64
/// registers"): core registers by their offset in struct kvm_regs in 32-bit words, system
/// registers by op0:op1:CRn:CRm:op2.
public enum AArch64Register {
    static let arm64: UInt64 = 0x6000_0000_0000_0000
    static let sizeU64: UInt64 = 0x0030_0000_0000_0000
    static let core: UInt64 = 0x0010 << 16
    static let sysreg: UInt64 = 0x0013 << 16

    /// General register x`n` (struct user_pt_regs.regs[n]).
    public static func x(_ n: Int) -> UInt64 { arm64 | sizeU64 | core | UInt64(n * 2) }
    public static let sp = arm64 | sizeU64 | core | 62       // regs.sp (SP_EL0)
    public static let pc = arm64 | sizeU64 | core | 64
    public static let pstate = arm64 | sizeU64 | core | 66
    public static let spEL1 = arm64 | sizeU64 | core | 68    // kvm_regs.sp_el1
    public static func system(op0: UInt64, op1: UInt64, crn: UInt64, crm: UInt64, op2: UInt64) -> UInt64 {
        arm64 | sizeU64 | sysreg | op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2
    }
    public static let sctlrEL1 = system(op0: 3, op1: 0, crn: 1, crm: 0, op2: 0)
    /// MPIDR_EL1: the vCPU's affinity, which KVM derives from its id (a CPU's `reg` in the
    /// device tree).
    public static let mpidrEL1 = system(op0: 3, op1: 0, crn: 0, crm: 0, op2: 5)
    public static let ttbr0EL1 = system(op0: 3, op1: 0, crn: 2, crm: 0, op2: 0)
    public static let tcrEL1 = system(op0: 3, op1: 0, crn: 2, crm: 0, op2: 2)
    public static let mairEL1 = system(op0: 3, op1: 0, crn: 10, crm: 2, op2: 0)
    public static let esrEL1 = system(op0: 3, op1: 0, crn: 5, crm: 2, op2: 0)
}

extension GuestArch {
    /// arm64: one RAM area from 1 GiB, EL1 memtest guests in guests/build/aarch64/, Linux
    /// from an arm64 Image (or `--raw`) with a device tree.
    public static let aarch64 = GuestArch(
        name: "aarch64", ramBase: AArch64Layout.ramBase, romBase: AArch64Layout.romBase, pcName: "pc",
        guestDirectory: "guests/build/aarch64/", imageModes: [.aarch64],
        linux: LinuxTraits(defaultCmdline: LinuxBootConfig.arm64Cmdline, virtioNeedsACPI: false, bootsRawBinaries: true,
                          resamplesSerialIRQ: false, powerOff: "PSCI SYSTEM_OFF", reset: "PSCI SYSTEM_RESET: reboot"),
        layout: { AArch64Layout.ramRanges(size: $0) })
}

extension GuestImage.Mode {
    /// AArch64 EL1: loaded at RAM + 1 MiB.
    public static let aarch64 = GuestImage.Mode(rawValue: 0xAA64, name: "AArch64 EL1", loadAddress: AArch64Layout.imageBase)
}
