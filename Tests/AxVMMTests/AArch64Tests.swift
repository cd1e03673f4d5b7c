import AxAddrSpace
@testable import AxVMM
import KVM
import Testing

/// The arm64 host code, checked on every host (it is compiled everywhere): register ids,
/// the guest's stage 1 map, the stage 2 abort records the pager and the NISV exit build for
/// the library's decoder, the devices, the image header and the parameter page.
@Suite struct AArch64Tests {
    @Test func oneRegIDsMatchTheKernelEncoding() {
        // Documentation/virt/kvm/api.rst: 0x6030 0000 0010 <offset in u32 words of kvm_regs>;
        // system registers 0x6030 0000 0013 <op0:2 op1:3 CRn:4 CRm:4 op2:3>.
        #expect(AArch64Register.x(0) == 0x6030_0000_0010_0000)
        #expect(AArch64Register.x(1) == 0x6030_0000_0010_0002)
        #expect(AArch64Register.sp == 0x6030_0000_0010_003e)
        #expect(AArch64Register.pc == 0x6030_0000_0010_0040)
        #expect(AArch64Register.pstate == 0x6030_0000_0010_0042)
        #expect(AArch64Register.spEL1 == 0x6030_0000_0010_0044)
        #expect(AArch64Register.sctlrEL1 == 0x6030_0000_0013_c080)
        #expect(AArch64Register.ttbr0EL1 == 0x6030_0000_0013_c100)
        #expect(AArch64Register.tcrEL1 == 0x6030_0000_0013_c102)
        #expect(AArch64Register.mairEL1 == 0x6030_0000_0013_c510)
    }

    @Test func vcpuStartsAtTheEntryWithItsParametersAndStack() {
        let regs = Dictionary(uniqueKeysWithValues: AArch64Boot.registers(entry: 0x4010_0010, index: 3))
        #expect(regs[AArch64Register.pc] == 0x4010_0010)
        #expect(regs[AArch64Register.x(0)] == AArch64Layout.params)
        #expect(regs[AArch64Register.x(1)] == 3)
        #expect(regs[AArch64Register.spEL1] == AArch64Layout.stackBase - 3 * 0x400)
        #expect(regs[AArch64Register.pstate] == 0x3c5)           // EL1h, DAIF masked
        #expect(regs[AArch64Register.ttbr0EL1] == AArch64Layout.stage1Table)
        #expect(regs[AArch64Register.sctlrEL1].map { $0 & 0b101 } == 0b101)  // M and C
        // PC last: every register the guest needs is set before it.
        #expect(AArch64Boot.registers(entry: 0, index: 0).last?.0 == AArch64Register.pc)
        // TCR_EL1: T0SZ 25 (39-bit VA), TG0 4 KiB, IPS 40 bits.
        #expect(AArch64SystemRegisters.tcr & 0x3f == 25)
        #expect((AArch64SystemRegisters.tcr >> 14) & 3 == 0)
        #expect((AArch64SystemRegisters.tcr >> 32) & 7 == 0b010)
    }

    @Test func stage1MapsDevicesAndRAMByGiB() {
        let e = AArch64Layout.stage1Entries(ramEnd: AArch64Layout.ramBase + (64 << 20))
        #expect(e.count == 2)
        #expect(e[0] == 0x0060_0000_0000_0401)              // Device, AF, PXN, UXN
        #expect(e[1] == 0x4000_0000 | 0x705)                // Normal attr 1, inner shareable, AF
        // 64 GiB of RAM ends at 65 GiB: 65 blocks, each its own GiB.
        let big = AArch64Layout.stage1Entries(ramEnd: AArch64Layout.ramBase + (64 << 30))
        #expect(big.count == 65)
        #expect(big[64] & ~0xfff == 64 << 30)
    }

    @Test(arguments: [(UInt64(0x4020_1234), true), (0x4000_7008, false), (0x10_0000_0000, true)])
    func pagerRecordsDecodeToTheFaultingAccess(_ gpa: UInt64, _ write: Bool) throws {
        let record = AArch64Faults.stage2Abort(ipa: gpa, write: write)
        #expect(record.exceptionClass == 0x24)
        let fault = try #require(record.fault)
        #expect(fault.gpa == GuestPhysAddr(gpa))
        #expect(fault.access == (write ? .write : .read))
        #expect(fault.kind == .translation)
        #expect(AArch64Platform(format: try Stage2(levels: 4, ipaBits: 40)).nestedFault(gpa: GuestPhysAddr(gpa), write: write) == fault)
    }

    @Test func nisvExitIsDecodedByTheLibrary() throws {
        // KVM_EXIT_ARM_NISV for `ldp x2, x3, [x4]` at an unmapped IPA: ISV 0, WnR 0, DFSC
        // translation fault level 0 (0b000100), as KVM passes ESR_EL2's ISS.
        let record = AArch64Faults.unemulated(esrISS: 0b000100, ipa: AArch64Layout.unmapped + 0x10)
        #expect(record.ipa == GuestPhysAddr(AArch64Layout.unmapped + 0x10))
        let fault = try #require(record.fault)
        #expect(fault.access == .read && fault.kind == .translation)
        // An external abort in the ISS is unrecoverable for the library.
        let external = AArch64Faults.unemulated(esrISS: 1 << 6 | 0b010000, ipa: 0x4000_0000)
        #expect(external.fault?.kind == .unrecoverable)
        #expect(external.fault?.access == .write)
    }

    @Test func devicesAnswerTheirAddressesOnly() throws {
        let serial = Serial(toStdout: false)
        let reclaims = Counter()
        var buses = DeviceBuses()
        try AArch64Devices.attachMemtest(&buses, serial: serial, reclaim: { reclaims.add() })
        var word: UInt32 = 0x41
        try withUnsafeMutableBytes(of: &word) { data in
            let bus = buses.mmio
            let r = UnsafeRawBufferPointer(data)
            if case .handled? = bus.write(AArch64Layout.uart, r, vcpu: 0) {} else { Issue.record("UART DR write not handled") }
            if case .endVCPU(.exited(0x41))? = bus.write(AArch64Layout.exitDevice, r, vcpu: 0) {} else {
                Issue.record("exit device write not an exit with the low byte")
            }
            if case .handled? = bus.write(AArch64Layout.reclaimDevice, r, vcpu: 0) {} else { Issue.record("reclaim write not handled") }
            #expect(bus.read(AArch64Layout.unmapped, data, vcpu: 0) == nil, "an unmapped IPA answered as a device")
            #expect(bus.read(AArch64Layout.exitDevice + 1, data, vcpu: 0) == nil, "the exit register is one address")
            _ = try #require(bus.read(AArch64Layout.uart + 0x18, data, vcpu: 0))
        }
        #expect(word == 0)  // FR: never busy
        #expect(serial.text == "A")
        #expect(reclaims.value == 1)
    }

    @Test func parameterPageLaysTestPagesFromRAMBase() {
        var c = VMConfig(guestPath: "")
        c.memorySize = 16 << 20
        let p = Machine.guestParamsForTests(c, arch: .aarch64)
        #expect(p.testBase == 0x4020_0000)
        #expect(p.holeSize == 0)
        #expect(p.ramEnd == 0x4000_0000 + (16 << 20))
        #expect(p.testPageAddress(3) == 0x4020_3000)
        #expect(p.words.count == 15 && p.words[2] == 0x4020_0000)
        // Beyond 3 GiB there is no x86 hole on arm64.
        c.memorySize = 4 << 30
        #expect(Machine.guestParamsForTests(c, arch: .aarch64).holeSize == 0)
        #expect(Machine.guestParamsForTests(c, arch: .x86_64).holeSize == 1 << 30)
    }

    @Test func aarch64ImageHeaderAndWrongHost() throws {
        var bytes = Array("AXG1".utf8) + [0x64, 0xaa, 0, 0] + [16, 0, 0, 0, 0, 0, 0, 0]
        bytes += [0x1f, 0x20, 0x03, 0xd5]  // nop
        let image = try GuestImage(path: "t", bytes: bytes)
        #expect(image.mode == .aarch64 && image.arch == .aarch64)
        #expect(image.loadAddress == 0x4010_0000)
        guard GuestArch.host == .x86_64 else { return }
        // On an x86 host an AArch64 guest is refused before KVM is opened, naming both.
        var c = VMConfig(guestPath: guestPath("aarch64/hello"))
        c.kvmPath = "/nonexistent/kvm"
        #expect {
            _ = try Machine.run(c)
        } throws: { e in
            guard let e = e as? VMMError, case let .guestImage(path, reason) = e else { return false }
            return path.hasSuffix("aarch64/hello.bin") && reason.contains("aarch64 guest") && reason.contains("x86_64 host")
        }
    }

    @Test func reportsNameTheProgramCounterPerArchitecture() {
        let exit = ExitReason.readOnlyWrite(gpa: 0x3000_0000, rip: 0x4010_0040)
        #expect(exit.description(pcName: "pc") == "guest wrote to read-only memory at GPA 0x30000000 (pc 0x40100040); VM stopped")
        #expect(exit.description == "guest wrote to read-only memory at GPA 0x30000000 (rip 0x40100040); VM stopped")
        let abort = ExitReason.unemulatedAbort(ipa: 0x2000_0000, esr: 0x9200_0004, fault: "translation", rip: 0x4010_0020)
        #expect(abort.description(pcName: "pc").contains("IPA 0x20000000 that KVM cannot emulate"))
    }

    @Test func sharedOptionValues() {
        #expect(Frontend.parseTimeout("none") == .some(nil))
        #expect(Frontend.parseTimeout("0") == .some(nil))
        #expect(Frontend.parseTimeout("1.5") == .some(1.5))
        for bad in ["-1", "inf", "nan", "x", ""] { #expect(Frontend.parseTimeout(bad) == nil, "\(bad)") }
        #expect(Frontend.parseOrder("seq") == .sequential && Frontend.parseOrder("strided") == .strided)
        #expect(Frontend.parseOrder("Random") == nil)
        #expect(Frontend.parseMode("overlap") == .overlap && Frontend.parseMode("") == nil)
    }
}
