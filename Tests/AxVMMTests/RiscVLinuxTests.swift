import AxAddrSpace
@testable import AxVMM
import Foundation
import KVM
import Testing

/// riscv64 Linux, checked on any host: the Image header with riscv's magic, the plan, the
/// device tree (read back by Debian's dtc), the hart description and the SBI calls the
/// loader serves.
@Suite struct RiscVLinuxTests {
    static let image = syntheticArmImage(bytes: 1 << 20, textOffset: 0x20_0000, imageSize: 3 << 20, flags: 0, magic: 0x0543_5352)
    static let harts = RiscVHarts(count: 2, isa: "rv64imafdc", mmuType: "riscv,sv57", timebaseFrequency: 10_000_000)

    @Test func theImageHeaderCarriesRiscvsMagic() throws {
        let k = try ArmKernelImage(bytes: Self.image, inflateLimit: 1 << 30, flavour: .riscv64)
        #expect(k.textOffset == 0x20_0000 && k.imageSize == 3 << 20)
        // An arm64 Image is not a riscv64 one, and the refusal says what was looked for.
        #expect {
            _ = try ArmKernelImage(bytes: syntheticArmImage(), inflateLimit: 1 << 30, flavour: .riscv64)
        } throws: { e in "\(e)" == "not an riscv Image: no \"RSC\\x05\" magic at offset 0x38" }
        let plan = try ArmLinuxPlan(kernel: k, ram: RiscV64Layout.ramRanges(size: 256 << 20), cmdline: "console=ttyS0",
                                    cmdlineLimit: RiscVLinuxLayout.cmdlineLimit, arch: "riscv64")
        // The kernel 2 MiB above RAM's start (text_offset), the device tree in the last 2 MiB.
        #expect(plan.kernelAddress == 0x8020_0000)
        #expect(plan.deviceTreeAddress == 0x8000_0000 + (256 << 20) - (2 << 20))
        #expect {
            _ = try ArmLinuxPlan(kernel: k, ram: RiscV64Layout.ramRanges(size: 256 << 20), cmdline: String(repeating: "x", count: 1024),
                                 cmdlineLimit: RiscVLinuxLayout.cmdlineLimit, arch: "riscv64")
        } throws: { e in "\(e)".contains("1024 bytes, longer than the 1023 bytes riscv64 Linux accepts") }
    }

    @Test func hartsAreDescribedFromKVMsRegisters() {
        // config.isa bits: a (0), c (2), d (3), f (5), h (7), i (8), m (12): 'h' left out.
        let bits: UInt64 = 1 << 0 | 1 << 2 | 1 << 3 | 1 << 5 | 1 << 7 | 1 << 8 | 1 << 12
        #expect(RiscVHarts.isaString(bits) == "rv64imafdc")
        #expect(RiscVHarts.isaString(bits | 1 << 21 | 1 << 18) == "rv64imafdcvs")  // v canonical, then the rest
        #expect(RiscVHarts.mmuType(satpMode: 10) == "riscv,sv57")
        #expect(RiscVHarts.mmuType(satpMode: 9) == "riscv,sv48")
        #expect(RiscVHarts.mmuType(satpMode: 8) == "riscv,sv39")
        #expect(RiscV64Register.timerFrequency == 0x8030_0000_0400_0000)
        #expect(RiscV64Register.satpMode == 0x8030_0000_0100_0006)
        #expect(RiscV64Register.sstc == 0x8030_0000_0700_0008)
        let regs = Dictionary(uniqueKeysWithValues: RiscVLinuxLoader<RiscV64Platform>.entryRegisters(kernel: 0x8020_0000, deviceTree: 0x8fe0_0000))
        #expect(regs[RiscV64Register.a0] == 0 && regs[RiscV64Register.a1] == 0x8fe0_0000 && regs[RiscV64Register.pc] == 0x8020_0000)
    }

    @Test func writesADeviceTreeThatDtcReads() throws {
        let dtc = "/usr/bin/dtc"
        guard toolAvailable(dtc, package: "device-tree-compiler", required: "AXVM_REQUIRE_DTC") else { return }
        let k = try ArmKernelImage(bytes: Self.image, inflateLimit: 1 << 30, flavour: .riscv64)
        let plan = try ArmLinuxPlan(kernel: k, ram: RiscV64Layout.ramRanges(size: 256 << 20), cmdline: "console=ttyS0 quiet",
                                    initrdPath: "i", initrdSize: 5000, cmdlineLimit: RiscVLinuxLayout.cmdlineLimit, arch: "riscv64")
        let blob = try RiscVDeviceTree.build(plan: plan, harts: Self.harts)
        let r = try runTool(dtc, ["-I", "dtb", "-O", "dts", "-"], stdin: blob)
        let dts = String(decoding: r.out, as: UTF8.self)
        #expect(r.status == 0, "dtc: \(r.err)")
        #expect(r.err.isEmpty, "dtc warns: \(r.err)")
        let start = plan.initrdAddress, end = plan.initrdAddress + 5000
        for line in [
            "bootargs = \"console=ttyS0 quiet\";", "stdout-path = \"/soc/serial@10000000\";",
            "linux,initrd-start = <0x00 0x\(String(start, radix: 16))>;", "linux,initrd-end = <0x00 0x\(String(end, radix: 16))>;",
            "memory@80000000 {", "reg = <0x00 0x80000000 0x00 0x10000000>;",
            "timebase-frequency = <0x989680>;", "cpu@0 {", "cpu@1 {", "riscv,isa = \"rv64imafdc\";", "mmu-type = \"riscv,sv57\";",
            "compatible = \"riscv,cpu-intc\";", "#interrupt-cells = <0x01>;", "phandle = <0x02>;",
            "serial@10000000 {", "compatible = \"ns16550a\";", "reg = <0x00 0x10000000 0x00 0x100>;",
            "interrupt-controller@c000000 {", "compatible = \"sifive,plic-1.0.0\\0riscv,plic0\";",
            "reg = <0x00 0xc000000 0x00 0x4000000>;", "interrupts-extended = <0x01 0x09 0x02 0x09>;", "riscv,ndev = <0x1f>;",
            "phandle = <0x03>;", "interrupt-parent = <0x03>;", "interrupts = <0x0a>;",
        ] {
            #expect(dts.contains(line), "missing: \(line)")
        }
    }

    @Test func virtioIsRefusedUntilThereIsAnInterruptController() {
        var c = LinuxBootConfig(kernelPath: "k")
        c.rng = true
        #expect {
            _ = try RiscVLinuxLoader<RiscV64Platform>.plan(c)
        } throws: { e in "\(e)".contains("not built for riscv64 guests yet") }
    }
}

/// The PLIC against the specification's rules, driven as Linux's driver drives it.
@Suite struct RiscVPLICTests {
    final class Lines: @unchecked Sendable {
        let lock = Lock()
        var events: [(Int, Bool)] = []
        func record(_ c: Int, _ h: Bool) { lock.withLock { events.append((c, h)) } }
        var last: [String] { lock.withLock { events.map { "\($0.0):\($0.1 ? 1 : 0)" } } }
    }

    func write(_ p: RiscVPLIC, _ offset: UInt64, _ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { _ = p.write(at: offset, from: $0, vcpu: 0) }
    }
    func read(_ p: RiscVPLIC, _ offset: UInt64) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { _ = p.read(at: offset, into: $0, vcpu: 0) }
        return UInt32(littleEndian: v)
    }

    @Test func claimCompleteAndLevelTriggeredSources() {
        let lines = Lines()
        let p = RiscVPLIC(sources: 31, contexts: 2) { lines.record($0, $1) }
        p.setLevel(source: 10, high: true)
        #expect(lines.last.isEmpty)                   // priority 0 and not enabled: nothing
        write(p, 4 * 10, 1)                            // priority 1
        write(p, 0x2000, 1 << 10)                      // context 0 enables source 10
        #expect(lines.last == ["0:1"])
        #expect(read(p, 0x1000) == 1 << 10)            // pending
        #expect(read(p, 0x20_0004) == 10)              // claim
        #expect(lines.last == ["0:1", "0:0"])          // in service: output low
        #expect(read(p, 0x20_0004) == 0)               // nothing else
        write(p, 0x20_0004, 10)                        // complete, line still high: again
        #expect(lines.last == ["0:1", "0:0", "0:1"])
        p.setLevel(source: 10, high: false)            // the device lowers its line
        #expect(lines.last.last == "0:0")
        #expect(read(p, 0x20_0004) == 0)
    }

    @Test func priorityThresholdAndContexts() {
        let lines = Lines()
        let p = RiscVPLIC(sources: 31, contexts: 2) { lines.record($0, $1) }
        write(p, 4 * 3, 2); write(p, 4 * 5, 6)
        write(p, 0x2080, 1 << 3 | 1 << 5)              // context 1 enables 3 and 5
        write(p, 0x20_1000, 5)                         // context 1's threshold 5: only 5 passes
        p.setLevel(source: 3, high: true)
        #expect(lines.last.isEmpty)
        p.setLevel(source: 5, high: true)
        #expect(lines.last == ["1:1"])
        #expect(read(p, 0x20_1004) == 5)
        write(p, 0x20_1000, 0)                         // threshold 0: source 3 now passes
        #expect(read(p, 0x20_1004) == 3)
        #expect(read(p, 0x20_1000) == 0 && read(p, 4 * 5) == 6)
    }

    @Test func hostileWritesChangeNothingTheyShouldNot() {
        let lines = Lines()
        let p = RiscVPLIC(sources: 31, contexts: 1) { lines.record($0, $1) }
        write(p, 0x2000, 0xffff_ffff); write(p, 0x2004, 0xffff_ffff)
        #expect(read(p, 0x2000) == 0xffff_fffe && read(p, 0x2004) == 0)  // source 0 and past 31: not there
        write(p, 4 * 7, 0xffff_ffff)
        #expect(read(p, 4 * 7) == 7)                   // 3 priority bits
        write(p, 0x20_0004, 7)                         // complete of a source never claimed
        write(p, 0x20_0004, 0xdead_beef)               // of no source at all
        write(p, 0x20_5000, 1); write(p, 0x3ff_fffc, 1)  // contexts that do not exist
        #expect(read(p, 0x20_5004) == 0 && read(p, 0x1000) == 0)
        p.setLevel(source: 0, high: true); p.setLevel(source: 99, high: true)
        #expect(lines.last.isEmpty)
    }
}

/// The SBI console calls KVM hands the VMM, with a guest's hostile arguments: buffers outside
/// RAM, an upper address half on RV64, lengths that overflow or ask for more than one call
/// moves, RAM that cannot be made present.
@Suite struct RiscVSBIConsoleTests {
    func call(_ c: RiscVSBIConsole, _ ext: UInt64, _ fid: UInt64, _ args: UInt64...) -> (FirmwareAnswer?, [UInt8]) {
        var out: [UInt8] = []
        let a = c.answer(SBICall(extensionID: ext, functionID: fid, args: args + [0, 0, 0])) { out += $0 }
        return (a, out)
    }
    func answer(_ a: FirmwareAnswer?) -> (Int64, UInt64)? {
        guard case let .answer(error, value)? = a else { return nil }
        return (error, value)
    }

    @Test func legacyAndWriteByte() {
        let c = RiscVSBIConsole()
        var (a, out) = call(c, 0x01, 0, 0x141)
        #expect(answer(a)! == (0, 0) && out == [0x41])
        (a, out) = call(c, 0x02, 0)
        #expect(answer(a)! == (-1, 0) && out.isEmpty)
        (a, out) = call(c, RiscVSBIConsole.debugConsole, RiscVSBIConsole.writeByte, 0x7a)
        #expect(answer(a)! == (0, 0) && out == [0x7a])
        (a, _) = call(c, RiscVSBIConsole.debugConsole, 9)
        #expect(answer(a)! == (SBI.notSupported, 0))
        (a, _) = call(c, 0x10, 0)  // SBI base: not the console's
        #expect(a == nil)
    }

    @Test func writeTakesTheGuestsBufferAndChecksIt() {
        let ram = VirtioTestRAM(base: 0x8000_0000, size: 3 * 4096)
        ram[0x8000_0ffe, 5] = Array("hello".utf8)
        var c = RiscVSBIConsole()
        let dbcn = RiscVSBIConsole.debugConsole, w = RiscVSBIConsole.write
        // No memory yet: a failure, not a crash.
        #expect(answer(call(c, dbcn, w, 5, 0x8000_0ffe).0)! == (SBI.failed, 0))
        c.memory = ram.memory
        var (a, out) = call(c, dbcn, w, 5, 0x8000_0ffe)  // across a page boundary
        #expect(answer(a)! == (0, 5) && out == Array("hello".utf8))
        (a, out) = call(c, dbcn, w, 0, 0x8000_0000)
        #expect(answer(a)! == (0, 0) && out.isEmpty)
        // Outside RAM, partly outside, an upper half on RV64, an overflowing end.
        for (n, lo, hi) in [(4, UInt64(0x1000), UInt64(0)), (8, 0x8000_2ffc, 0), (1, 0x8000_0000, 1), (16, UInt64.max - 3, 0)] {
            (a, out) = call(c, dbcn, w, UInt64(n), lo, hi)
            #expect(answer(a)! == (SBI.invalidParam, 0) && out.isEmpty, "write of \(n) at \(hi):\(lo)")
        }
        // A long buffer: one call moves at most maxWrite bytes and says so.
        (a, out) = call(c, dbcn, w, 3 * 4096, 0x8000_0000)
        #expect(answer(a)! == (0, UInt64(RiscVSBIConsole.maxWrite)) && out.count == RiscVSBIConsole.maxWrite)
        // RAM the pager could not make present: SBI_ERR_FAILED.
        ram.failAt.store(0x8000_1000, ordering: .relaxed)
        #expect(answer(call(c, dbcn, w, 8, 0x8000_0ffc).0)! == (SBI.failed, 0))
        // Read: nothing to read, the buffer checked.
        #expect(answer(call(c, dbcn, RiscVSBIConsole.read, 8, 0x8000_0000).0)! == (0, 0))
        #expect(answer(call(c, dbcn, RiscVSBIConsole.read, 8, 0x8000_0000, 2).0)! == (SBI.invalidParam, 0))
    }
}
