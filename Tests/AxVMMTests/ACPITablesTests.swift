import Foundation
@testable import AxVMM
import Testing

/// The ACPI tables, read back twice: by a reader written here the way Linux walks them
/// (RSDP → XSDT → FADT/MADT, FADT → DSDT, checksums), and by ACPICA's own disassembler
/// (`iasl -d`, Debian's acpica-tools), the parser behind Linux's ACPI.
@Suite struct ACPITablesTests {
    let base: UInt64 = LinuxLayout.acpiTables

    func u32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
    func u64(_ b: [UInt8], _ o: Int) -> UInt64 { UInt64(u32(b, o)) | UInt64(u32(b, o + 4)) << 32 }
    func sum(_ b: ArraySlice<UInt8>) -> UInt8 { b.reduce(0, &+) }

    /// The table at guest physical `address` inside `blob`, checked: signature, length and
    /// checksum.
    func table(_ blob: [UInt8], at address: UInt64, _ signature: String) throws -> [UInt8] {
        let o = Int(address - base)
        try #require(o >= 0 && o + 36 <= blob.count, "\(signature) at \(address) outside the blob")
        let length = Int(u32(blob, o + 4))
        try #require(o + length <= blob.count)
        let t = Array(blob[o..<(o + length)])
        #expect(String(decoding: t[0..<4], as: UTF8.self) == signature)
        #expect(sum(t[...]) == 0, "\(signature) checksum")
        return t
    }

    /// Every table of `blob` by signature, following the pointers from the RSDP.
    func walk(_ blob: [UInt8]) throws -> [String: [UInt8]] {
        #expect(blob.starts(with: Array("RSD PTR ".utf8)))
        #expect(sum(blob[0..<20]) == 0 && sum(blob[0..<36]) == 0, "RSDP checksums")
        #expect(blob[15] == 2 && u32(blob, 20) == 36, "ACPI 2.0 RSDP")
        let xsdt = try table(blob, at: u64(blob, 24), "XSDT")
        var out = ["XSDT": xsdt]
        for i in stride(from: 36, to: xsdt.count, by: 8) {
            let address = u64(xsdt, i)
            let signature = String(decoding: blob[Int(address - base)..<Int(address - base) + 4], as: UTF8.self)
            out[signature] = try table(blob, at: address, signature)
        }
        let fadt = try #require(out["FACP"])
        #expect(u64(fadt, 140) == UInt64(u32(fadt, 40)), "X_DSDT = DSDT")
        out["DSDT"] = try table(blob, at: u64(fadt, 140), "DSDT")
        return out
    }

    @Test func linuxFindsWhatItNeeds() throws {
        for cpus in [1, 2, 4, 64] {
            let t = try walk(ACPITables.build(cpus: cpus, at: base))
            #expect(t.keys.sorted() == ["APIC", "DSDT", "FACP", "XSDT"])
            let fadt = try #require(t["FACP"]), madt = try #require(t["APIC"])
            #expect(fadt[8] == 6 && fadt.count == 276, "FADT revision 6")
            #expect(u32(fadt, 112) & (1 << 20) != 0, "HW_REDUCED_ACPI")
            #expect(Array(fadt[244..<256]) == [1, 8, 0, 1, 0x00, 0x06, 0, 0, 0, 0, 0, 0], "sleep control: I/O port 0x600, one byte")
            #expect(Array(fadt[256..<268]) == [1, 8, 0, 1, 0x01, 0x06, 0, 0, 0, 0, 0, 0], "sleep status: I/O port 0x601")
            // MADT entries: a local APIC per CPU, ids 0 ..< cpus, enabled; one IOAPIC.
            var apics: [UInt8] = [], ioapics: [(id: UInt8, address: UInt32, gsi: UInt32)] = []
            var o = 44
            while o < madt.count {
                let type = madt[o], length = Int(madt[o + 1])
                try #require(length >= 2 && o + length <= madt.count)
                if type == 0 { apics.append(madt[o + 3]); #expect(u32(madt, o + 4) & 1 == 1) }
                if type == 1 { ioapics.append((madt[o + 2], u32(madt, o + 4), u32(madt, o + 8))) }
                o += length
            }
            #expect(u32(madt, 36) == 0xfee0_0000)
            #expect(apics == (0..<cpus).map { UInt8($0) })
            #expect(ioapics.count == 1 && ioapics[0].id == UInt8(cpus) && ioapics[0].address == 0xfec0_0000 && ioapics[0].gsi == 0)
        }
    }

    @Test func powerOffIsS5WithSleepEnable() {
        #expect(ACPITables.isPowerOff(0x34))
        #expect(!ACPITables.isPowerOff(0x14), "S5 without SLP_EN")
        #expect(!ACPITables.isPowerOff(0x2c), "S3")
    }

    /// PkgLength: one byte up to 63, then two with the low nibble in the lead byte.
    @Test func packageLengths() {
        #expect(ACPITables.pkg([UInt8](repeating: 0, count: 62)).prefix(1) == [63])
        #expect(ACPITables.pkg([UInt8](repeating: 0, count: 63)).prefix(2) == [0x41, 0x04])  // 65 = 0x41
        #expect(ACPITables.pkg([UInt8](repeating: 0, count: 300)).prefix(2) == [0x4e, 0x12])  // 302 = 0x12e
    }

    /// ACPICA disassembles every table without a complaint and finds the fields Linux uses.
    @Test func acpicaReadsEveryTable() throws {
        let iasl = "/usr/bin/iasl"
        guard toolAvailable(iasl, package: "acpica-tools", required: "AXVM_REQUIRE_IASL") else { return }
        let slots = [VirtioSlot(base: 0xd000_0000, gsi: 16), VirtioSlot(base: 0xd000_1000, gsi: 17)]
        let tables = try walk(ACPITables.build(cpus: 2, at: base, virtio: slots))
        let dir = NSTemporaryDirectory() + "axvm-acpi-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var expected = [
            "FACP": ["Hardware Reduced (V5) : 1", "Space ID : 01 [SystemIO]", "Address : 0000000000000600",
                     "Address : 0000000000000601", "CMOS RTC Not Present (V5) : 1"],
            "APIC": ["Processor Local APIC", "Local Apic ID : 01", "I/O APIC", "Address : FEC00000"],
            "DSDT": ["Name (_S5, Package (0x02)", "Device (COM1)", "EisaId (\"PNP0501\")", "IO (Decode16,",
                     "0x03F8,", "IRQNoFlags ()", "{4}",
                     // virtio-mmio transports as Linux's virtio_mmio driver matches them (ACPI id LNRO0005).
                     "Device (VR00)", "Device (VR01)", "Name (_HID, \"LNRO0005\")", "Name (_CCA, One)",
                     "Memory32Fixed (ReadWrite,", "0xD0001000,", "0x00000200,",
                     "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )", "0x00000011,"],
            "XSDT": ["ACPI Table Address   0 :", "ACPI Table Address   1 :"],
        ]
        for (signature, bytes) in tables {
            let file = "\(dir)/\(signature).dat"
            try Data(bytes).write(to: URL(fileURLWithPath: file))
            let r = try runTool(iasl, ["-d", file], stdin: [])
            let output = String(decoding: r.out, as: UTF8.self) + r.err
            #expect(r.status == 0, "iasl -d \(signature): \(output)")
            let dsl = try String(contentsOfFile: "\(dir)/\(signature).dsl", encoding: .utf8)
            for complaint in ["Error", "Warning", "Invalid", "Incorrect"] {
                #expect(!dsl.contains(complaint) && !output.contains(complaint), "\(signature): \(complaint) in\n\(output)\n\(dsl)")
            }
            let squeezed = dsl.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
            for line in expected.removeValue(forKey: signature) ?? [] {
                let want = line.split(separator: " ").joined(separator: " ")
                #expect(squeezed.contains { $0.contains(want) }, "\(signature): no \(line) in\n\(dsl)")
            }
        }
        #expect(expected.isEmpty, "not disassembled: \(expected.keys)")
    }
}

/// PCI configuration mechanism #1 as Linux's `pci_check_type1` probes it, with no device.
@Suite struct EmptyPCIBusTests {
    func access(_ bus: inout EmptyPCIBus, _ port: UInt16, out value: UInt32? = nil, size: Int = 4) -> UInt32 {
        var bytes = [UInt8](repeating: 0, count: size)
        if let value { for i in 0..<size { bytes[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) } }
        bytes.withUnsafeMutableBytes { bus.access(port: port, isOut: value != nil, data: $0) }
        return bytes.enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    }

    @Test func addressRegisterReadsBackAndNoDeviceAnswers() {
        var bus = EmptyPCIBus()
        #expect(EmptyPCIBus.claims(0xcf8) && EmptyPCIBus.claims(0xcfc) && EmptyPCIBus.claims(0xcff))
        #expect(!EmptyPCIBus.claims(0xcf9) && !EmptyPCIBus.claims(0xd00))
        _ = access(&bus, 0xcf8, out: 0x8000_0000)
        #expect(access(&bus, 0xcf8) == 0x8000_0000, "what pci_check_type1 reads back")
        _ = access(&bus, 0xcf8, out: 0xffff_ffff)
        #expect(access(&bus, 0xcf8) == 0x80ff_fffc, "reserved bits read 0")
        #expect(access(&bus, 0xcfc) == 0xffff_ffff, "vendor 0xffff: no device")
        #expect(access(&bus, 0xcfe, size: 2) == 0xffff)
    }
}
