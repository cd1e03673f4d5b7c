import AxAddrSpace
@testable import AxVMM
import KVM
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The riscv64 host code, checked on every host (it is compiled everywhere): register ids,
/// the G-stage fault records the pager builds for the library's decoder, the host's G-stage
/// mode, the image header, the parameter page and the layout.
@Suite struct RiscV64Tests {
    @Test func oneRegIDsMatchTheKernelEncoding() {
        // arch/riscv/include/uapi/asm/kvm.h: KVM_REG_RISCV (0x8000…) | KVM_REG_SIZE_U64
        // (0x0030…) | type << 24 (1 config, 2 core, 3 CSR) | the field's index in unsigned longs.
        #expect(RiscV64Register.isa == 0x8030_0000_0100_0000)
        #expect(RiscV64Register.pc == 0x8030_0000_0200_0000)
        #expect(RiscV64Register.sp == 0x8030_0000_0200_0002)
        #expect(RiscV64Register.a0 == 0x8030_0000_0200_000a)
        #expect(RiscV64Register.a1 == 0x8030_0000_0200_000b)
        #expect(RiscV64Register.mode == 0x8030_0000_0200_0020)
        #expect(RiscV64Register.sstatus == 0x8030_0000_0300_0000)
        #expect(RiscV64Register.scause == 0x8030_0000_0300_0005)
        #expect(RiscV64Register.satp == 0x8030_0000_0300_0008)
    }

    @Test func theBootHartStartsAtTheEntryWithItsParametersAndStack() {
        let regs = Dictionary(uniqueKeysWithValues: RiscV64Boot.bootHartRegisters(entry: 0x8010_0010))
        #expect(regs[RiscV64Register.pc] == 0x8010_0010)
        #expect(regs[RiscV64Register.a0] == RiscV64Layout.params)
        #expect(regs[RiscV64Register.a1] == 0)
        #expect(regs[RiscV64Register.sp] == RiscV64Layout.stackBase)
        // The pc goes last: every other register is in place when it is set.
        #expect(RiscV64Boot.bootHartRegisters(entry: 0).last?.0 == RiscV64Register.pc)
    }

    @Test func guestPageFaultsDecodeThroughTheLibrary() throws {
        let store = try #require(RiscV64Faults.guestPageFault(gpa: 0x8020_1236, write: true).fault)
        #expect(store.gpa == GuestPhysAddr(0x8020_1236) && store.access == .write)
        let load = try #require(RiscV64Faults.guestPageFault(gpa: 0x8020_1000, write: false).fault)
        #expect(load.gpa == GuestPhysAddr(0x8020_1000) && load.access == .read)
        #expect(RiscV64Faults.guestPageFault(gpa: 0x8020_1000, write: false).scause == 21)
        let platform = RiscV64Platform(system: nil)
        #expect(platform.nestedFault(gpa: GuestPhysAddr(0x8040_0000), write: true).access == .write)
    }

    @Test func theHostsGStageModeChoosesTheFormat() {
        #expect(RiscV64Host.modeName(gpaBits: 41) == "Sv39x4")
        #expect(RiscV64Host.modeName(gpaBits: 50) == "Sv48x4")
        #expect(RiscV64Host.modeName(gpaBits: 59) == "Sv57x4")
        #expect(RiscV64Host.format(gpaBits: 41).levels == 3)
        #expect(RiscV64Host.format(gpaBits: 50).levels == 4)
        #expect(RiscV64Host.format(gpaBits: 59).levels == 5)
        #expect(RiscV64Host.format(gpaBits: 0).levels == 4)  // unknown: Sv48x4
    }

    @Test func layoutAndParameterPage() {
        #expect(GuestArch.riscv64.ramRanges(size: 256 << 20) == [GuestPhysRange(start: GuestPhysAddr(0x8000_0000), size: 256 << 20)].compactMap { $0 })
        var c = VMConfig(guestPath: "g")
        c.memorySize = 64 << 20
        let p = Machine.guestParamsForTests(c, arch: .riscv64)
        #expect(p.ramBase == 0x8000_0000 && p.testBase == 0x8020_0000 && p.holeSize == 0 && p.holeStart == UInt64.max)
        #expect(p.ramEnd == 0x8000_0000 + 64 << 20)
        #expect(GuestArch(rawValue: "riscv64") == .riscv64)
        #expect(GuestArch(rawValue: "mips") == nil)
    }

    @Test func riscv64ImageHeaderAndWrongHost() throws {
        var bytes = Array("AXG1".utf8) + [0x64, 0x52, 0, 0] + [16, 0, 0, 0, 0, 0, 0, 0]
        bytes += [0x13, 0, 0, 0]  // nop (addi x0, x0, 0)
        let image = try GuestImage(path: "t", bytes: bytes)
        #expect(image.mode == .riscv64 && image.arch == .riscv64)
        #expect(image.loadAddress == 0x8010_0000)
        // An unknown mode is refused naming every mode there is.
        bytes[4] = 0x65
        #expect {
            _ = try GuestImage(path: "t", bytes: bytes)
        } throws: { e in
            "\(e)".contains("unknown mode 0x5265") && "\(e)".contains("0x5264 for riscv64 S-mode") && "\(e)".contains("0xaa64 for AArch64 EL1")
        }
        guard GuestArch.host == .x86_64 else { return }
        // On an x86 host a riscv64 guest is refused before KVM is opened, naming both and
        // where this host's guests are.
        bytes[4] = 0x64
        let path = "/tmp/axvm-riscv64-image-\(getpid()).bin"
        let f = try #require(fopen(path, "w"))
        fwrite(bytes, 1, bytes.count, f)
        fclose(f)
        defer { unlink(path) }
        var c = VMConfig(guestPath: path)
        c.kvmPath = "/nonexistent/kvm"
        #expect {
            _ = try Machine.run(c)
        } throws: { e in
            guard let e = e as? VMMError, case let .guestImage(_, reason) = e else { return false }
            return reason.contains("riscv64 guest") && reason.contains("x86_64 host") && reason.contains("guests/build/")
        }
    }

    @Test func anAccessKVMCannotEmulateEndsTheRunNamingIt() {
        let end = ExitReason.unemulatedAccess(what: "access outside memory other than a plain load or store (an instruction fetch, an AMO)", errno: 95, rip: 0x2000_0000)
        #expect(end.description(pcName: "pc").contains("at pc 0x20000000 that KVM cannot emulate (KVM_RUN: "))
    }
}

/// The memfd HAL gives the 16 KiB G-stage root ("x4") RISC-V KVM's formats need, and a lazy
/// fault resolves through the Sv57x4 tables of the rig's host.
@Suite struct RiscV64MemoryTests {
    @Test func contiguousAlignedRootFromTheTablePool() throws {
        let hal = MemfdHAL(memory: try HostMemory(capacity: 64 << 20), tablePool: 1 << 20)
        #expect(hal.allocFrame() == HostPhysAddr(0x1000))
        #expect(hal.allocContiguousFrames(count: 4, alignment: 0x4000) == HostPhysAddr(0x4000))
        // The frames skipped to align are handed out next, then the pool goes on after the root.
        let next = [hal.allocFrame(), hal.allocFrame(), hal.allocFrame()].compactMap { $0?.raw }.sorted()
        #expect(next == [0x2000, 0x3000, 0x8000])
        #expect(hal.allocContiguousFrames(count: 4, alignment: 0x3000) == nil)  // not a power of two
        #expect(hal.allocContiguousFrames(count: 1 << 20, alignment: 0x4000) == nil)  // past the pool
    }

    @Test func lazyFaultThroughSv57x4() throws {
        let hal = MemfdHAL(memory: try HostMemory(capacity: 64 << 20), tablePool: 1 << 20)
        let ram = GuestPhysRange(start: GuestPhysAddr(RiscV64Layout.ramBase), size: 16 << 20)
        let range = try #require(ram)
        _ = try hal.reserveSpan(for: range)
        let space = try AddrSpace(base: GuestPhysAddr(0), size: 1 << 59, format: GStage.sv57x4(), hal: hal)
        try space.mapAlloc(range.start, size: range.size, flags: [.read, .write, .execute], populate: false)
        let gpa = RiscV64Layout.ramBase + 0x23_4567
        let fault = try #require(RiscV64Faults.guestPageFault(gpa: gpa, write: true).fault)
        #expect(space.translate(GuestPhysAddr(gpa)) == nil)
        _ = space.handlePageFault(fault)
        #expect(space.translate(GuestPhysAddr(gpa)) != nil)
    }
}
