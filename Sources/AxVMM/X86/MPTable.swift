// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
/// An Intel MultiProcessor Specification 1.4 table (the MP floating pointer and the
/// configuration table with its base entries), so that a guest OS without ACPI finds its
/// CPUs, the IOAPIC and how the 16 ISA interrupts reach it — what Firecracker writes too.
///
/// Without it Linux runs the APIC in virtual-wire mode and takes every device interrupt from
/// the 8259 PIC through LINT0 (ExtINT). KVM injects a PIC interrupt only when the PIC's
/// output rises; with two lines pending (the PIT's and the UART's) the output stays high, and
/// KVM can leave both pending with the guest's IF set (docs/linux.md, "Interrupts and
/// stalls"). Through the IOAPIC each edge reaches the
/// LAPIC on its own and asks KVM to look at the vCPU's interrupts again.
///
/// Layout (MP spec 1.4, chapter 4): the 16-byte floating pointer at `address`, the
/// configuration table right after it: header (44 bytes), one processor entry (20 bytes)
/// per CPU, the ISA bus, the IOAPIC, one I/O interrupt entry per ISA IRQ (IRQ n → IOAPIC
/// pin n, as KVM's default GSI routing wires them), LINT0 ExtINT and LINT1 NMI (8 bytes each).
/// Every structure's bytes sum to 0 mod 256.
public enum MPTable {
    /// Where the local APICs and the IOAPIC are (KVM's in-kernel ones).
    public static let localAPICAddress: UInt32 = 0xfee0_0000
    public static let ioAPICAddress: UInt32 = 0xfec0_0000
    static let isaBus: UInt8 = 0
    static let isaIRQs: UInt8 = 16
    static let floatingPointerSize = 16
    static let headerSize = 44

    /// The IOAPIC's id in the table: after the CPUs' (0 ..< cpus).
    public static func ioAPICID(cpus: Int) -> UInt8 { UInt8(cpus) }

    /// The table's bytes for `cpus` CPUs (1 ... 254), to be written at guest physical
    /// `address` (16-byte aligned, below 4 GiB, where Linux looks: the first KiB of the
    /// EBDA or the last KiB of base memory, 0x9fc00, or 0xf0000–0xfffff).
    public static func build(cpus: Int, at address: UInt64) -> [UInt8] {
        let cpus = min(max(cpus, 1), 254)
        let ioapic = ioAPICID(cpus: cpus)
        var entries: [UInt8] = []
        for id in 0..<cpus {
            // Processor: type 0, LAPIC id, LAPIC version 0x14, flags (enabled, bootstrap for
            // CPU 0), signature (family 6), feature flags (CPUID.1:EDX FPU | APIC), reserved.
            entries += [0, UInt8(id), 0x14, id == 0 ? 0x03 : 0x01]
            entries += le(UInt32(0x600)) + le(UInt32(0x201)) + [UInt8](repeating: 0, count: 8)
        }
        entries += [1, isaBus] + Array("ISA   ".utf8)                      // bus
        entries += [2, ioapic, 0x11, 0x01] + le(ioAPICAddress)             // IOAPIC, enabled
        for irq in 0..<isaIRQs {
            // I/O interrupt: type 3, INT (0), flags 0 (conforms to the bus: ISA edge, high).
            entries += [3, 0] + le(UInt16(0)) + [isaBus, irq, ioapic, irq]
        }
        // Local interrupts: ExtINT on LINT0 and NMI on LINT1 of every LAPIC (0xff).
        entries += [4, 3] + le(UInt16(0)) + [isaBus, 0, 0xff, 0]
        entries += [4, 1] + le(UInt16(0)) + [isaBus, 0, 0xff, 1]
        let count = cpus + 1 + 1 + Int(isaIRQs) + 2

        var header: [UInt8] = Array("PCMP".utf8)
        header += le(UInt16(headerSize + entries.count)) + [4, 0]          // length, rev 1.4, checksum
        header += Array("AXVM    ".utf8) + Array("AXVM LINUX  ".utf8)        // OEM and product ids
        header += le(UInt32(0)) + le(UInt16(0)) + le(UInt16(count))        // no OEM table; entries
        header += le(localAPICAddress) + le(UInt16(0)) + [0, 0]            // no extended table
        var table = header + entries
        table[7] = checksum(table)

        var pointer: [UInt8] = Array("_MP_".utf8)
        pointer += le(UInt32(truncatingIfNeeded: address + UInt64(floatingPointerSize)))
        pointer += [1, 4, 0, 0, 0, 0, 0, 0]   // 1 paragraph, rev 1.4, checksum, feature bytes 0
        pointer[10] = checksum(pointer)
        return pointer + table
    }

    /// The byte that makes `bytes` sum to 0 mod 256 (its own slot counted as 0).
    static func checksum(_ bytes: [UInt8]) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }

    /// `v`'s bytes, little-endian (also `ACPITables`').
    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        withUnsafeBytes(of: v.littleEndian) { Array($0) }
    }
}
#endif
