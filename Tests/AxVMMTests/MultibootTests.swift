@testable import AxVMM
import AxAddrSpace
import Glibc
import Testing

/// An ELF32 i386 executable with a multiboot header: `segments` as (address, file bytes,
/// memory size); the header at `headerAt` with `flags` (a wrong `checksum` if given).
private func elf32(segments: [(UInt32, [UInt8], UInt32)], entry: UInt32, flags: UInt32 = 3, headerAt: Int = 0x80,
                   checksum: UInt32? = nil, machine: UInt16 = 3, elfClass: UInt8 = 1) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 0x1000)
    func put16(_ v: UInt16, _ o: Int) { b[o] = UInt8(v & 0xff); b[o + 1] = UInt8(v >> 8) }
    func put32(_ v: UInt32, _ o: Int) { for i in 0..<4 { b[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
    b.replaceSubrange(0..<4, with: [0x7f, 0x45, 0x4c, 0x46])
    b[4] = elfClass; b[5] = 1; b[6] = 1
    put16(2, 16); put16(machine, 18); put32(1, 20); put32(entry, 24)
    put32(52, 28)                                   // e_phoff
    put16(32, 42); put16(UInt16(segments.count), 44)
    put32(0x1BAD_B002, headerAt); put32(flags, headerAt + 4)
    put32(checksum ?? (0 &- 0x1BAD_B002 &- flags), headerAt + 8)
    for (i, s) in segments.enumerated() {
        let p = 52 + 32 * i, offset = b.count
        put32(1, p); put32(UInt32(offset), p + 4); put32(s.0, p + 8); put32(s.0, p + 12)
        put32(UInt32(s.1.count), p + 16); put32(s.2, p + 20)
        b += s.1
    }
    return b
}

private let code: [UInt8] = Array(repeating: 0x90, count: 64)
private let goodKernel = elf32(segments: [(0x40_0000, code, 0x2000)], entry: 0x40_0010)

private func refusal(_ bytes: [UInt8]) -> String? {
    do { _ = try MultibootKernel(path: "k", bytes: bytes); return nil } catch { return "\(error)" }
}

private func u32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) } }

@Suite("Multiboot kernels (kvm-unit-tests' x86 format)")
struct MultibootTests {
    @Test func parsesSegmentsAndEntry() throws {
        let k = try MultibootKernel(path: "k", bytes: goodKernel)
        #expect(k.entry == 0x40_0010)
        #expect(k.segments == [MultibootKernel.Segment(fileOffset: 0x1000, address: 0x40_0000, fileSize: 64, memorySize: 0x2000)])
        #expect(MultibootKernel.headerOffset(in: goodKernel) == 0x80)
    }

    @Test func refusesWhatItCannotLoadNamingWhy() {
        #expect(refusal(elf32(segments: [(0x40_0000, code, 64)], entry: 0x40_0000, checksum: 1))
            == "kernel k: no multiboot header in its first 8192 bytes")
        #expect(refusal(elf32(segments: [(0x40_0000, code, 64)], entry: 0x40_0000, flags: 1 << 2))?
            .contains("ask for a video mode (bit 2)") == true)
        #expect(refusal(elf32(segments: [(0x40_0000, code, 64)], entry: 0x40_0000, flags: 1 << 16))?
            .contains("bit 16, for a.out kernels") == true)
        #expect(refusal(elf32(segments: [(0x40_0000, code, 64)], entry: 0x40_0000, flags: 1 << 5))?
            .contains("require features axvm does not know (bits 3-15)") == true)
        #expect(refusal(elf32(segments: [(0x40_0000, code, 64)], entry: 0x40_0000, elfClass: 2))
            == "kernel k: ELF class 2, data encoding 1: a multiboot kernel is ELF32 little-endian (1, 1)")
        #expect(refusal(elf32(segments: [(0x40_0000, code, 64)], entry: 0x40_0000, machine: 62))
            == "kernel k: ELF type 2, machine 62: expected an i386 executable (2, 3)")
        #expect(refusal(elf32(segments: [(0x40_0000, code, 32)], entry: 0x40_0000))
            == "kernel k: segment 0 has more bytes in the file (64) than in memory (32)")
        #expect(refusal(elf32(segments: [(0xffff_f000, code, 0x2000)], entry: 0xffff_f000))
            == "kernel k: segment 0 at 0xfffff000 + 0x2000 ends past 4 GiB")
        #expect(refusal(elf32(segments: [(0x40_0000, code, 64)], entry: 0x50_0000))
            == "kernel k: entry point 0x500000 is in none of its loadable segments")
        #expect(refusal(elf32(segments: [], entry: 0x40_0000))
            == "kernel k: program header table (offset 52, 0 entries of 32 bytes) is not inside the 4096-byte file")
        // Truncated: the segment's bytes end past the file.
        #expect(refusal(Array(goodKernel.dropLast(8)))
            == "kernel k: segment 0's 64 bytes at offset 4096 end past the 4152-byte file (truncated?)")
        // A multiboot header in a file that is no ELF.
        var notELF = goodKernel
        notELF[1] = 0
        #expect(refusal(notELF) == "kernel k: a multiboot header, but not an ELF file (axvm loads multiboot kernels in ELF32 format)")
        // Every truncation of a good kernel is refused or parsed, never a crash.
        for n in stride(from: 0, to: goodKernel.count, by: 7) { _ = refusal(Array(goodKernel.prefix(n))) }
    }

    @Test func planPutsModuleAndInformationAfterTheKernel() throws {
        let k = try MultibootKernel(path: "k", bytes: goodKernel)
        let ram = X86Layout.ramRanges(size: 64 << 20)
        let p = try MultibootPlan(kernel: k, ram: ram, cmdline: "a b", modulePath: "/x/environ", moduleSize: 100)
        #expect(p.moduleAddress == 0x40_2000)
        #expect(p.infoAddress == 0x40_3000)
        let i = p.info
        #expect(u32(i, 0) == 0x4d)                       // mem, cmdline, mods, mmap
        #expect(u32(i, 4) == 640)
        #expect(u32(i, 8) == (64 << 10) - 1024)           // KiB above 1 MiB
        #expect(u32(i, 16) == 0x40_4000)
        #expect(Array(i[0x1000..<0x1006]) == Array("k a b\0".utf8))  // argv[0] the kernel
        #expect(u32(i, 20) == 1 && u32(i, 24) == 0x40_3080)
        #expect(u32(i, 0x80) == 0x40_2000 && u32(i, 0x84) == 0x40_2000 + 100)
        #expect(String(decoding: i[0x800..<0x807], as: UTF8.self) == "environ")
        #expect(u32(i, 44) == 24 && u32(i, 48) == 0x40_3100)
        #expect(u32(i, 0x100) == 20 && u32(i, 0x104) == 0 && u32(i, 0x10c) == 64 << 20 && u32(i, 0x114) == 1)
        // Without a module: no mods flag, the information right after the kernel.
        let bare = try MultibootPlan(kernel: k, ram: ram, cmdline: "", modulePath: nil, moduleSize: 0)
        #expect(u32(bare.info, 0) == 0x45 && bare.infoAddress == 0x40_2000)
    }

    @Test func planRefusesWhatDoesNotFit() throws {
        let k = try MultibootKernel(path: "k", bytes: goodKernel)
        let ram = X86Layout.ramRanges(size: 4 << 20)
        func reason(_ cmdline: String = "", module: UInt64 = 0, in ram: [GuestPhysRange] = ram) -> String? {
            do { _ = try MultibootPlan(kernel: k, ram: ram, cmdline: cmdline, modulePath: "m", moduleSize: module); return nil } catch { return "\(error)" }
        }
        #expect(reason()?.hasPrefix("kernel segment 0 [0x400000, 0x402000) is not inside guest RAM") == true)
        let big = X86Layout.ramRanges(size: 64 << 20)
        #expect(reason(String(repeating: "x", count: 4094), in: big) == "kernel command line: 4096 bytes with the kernel's path before it, more than the 4095 a multiboot command line page holds")
        #expect(reason(String(repeating: "x", count: 4093), in: big) == nil)  // "k " and 4093 bytes: the most
        #expect(reason("a\0b", in: big) == "kernel command line: contains a NUL byte")
        #expect(reason(module: 62 << 20, in: big)?.hasPrefix("module [0x402000, 0x4202000) is not inside guest RAM") == true)
        #expect(reason(module: (64 << 20) - 0x40_3000, in: big)?.hasPrefix("multiboot information [0x3fff000, 0x4001000) is not inside guest RAM") == true)
        #expect(reason(module: 1 << 33, in: big)?.contains("do not fit below 4 GiB") == true)
    }

    @Test func firmwareConfigAnswersItsItems() {
        let d = FirmwareConfig(ram: 256 << 20, cpus: 3)
        func item(_ key: UInt16, _ n: Int) -> [UInt8] {
            withUnsafeBytes(of: key.littleEndian) { _ = d.write(at: 0, from: $0, vcpu: 0) }
            var out = [UInt8](repeating: 0xaa, count: n)
            for i in 0..<n { out.withUnsafeMutableBytes { _ = d.read(at: 1, into: UnsafeMutableRawBufferPointer(rebasing: $0[i..<i + 1]), vcpu: 0) } }
            return out
        }
        #expect(item(0x00, 6) == Array("QEMU".utf8) + [0, 0])  // past the end: zeros
        #expect(item(0x05, 2) == [3, 0])
        #expect(item(0x03, 8) == [0, 0, 0, 0x10, 0, 0, 0, 0])
        #expect(item(0x1234, 4) == [0, 0, 0, 0])                // no such item
        // A data port write changes nothing; selecting again starts from the item's start.
        _ = [UInt8(9)].withUnsafeBytes { d.write(at: 1, from: $0, vcpu: 0) }
        #expect(item(0x05, 1) == [3])
    }

    @Test func debugExitEndsTheMachineWithTheCode() {
        guard case .endMachine(.guestExit(code: 38)) = [UInt8(38), 0, 0, 0].withUnsafeBytes({ DebugExit().write(at: 0, from: $0, vcpu: 0) }) else {
            Issue.record("no guest exit")
            return
        }
    }

    @Test func testDeviceSetsOneLinePerByte() {
        final class Lines: @unchecked Sendable { var set: [(UInt32, Bool)] = [] }  // one thread
        let lines = Lines()
        let d = TestDeviceIRQLines(setLine: { lines.set.append(($0, $1)) })
        _ = [UInt8(1), 0, 0, 0].withUnsafeBytes { d.write(at: 0x0b, from: $0, vcpu: 0) }  // outl 1, 0x200b
        #expect(lines.set.map { $0.0 } == [11, 12, 13, 14] && lines.set.map { $0.1 } == [true, false, false, false])
        lines.set = []
        _ = [UInt8(7), 7].withUnsafeBytes { d.write(at: 23, from: $0, vcpu: 0) }        // past line 23: dropped
        #expect(lines.set.map { $0.0 } == [23] && lines.set.first?.1 == true)
    }

    @Test func testDeviceMemoryReadsBackWhatWasWritten() {
        let m = TestDeviceMemory()
        _ = [UInt8(1), 2, 3, 4, 5, 6, 7, 8].withUnsafeBytes { m.write(at: 0xfffc, from: $0, vcpu: 0) }  // half past the end
        var out = [UInt8](repeating: 0, count: 8)
        _ = out.withUnsafeMutableBytes { m.read(at: 0xfffc, into: $0, vcpu: 0) }
        #expect(out == [1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff])
        _ = out.withUnsafeMutableBytes { m.read(at: 0, into: $0, vcpu: 0) }
        #expect(out == [UInt8](repeating: 0, count: 8))
    }

    /// guests/multiboot/mbcheck.S on KVM: what it prints is what the loader handed it.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func bootsTheMultibootGuest() throws {
        _ = Guests.built
        let module = "/tmp/axvm-mbmod-\(getpid())"
        #expect(writeFile(module, Array("KEY=VALUE\nMORE=1\n".utf8)))
        defer { unlink(module) }
        var c = LinuxBootConfig(kernelPath: Guests.root + "/guests/build/multiboot.elf")
        c.cmdline = "hello world"
        c.initrdPath = module
        c.memorySize = 64 << 20
        c.vcpus = 2
        c.timeout = 30
        let r = try LinuxMachine.boot(c)
        #expect(r.exit == .guestExit(code: 0), "\(r.exit)\n\(r.serialOutput)")
        for line in ["mbcheck: magic ok", "mbcheck: cmdline [\(c.kernelPath) hello world]", "mbcheck: module [KEY=VALUE]",
                     "mbcheck: mem_upper 0x0000fc00", "mbcheck: fw_cfg QEMU cpus 0x00000002", "mbcheck: bss zero, done"] {
            #expect(r.serialOutput.contains(line + "\n"), "\(line) missing from:\n\(r.serialOutput)")
        }
        #expect(r.linux?.multiboot == true)
    }

    /// A kernel that halts for good (cli; hlt, its second CPU never started) ends the run
    /// at once with status 4, not at the timeout.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func haltForGoodEndsTheRun() throws {
        _ = Guests.built
        var c = LinuxBootConfig(kernelPath: Guests.root + "/guests/build/multiboot-halt.elf")
        c.memorySize = 16 << 20
        c.vcpus = 2
        c.timeout = 60
        let t0 = monotonicSeconds()
        let r = try LinuxMachine.boot(c)
        guard case .deadHalt = r.exit else { Issue.record("\(r.exit)"); return }
        #expect(r.exitStatus == 4)
        #expect(monotonicSeconds() - t0 < 30, "ended by the halt watch, not the timeout")
    }

    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func refusesWhatAMultibootMachineHasNot() throws {
        _ = Guests.built
        var c = LinuxBootConfig(kernelPath: Guests.root + "/guests/build/multiboot.elf")
        c.memorySize = 64 << 20
        c.rng = true
        #expect(throws: LinuxBootError.self) { try LinuxMachine.boot(c) }
        do { _ = try LinuxMachine.boot(c) } catch {
            #expect("\(error)".contains("virtio devices 1") && "\(error)".contains("not with a multiboot kernel"))
        }
        c.rng = false
        c.rawKernel = true
        do { _ = try LinuxMachine.boot(c); Issue.record("--raw accepted on x86") } catch {
            #expect("\(error)".contains("raw binaries are booted on arm64 hosts"))
        }
    }
}
