// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
/// The smallest set of ACPI tables (ACPI 6.5, chapter 5) that gives a Linux guest its CPUs,
/// its interrupt routing, its console and a way to power off, on a hardware-reduced
/// platform (no PM1 blocks, no SCI, no PM timer, no legacy PIC):
///
/// - RSDP → XSDT → FADT, MADT; FADT → DSDT.
/// - FADT (revision 6): HW_REDUCED_ACPI; boot flags "no VGA, no MSI, no CMOS RTC" and no
///   8042 (the i8042's reset line still works: `reboot=k` writes the port directly); the
///   sleep control and status registers are two I/O ports (`sleepControlPort`): writing
///   SLP_EN with SLP_TYP 5 (the DSDT's `\_S5`) is `poweroff`.
/// - MADT: one enabled local APIC per CPU (APIC id = vCPU id, as KVM numbers them) and
///   the IOAPIC with GSI base 0; ISA IRQ n is GSI n (no overrides), as KVM's default routing.
/// - DSDT: `\_S5` and the 16550 on COM1 (PNP0501, 0x3f8, IRQ 4). A hardware-reduced
///   platform has no legacy PIC, so Linux maps an ISA interrupt only when a device asks
///   for it by its resources: the UART must be described. And one `LNRO0005` device per
///   virtio-mmio transport (`VirtioSlot`: its registers and its edge-triggered GSI), where
///   a stock kernel's virtio_mmio driver finds them (Debian's is built without
///   `VIRTIO_MMIO_CMDLINE_DEVICES`), as QEMU microvm describes them.
///
/// Every table's bytes sum to 0 mod 256; the RSDP has its own two checksums. What Linux and
/// ACPICA's `iasl` read back is tested (ACPITablesTests).
public enum ACPITables {
    /// The I/O port of the FADT's sleep control register; the status register is the next.
    public static let sleepControlPort: UInt16 = 0x600
    public static var sleepStatusPort: UInt16 { sleepControlPort + 1 }
    /// The value Linux writes to power off (ACPI 6.5 §4.8.3.7, "Sleep Control Register"):
    /// SLP_EN (bit 5) | SLP_TYP (bits 2–4) = 5, the `\_S5` value in the DSDT.
    public static let s5SleepType: UInt8 = 5
    public static func isPowerOff(_ value: UInt8) -> Bool { value & 0x20 != 0 && (value >> 2) & 7 == s5SleepType }

    static let oemID = Array("AXVM  ".utf8)          // 6 bytes
    static let oemTableID = Array("AXVMLNX ".utf8)   // 8 bytes
    static let creatorID = Array("AXVM".utf8)

    /// The tables for `cpus` CPUs (1 ... 254), laid out from guest physical `address`
    /// (16-byte aligned, below 1 MiB where Linux scans for the RSDP: 0xe0000–0xfffff); the
    /// RSDP comes first.
    public static func build(cpus: Int, at address: UInt64, virtio: [VirtioSlot] = []) -> [UInt8] {
        let cpus = min(max(cpus, 1), 254)
        func align(_ n: Int) -> Int { (n + 15) & ~15 }
        let dsdt = table("DSDT", revision: 2, body: dsdtAML(virtio: virtio))
        let madt = table("APIC", revision: 5, body: madtBody(cpus: cpus))
        let rsdpSize = 36, xsdtSize = 36 + 2 * 8
        let xsdtAt = align(rsdpSize), fadtAt = align(xsdtAt + xsdtSize)
        let madtAt = align(fadtAt + fadtLength), dsdtAt = align(madtAt + madt.count)
        let fadt = table("FACP", revision: 6, body: fadtBody(dsdt: address + UInt64(dsdtAt)))
        let xsdt = table("XSDT", revision: 1, body: le(address + UInt64(fadtAt)) + le(address + UInt64(madtAt)))
        var out = [UInt8](repeating: 0, count: dsdtAt + dsdt.count)
        func put(_ bytes: [UInt8], at offset: Int) { out.replaceSubrange(offset..<(offset + bytes.count), with: bytes) }
        put(rsdp(xsdt: address + UInt64(xsdtAt)), at: 0)
        put(xsdt, at: xsdtAt)
        put(fadt, at: fadtAt)
        put(madt, at: madtAt)
        put(dsdt, at: dsdtAt)
        return out
    }

    /// RSDP, ACPI 2.0+ (36 bytes): the first checksum covers the first 20 bytes, the
    /// extended one all 36.
    static func rsdp(xsdt: UInt64) -> [UInt8] {
        var r = Array("RSD PTR ".utf8) + [0] + oemID + [2] + le(UInt32(0)) + le(UInt32(36)) + le(xsdt) + [0, 0, 0, 0]
        r[8] = MPTable.checksum(Array(r[0..<20]))
        r[32] = MPTable.checksum(r)
        return r
    }

    /// A system description table: the 36-byte header, then `body`.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var t = Array(signature.utf8) + le(UInt32(36 + body.count)) + [revision, 0] + oemID + oemTableID
        t += le(UInt32(1)) + creatorID + le(UInt32(1)) + body
        t[9] = MPTable.checksum(t)
        return t
    }

    /// The FADT's length in revision 6 (ACPI 6.5 Table 5.9), header included.
    static let fadtLength = 276

    /// FADT fields after the header (offsets below are from the table's start, ACPI 6.5
    /// Table 5.9), `fadtLength` - 36 bytes.
    static func fadtBody(dsdt: UInt64) -> [UInt8] {
        var f = [UInt8](repeating: 0, count: fadtLength)
        func put(_ bytes: [UInt8], _ offset: Int) { f.replaceSubrange(offset..<(offset + bytes.count), with: bytes) }
        put(le(UInt32(truncatingIfNeeded: dsdt)), 40)              // DSDT
        // IAPC_BOOT_ARCH: VGA not present (2), MSI not supported (3), CMOS RTC not present
        // (5); no LEGACY_DEVICES, no 8042.
        put(le(UInt16(1 << 2 | 1 << 3 | 1 << 5)), 109)
        // Flags: PWR_BUTTON and SLP_BUTTON (4, 5: no fixed-feature buttons), HW_REDUCED_ACPI (20).
        put(le(UInt32(1 << 4 | 1 << 5 | 1 << 20)), 112)
        f[131] = 5                                                 // FADT minor version: 6.5
        put(le(dsdt), 140)                                         // X_DSDT
        put(ioRegister(sleepControlPort), 244)                     // SLEEP_CONTROL_REG
        put(ioRegister(sleepStatusPort), 256)                      // SLEEP_STATUS_REG
        put(Array("AXVM    ".utf8), 268)                           // hypervisor vendor identity
        return Array(f[36...])
    }

    /// A Generic Address Structure (ACPI 6.5 §5.2.3.2) for one byte-wide I/O port.
    static func ioRegister(_ port: UInt16) -> [UInt8] {
        [1, 8, 0, 1] + le(UInt64(port))  // SystemIO, 8 bits, offset 0, byte access
    }

    /// MADT after the header: the local APIC address, flags 0 (no 8259s to disable: the
    /// platform is hardware-reduced), then the entries (ACPI 6.5 §5.2.12).
    static func madtBody(cpus: Int) -> [UInt8] {
        var m = le(MPTable.localAPICAddress) + le(UInt32(0))
        for id in 0..<cpus {
            m += [0, 8, UInt8(id), UInt8(id)] + le(UInt32(1))     // processor local APIC, enabled
        }
        m += [1, 12, MPTable.ioAPICID(cpus: cpus), 0] + le(MPTable.ioAPICAddress) + le(UInt32(0))  // IOAPIC, GSI base 0
        return m
    }

    /// The DSDT's AML (ACPI 6.5 chapter 20), as iasl compiles:
    ///
    ///     Name (_S5, Package () { 0x05, Zero })
    ///     Scope (_SB) {
    ///         Device (COM1) {
    ///             Name (_HID, EisaId ("PNP0501"))
    ///             Name (_UID, One)
    ///             Name (_CRS, ResourceTemplate () {
    ///                 IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
    ///                 IRQNoFlags () {4}
    ///             })
    ///         }
    ///         Device (VR00) {                     // one per virtio-mmio slot
    ///             Name (_HID, "LNRO0005")
    ///             Name (_UID, Zero)
    ///             Name (_CCA, One)                // cache-coherent DMA
    ///             Name (_CRS, ResourceTemplate () {
    ///                 Memory32Fixed (ReadWrite, 0xD0000000, 0x00000200)
    ///                 Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 16 }
    ///             })
    ///         }
    ///     }
    static func dsdtAML(virtio: [VirtioSlot] = []) -> [UInt8] {
        let nameOp: UInt8 = 0x08, packageOp: UInt8 = 0x12, bufferOp: UInt8 = 0x11, scopeOp: UInt8 = 0x10
        let bytePrefix: UInt8 = 0x0a, dwordPrefix: UInt8 = 0x0c, oneOp: UInt8 = 0x01, zeroOp: UInt8 = 0x00
        func name(_ s: String) -> [UInt8] { Array(s.utf8) }
        let s5 = [nameOp] + name("_S5_") + [packageOp] + pkg([2, bytePrefix, s5SleepType, zeroOp])
        // Small resource descriptors (ACPI 6.5 §6.4.2): I/O port (0x47), IRQ without flags
        // (0x22, a 16-bit mask: IRQ 4), end tag (0x79, checksum 0: "treat as summed").
        let resources: [UInt8] = [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x00, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00]
        let hid: [UInt8] = [nameOp] + name("_HID") + [dwordPrefix, 0x41, 0xd0, 0x05, 0x01]  // EisaId("PNP0501")
        let uid: [UInt8] = [nameOp] + name("_UID") + [oneOp]
        let crs = [nameOp] + name("_CRS") + [bufferOp] + pkg([bytePrefix, UInt8(resources.count)] + resources)
        let device = [0x5b, 0x82] + pkg(name("COM1") + hid + uid + crs)   // DeviceOp
        var devices = device
        for (i, slot) in virtio.prefix(256).enumerated() {
            let hex = Array("0123456789ABCDEF".utf8)
            let vname = [UInt8(ascii: "V"), UInt8(ascii: "R"), hex[i >> 4], hex[i & 15]]
            let vhid = [nameOp] + name("_HID") + [0x0d] + name("LNRO0005") + [0]               // StringPrefix
            let vuid = [nameOp] + name("_UID") + [bytePrefix, UInt8(i)]
            let cca = [nameOp] + name("_CCA") + [oneOp]
            // Large descriptors (ACPI 6.5 §6.4.3): Memory32Fixed (0x86, read-write), Extended
            // Interrupt (0x89: flags 0x03 consumer, edge, active high, exclusive; one GSI), end tag.
            let res: [UInt8] = [0x86, 0x09, 0x00, 0x01] + le(UInt32(truncatingIfNeeded: slot.base)) + le(slot.size)
                + [0x89, 0x06, 0x00, 0x03, 0x01] + le(slot.gsi) + [0x79, 0x00]
            let vcrs = [nameOp] + name("_CRS") + [bufferOp] + pkg([bytePrefix, UInt8(res.count)] + res)
            devices += [0x5b, 0x82] + pkg(vname + vhid + vuid + cca + vcrs)
        }
        let scope = [scopeOp] + pkg(name("_SB_") + devices)
        return s5 + scope
    }

    /// `body` behind its PkgLength (ACPI 6.5 §20.2.4): one byte below 64, two below 4096,
    /// else three (the length counts its own bytes; the low nibble in the lead byte).
    static func pkg(_ body: [UInt8]) -> [UInt8] {
        let n1 = body.count + 1
        if n1 < 64 { return [UInt8(n1)] + body }
        let n2 = body.count + 2
        if n2 < 4096 { return [0x40 | UInt8(n2 & 0xf), UInt8(n2 >> 4)] + body }
        let n3 = body.count + 3  // a DSDT of 256 virtio devices is 20 KB
        return [0x80 | UInt8(n3 & 0xf), UInt8(truncatingIfNeeded: n3 >> 4), UInt8(truncatingIfNeeded: n3 >> 12)] + body
    }

    private static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { MPTable.le(v) }
}
#endif
