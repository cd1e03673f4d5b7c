import AxAddrSpace
@testable import AxVMM
import Foundation
import Testing

// The arm64 Linux boot's pure parts, on any host: the Image header, gzip inflation, the
// placement plan and the device tree (read back by Debian's dtc, an independent parser).

/// A synthetic arm64 Image: the 64-byte header as booting.rst lays it out, then code bytes.
func syntheticArmImage(bytes count: Int = 64 << 10, textOffset: UInt64 = 0, imageSize: UInt64? = nil,
                       flags: UInt64 = 0b0010, magic: UInt32 = ArmKernelImage.magic) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: count)
    func put<T: FixedWidthInteger>(_ v: T, _ o: Int) {
        withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() where o + i < b.count { b[o + i] = x } }
    }
    put(UInt32(0x9100_0000), 0)  // code0: an instruction
    put(textOffset, 0x08)
    put(imageSize ?? UInt64(count) + 0x10000, 0x10)
    put(flags, 0x18)
    put(magic, 0x38)
    for i in 0x40..<count { b[i] = UInt8(truncatingIfNeeded: i &* 13) }
    return b
}

/// Runs a program; its standard output and error and exit status. `stdin` is written before
/// the output is read: keep it small (a pipe holds 64 KiB).
@discardableResult
func runTool(_ path: String, _ args: [String], stdin: [UInt8]? = nil) throws -> (status: Int32, out: [UInt8], err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe(), err = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin)) }
    try input.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, [UInt8](o), String(decoding: e, as: UTF8.self))
}

/// `bytes` compressed by the gzip program (from a file: a pipe both ways could fill up);
/// `name`: with the file's name in the header (FNAME).
func gzip(_ bytes: [UInt8], _ level: String = "-6", name: Bool = false) throws -> [UInt8] {
    let path = NSTemporaryDirectory() + "axvm-gz-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try runTool("/bin/gzip", [level, "-c"] + (name ? [] : ["-n"]) + [path]).out
}

private func imageRefusal(_ b: [UInt8], limit: Int = 1 << 30) -> String {
    do {
        _ = try ArmKernelImage(bytes: b, inflateLimit: limit)
        return "accepted"
    } catch { return error.reason }
}

/// Debian's arm64 kernel as the arm64 rig fetched it (an uncompressed Image), if present.
private let debianArmKernel: String? = {
    let cache = (ProcessInfo.processInfo.environment["AXVM_RIG_CACHE"] ?? NSHomeDirectory() + "/.cache/axvm-rig") + "/arm64"
    guard let pkg = try? String(contentsOfFile: cache + "/kernel-package", encoding: .utf8) else { return nil }
    let path = cache + "/" + pkg.trimmingCharacters(in: .whitespacesAndNewlines) + "/vmlinuz"
    return FileManager.default.fileExists(atPath: path) ? path : nil
}()

@Suite struct InflateTests {
    @Test(arguments: ["-1", "-9"])
    func roundTripsWhatGzipWrote(level: String) throws {
        var rng = SystemRandomNumberGenerator()
        let random = (0..<100_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let text = Array(String(repeating: "arm64 Image header, text_offset, image_size; ", count: 4000).utf8)
        let mixed = (0..<300_000).map { UInt8(truncatingIfNeeded: ($0 * $0) >> 7) }
        for data in [[], [42], random, text, mixed, text + random + text] {
            let z = try gzip(data, level, name: data.count == 1)
            #expect(try Inflate.gunzip(z, limit: 1 << 24) == data, "\(data.count) bytes at \(level)")
        }
    }

    @Test func refusesDamage() throws {
        let data = Array(String(repeating: "the quick brown fox ", count: 5000).utf8)
        let z = try gzip(data)
        func refusal(_ b: [UInt8], limit: Int = 1 << 24) -> String {
            do { return "inflated \(try Inflate.gunzip(b, limit: limit).count)" } catch { return error.reason }
        }
        #expect(refusal(Array(z.prefix(5))).hasPrefix("truncated"))
        #expect(refusal(Array(z.prefix(z.count / 2))).hasPrefix("truncated"))
        #expect(refusal(Array(z.dropLast(4))).hasPrefix("truncated"))
        var crc = z
        crc[crc.count - 8] ^= 1
        #expect(refusal(crc).hasPrefix("CRC-32"))
        var size = z
        size[size.count - 4] ^= 1
        #expect(refusal(size).contains("the trailer says"))
        #expect(refusal(z, limit: 1000) == "inflates to more than the 1000-byte limit")
        // Block type 3 (BFINAL 1, BTYPE 11): the first deflate byte after a 10-byte header.
        var reserved = z
        reserved[10] = 0b111
        #expect(refusal(reserved).hasPrefix("block type 3"))
        #expect(refusal([0x1f, 0x8b, 7] + [UInt8](repeating: 0, count: 20)) == "compression method 7, not deflate (8)")
    }
}

@Suite struct ArmImageTests {
    @Test func readsTheHeader() throws {
        let k = try ArmKernelImage(bytes: syntheticArmImage(textOffset: 0x8_0000, flags: 0b1010), inflateLimit: 1 << 30)
        #expect(k.textOffset == 0x8_0000)
        #expect(k.imageSize == (64 << 10) + 0x10000)
        #expect(k.pageSize == 4096)
        #expect(k.placeAnywhere)
        #expect(!k.wasCompressed)
        let gz = try ArmKernelImage(bytes: try gzip(syntheticArmImage()), inflateLimit: 1 << 30)
        #expect(gz.wasCompressed && gz.bytes == syntheticArmImage())
    }

    /// A raw binary (`--raw`, kvm-unit-tests): QEMU's address for a headerless kernel, the
    /// file rounded up to a page as its footprint; an empty one refused.
    @Test func rawBinaryLoadsWhereQEMULoadsOne() throws {
        let raw = try ArmKernelImage(raw: [UInt8](repeating: 0xd5, count: 5000))
        #expect(raw.textOffset == 0x8_0000 && raw.imageSize == 0x2000 && raw.flags == 0 && raw.bytes.count == 5000)
        #expect(throws: ArmKernelImage.Invalid("empty file")) { try ArmKernelImage(raw: []) }
        let plan = try ArmLinuxPlan(kernel: raw, ram: AArch64Layout.ramRanges(size: 128 << 20), cmdline: "smp")
        #expect(plan.placements.first?.range.start.raw == 0x4008_0000)
    }

    @Test func refusesHostileHeaders() throws {
        #expect(imageRefusal(Array(syntheticArmImage().prefix(40))) == "truncated: 40 bytes, shorter than the 64-byte arm64 Image header")
        #expect(imageRefusal(syntheticArmImage(magic: 0)) == "not an arm64 Image: no \"ARM\\x64\" magic at offset 0x38 (a raw binary is booted with --raw)")
        var elf = syntheticArmImage(magic: 0)
        elf.replaceSubrange(0..<4, with: [0x7f, 0x45, 0x4c, 0x46])
        #expect(imageRefusal(elf).hasSuffix("an ELF file (boot the Image from arch/arm64/boot, not vmlinux)"))
        var bz = syntheticArmImage(magic: 0)
        bz.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        #expect(imageRefusal(bz) == "not an arm64 Image: an x86 bzImage")
        #expect(imageRefusal(syntheticArmImage(flags: 1)).hasPrefix("a big-endian kernel"))
        #expect(imageRefusal(syntheticArmImage(textOffset: 0x123)) == "text_offset 0x123 is not a 4 KiB multiple below 1 GiB")
        #expect(imageRefusal(syntheticArmImage(textOffset: UInt64.max & ~0xfff)).hasPrefix("text_offset 0xfffffffffffff000"))
        #expect(imageRefusal(syntheticArmImage(imageSize: 100)) == "image_size 0x64 is smaller than the 65536-byte Image")
        #expect(imageRefusal(syntheticArmImage(imageSize: 1 << 40)) == "image_size 0x10000000000 is over 4 GiB")
        #expect(imageRefusal(try gzip(syntheticArmImage()), limit: 1000) == "gzip-compressed, but it does not inflate: inflates to more than the 1000-byte limit")
        // image_size 0: a kernel before 3.17, text_offset 0x80000 (booting.rst).
        let legacy = try ArmKernelImage(bytes: syntheticArmImage(textOffset: 0x1000, imageSize: 0), inflateLimit: 1 << 30)
        #expect(legacy.textOffset == 0x8_0000 && legacy.imageSize == 64 << 10)
    }

    @Test func refusesATruncatedEFIImage() throws {
        // A PE/COFF header at 0x40 whose one section's raw data ends at 0x20000.
        var b = syntheticArmImage(bytes: 0x20000, imageSize: 0x30000)
        func put32(_ v: UInt32, _ o: Int) { for i in 0..<4 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
        put32(0x40, 0x3c)
        b.replaceSubrange(0x40..<0x44, with: [0x50, 0x45, 0, 0])
        b[0x46] = 1; b[0x47] = 0                 // NumberOfSections
        b[0x54] = 0; b[0x55] = 0                 // SizeOfOptionalHeader
        put32(0x1f000, 0x58 + 16)                // SizeOfRawData
        put32(0x1000, 0x58 + 20)                 // PointerToRawData
        #expect(imageRefusal(b) == "accepted")
        #expect(imageRefusal(Array(b.prefix(0x18000))) == "truncated: its sections end at 0x20000, the file has 98304 bytes")
    }

    @Test func readsDebiansKernel() throws {
        guard let path = debianArmKernel else {
            print("skipped: no Debian arm64 kernel in the rig cache (scripts/kvm-rig.sh fetch aarch64)")
            return
        }
        let k = try ArmKernelImage(path: path, limit: 1 << 30)
        #expect(k.textOffset == 0 && k.pageSize == 4096 && !k.wasCompressed)
        #expect(k.imageSize >= UInt64(k.bytes.count))
        // The same kernel as an Image.gz.
        let z = try gzip(k.bytes, "-1")
        let clock = ContinuousClock()
        var inflated: ArmKernelImage?
        let took = try clock.measure { inflated = try ArmKernelImage(bytes: z, inflateLimit: 1 << 30) }
        print("inflated Debian's \(k.bytes.count)-byte arm64 Image from \(z.count) bytes in \(took) (debug build)")
        #expect(inflated?.bytes == k.bytes)
        #expect(imageRefusal(Array(k.bytes.prefix(1_000_000))).hasPrefix("truncated: its sections end at"))
    }
}

@Suite struct ArmLinuxPlanTests {
    let ram = AArch64Layout.ramRanges(size: 256 << 20)
    let kernel: ArmKernelImage

    init() throws { kernel = try ArmKernelImage(bytes: syntheticArmImage(bytes: 1 << 20, imageSize: 3 << 20), inflateLimit: 1 << 30) }

    private func refusal(_ k: ArmKernelImage? = nil, ram: [GuestPhysRange]? = nil, cmdline: String = "console=ttyS0",
                         initrd: UInt64 = 0) -> String {
        do {
            _ = try ArmLinuxPlan(kernel: k ?? kernel, ram: ram ?? self.ram, cmdline: cmdline, initrdPath: "i", initrdSize: initrd)
            return "accepted"
        } catch { return "\(error)" }
    }

    @Test func placesKernelInitrdAndDeviceTree() throws {
        let p = try ArmLinuxPlan(kernel: kernel, ram: ram, cmdline: "console=ttyS0", initrdPath: "i", initrdSize: 5000)
        #expect(p.kernelAddress == 0x4000_0000)
        #expect(p.deviceTreeAddress == 0x5000_0000 - (2 << 20))
        #expect(p.initrdAddress == (p.deviceTreeAddress - 5000) & ~0xfff)
        #expect(p.placements.map(\.description) == [
            "kernel [0x40000000, 0x40300000)", "initrd [0x4fdfe000, 0x4fdff388)", "device tree [0x4fe00000, 0x50000000)",
        ])
        let offset = try ArmKernelImage(bytes: syntheticArmImage(textOffset: 0x8_0000), inflateLimit: 1 << 30)
        #expect(try ArmLinuxPlan(kernel: offset, ram: ram, cmdline: "").kernelAddress == 0x4008_0000)
    }

    @Test func refusesWhatDoesNotFit() {
        #expect(refusal(cmdline: String(repeating: "a", count: 2048))
                == "kernel command line: 2048 bytes, longer than the 2047 bytes arm64 Linux accepts (COMMAND_LINE_SIZE)")
        #expect(refusal(cmdline: "a\u{0}b") == "kernel command line: contains a NUL byte")
        #expect(refusal(initrd: 300 << 20)
                == "initrd i: 314572800 bytes do not fit in RAM: 263192576 bytes free between the kernel's end 0x40300000 and the device tree at 0x4fe00000")
        #expect(refusal(ram: AArch64Layout.ramRanges(size: 4 << 20))
                == "guest memory: 4 MiB of RAM cannot hold this kernel (text_offset 0x0, image_size 0x300000) and the 2 MiB device tree slot")
    }

    @Test func writesADeviceTreeThatDtcReads() throws {
        let dtc = "/usr/bin/dtc"
        guard toolAvailable(dtc, package: "device-tree-compiler", required: "AXVM_REQUIRE_DTC") else { return }
        let plan = try ArmLinuxPlan(kernel: kernel, ram: ram, cmdline: "console=ttyS0 quiet", initrdPath: "i", initrdSize: 5000)
        for (version, compatible, reg) in [(ArmGIC.Version.v3, "arm,gic-v3", "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x40000>;"),
                                           (.v2, "arm,cortex-a15-gic", "reg = <0x00 0x8000000 0x00 0x1000 0x00 0x8010000 0x00 0x2000>;")] {
            let blob = try ArmDeviceTree.build(plan: plan, gic: ArmGIC.Layout(version: version, vcpus: 2, its: version == .v3), mpidrs: [0x8000_0000, 0x8000_0001],
                                               virtio: [VirtioSlot(base: 0x0a00_0000, gsi: 16), VirtioSlot(base: 0x0a00_0200, gsi: 17)],
                                               pmu: version == .v3)
            #expect(blob.prefix(4) == [0xd0, 0x0d, 0xfe, 0xed])
            let r = try runTool(dtc, ["-I", "dtb", "-O", "dts", "-"], stdin: blob)
            let dts = String(decoding: r.out, as: UTF8.self)
            #expect(r.status == 0, "dtc: \(r.err)")
            #expect(r.err.isEmpty, "dtc warns: \(r.err)")
            let start = plan.initrdAddress, end = plan.initrdAddress + 5000
            for line in [
                "compatible = \"linux,dummy-virt\";", "#address-cells = <0x02>;", "interrupt-parent = <0x01>;",
                "bootargs = \"console=ttyS0 quiet\";", "stdout-path = \"/uart@9000000\";",
                "linux,initrd-start = <0x00 0x\(String(start, radix: 16))>;", "linux,initrd-end = <0x00 0x\(String(end, radix: 16))>;",
                "memory@40000000 {", "device_type = \"memory\";", "reg = <0x00 0x40000000 0x00 0x10000000>;",
                "cpu@0 {", "cpu@1 {", "enable-method = \"psci\";", "reg = <0x01>;",
                "compatible = \"arm,psci-1.0\\0arm,psci-0.2\";", "method = \"hvc\";",
                "intc@8000000 {", "compatible = \"\(compatible)\";", "#interrupt-cells = <0x03>;", "interrupt-controller;", reg,
                "phandle = <0x01>;", "compatible = \"arm,armv8-timer\";",
                version == .v3 ? "interrupts = <0x01 0x0d 0x04 0x01 0x0e 0x04 0x01 0x0b 0x04 0x01 0x0a 0x04>;"
                               : "interrupts = <0x01 0x0d 0x304 0x01 0x0e 0x304 0x01 0x0b 0x304 0x01 0x0a 0x304>;",
                "uart@9000000 {", "compatible = \"ns16550a\";", "reg = <0x00 0x9000000 0x00 0x1000>;",
                "interrupts = <0x00 0x01 0x04>;", "clock-frequency = <0x1c2000>;",
                // virtio-mmio transports, as Linux's virtio_mmio driver matches them in a device tree.
                "virtio_mmio@a000000 {", "virtio_mmio@a000200 {", "compatible = \"virtio,mmio\";",
                "reg = <0x00 0xa000200 0x00 0x200>;", "interrupts = <0x00 0x11 0x01>;", "dma-coherent;",
            ] + (version == .v3 ? ["pmu {", "compatible = \"arm,armv8-pmuv3\";", "interrupts = <0x01 0x07 0x04>;",
                                   "its@8080000 {", "compatible = \"arm,gic-v3-its\";", "msi-controller;", "#msi-cells = <0x01>;",
                                   "reg = <0x00 0x8080000 0x00 0x20000>;"] : []) {
                #expect(dts.contains(line), "\(version): no \(line) in\n\(dts)")
            }
            #expect(dts.contains("pmu {") == (version == .v3), "a PMU node only when the vCPUs have one")
        }
    }

    @Test func deviceTreeWriterRefusesMisuse() {
        func refusal(_ build: (inout DeviceTreeWriter) -> Void) -> String {
            var w = DeviceTreeWriter()
            build(&w)
            do { return "\(try w.finish().count) bytes" } catch { return error.reason }
        }
        #expect(refusal { $0.beginNode("") } == "1 node(s) left open")
        #expect(refusal { $0.beginNode("x"); $0.endNode() } == "the root node is named \"x\" (it must have an empty name)")
        #expect(refusal { $0.beginNode(""); $0.endNode(); $0.beginNode(""); $0.endNode() } == "2 root nodes (one is needed)")
        #expect(refusal { $0.endNode() } == "endNode without an open node")
        #expect(refusal { $0.beginNode(""); $0.property("a\u{0}", .empty); $0.endNode() } == "property name \"a\u{0}\" is empty or contains a NUL")
        // The header: magic, total size, offsets in order, version 17, compatible 16.
        var w = DeviceTreeWriter()
        w.beginNode("")
        w.property("model", .string("axvm"))
        w.endNode()
        let b = (try? w.finish()) ?? []
        func be(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 << 8 | UInt32(b[o + $1]) } }
        #expect(be(0) == 0xd00d_feed && Int(be(4)) == b.count && be(8) == 56 && be(16) == 40 && be(20) == 17 && be(24) == 16)
        #expect(Int(be(12)) == 56 + Int(be(36)) && Int(be(12) + be(32)) == b.count)
    }
}
