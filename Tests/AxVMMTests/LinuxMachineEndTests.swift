#if canImport(Glibc)
import Glibc
#endif
import AxAddrSpace
@testable import AxVMM
import Testing

/// How a Linux guest's machine ends, with tiny "kernels" entered through the real boot path
/// (zero page, ACPI tables, in-kernel LAPIC/IOAPIC/PIT, several vCPUs) on this host's KVM:
/// power-off through the ACPI sleep control register, `halt` (every vCPU halted with
/// interrupts off) as its own end long before the timeout, and application processors that
/// the bootstrap processor starts with INIT/SIPI.
@Suite(.serialized) struct LinuxMachineEndTests {
    /// Boots `code` (64-bit, at the kernel's entry point) on `vcpus` vCPUs with a 20 s timeout.
    func boot(_ code: [UInt8], vcpus: Int = 1, firmware: FirmwareTables = .acpi,
              snapshot: SnapshotPlan? = nil) throws -> (RunReport, seconds: Double) {
        var image = syntheticBzImage(kernelBytes: 0x1000)
        let entry = 5 * 512 + 0x200
        image.replaceSubrange(entry..<(entry + code.count), with: code)
        let kernel = writeTempFile(image, "end-kernel")
        defer { unlink(kernel) }
        var c = LinuxBootConfig(kernelPath: kernel)
        c.allowKVMPVM = true
        c.timeout = 20
        c.memorySize = 64 << 20
        c.vcpus = vcpus
        c.firmware = firmware
        c.snapshot = snapshot
        let t0 = monotonicSeconds()
        let r = try LinuxMachine.boot(c)
        return (r, monotonicSeconds() - t0)
    }

    static let haltForGood: [UInt8] = [0xfa, 0xf4, 0xeb, 0xfd]  // cli; hlt; jmp .-1

    /// Linux's `poweroff` on this machine: SLP_TYP 5 | SLP_EN to the FADT's sleep control
    /// register. The run ends at once, status 0.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func acpiSleepS5PowersOff() throws {
        let code: [UInt8] = [0xb0, 0x34,                    // mov al, (5 << 2) | 0x20
                             0x66, 0xba, 0x00, 0x06,        // mov dx, 0x600
                             0xee] + Self.haltForGood       // out dx, al
        let (r, seconds) = try boot(code)
        #expect(r.exit == .powerOff, "\(r.exit)")
        #expect(r.exitStatus == 0)
        #expect(r.exitDescription == "guest powered off (ACPI sleep state S5)")
        #expect(seconds < 10)
    }

    /// Another sleep type (S3: SLP_TYP 3) is not a power-off, nor is S5 | SLP_EN written to
    /// the status register (a 16-bit write whose second byte lands at 0x601): the guest goes
    /// on, here to its halt.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func otherSleepWritesDoNotPowerOff() throws {
        let s3: [UInt8] = [0xb0, 0x2c, 0x66, 0xba, 0x00, 0x06, 0xee]                    // mov al, 0x2c; out 0x600, al
        let wide: [UInt8] = [0x66, 0xb8, 0x00, 0x34, 0x66, 0xba, 0x00, 0x06, 0x66, 0xef]  // mov ax, 0x3400; out 0x600, ax
        for code in [s3, wide] {
            let (r, _) = try boot(code + Self.haltForGood)
            guard case .deadHalt = r.exit else { Issue.record("\(r.exit)"); return }
        }
    }

    /// `cli; hlt` with the in-kernel LAPIC: KVM halts the vCPU without an exit to axvm, so
    /// the halt probe finds it. The run ends within a second or so with status 4, not at the
    /// 20 s timeout with 124.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func haltWithInterruptsOffEndsTheRun() throws {
        let (r, seconds) = try boot(Self.haltForGood)
        guard case let .deadHalt(rip) = r.exit else { Issue.record("\(r.exit)"); return }
        #expect(rip == LinuxLayout.kernel + LinuxLayout.entryOffset + 2, "hlt is at entry + 1; rip is past it")
        #expect(r.exitStatus == 4)
        #expect(seconds < 5, "ended after \(seconds) s")
    }

    /// An application processor that nobody starts does not keep a halted machine alive.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func unstartedProcessorsDoNotKeepTheRunAlive() throws {
        let (r, seconds) = try boot(Self.haltForGood, vcpus: 3)
        guard case .deadHalt = r.exit else { Issue.record("\(r.exit)"); return }
        #expect(seconds < 5, "ended after \(seconds) s")
    }

    /// The bootstrap processor starts vCPU 1 as Linux does (INIT, then a start-up IPI with
    /// vector 6: real mode at 0x6000) through its in-kernel LAPIC and halts; vCPU 1 prints
    /// "A" on COM1 and halts. Both halted for good: the run ends, with the AP's output.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func bootstrapProcessorStartsAnApplicationProcessor() throws {
        // The AP's 16-bit code: mov dx, 0x3f8; mov al, 'A'; out dx, al; cli; hlt; jmp .-1
        let ap: [UInt8] = [0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee, 0xfa, 0xf4, 0xeb, 0xfd, 0x90, 0x90]
        var code: [UInt8] = []
        for (i, word) in stride(from: 0, to: ap.count, by: 4).enumerated() {
            code += [0xc7, 0x04, 0x25, UInt8(i * 4), 0x60, 0x00, 0x00] + ap[word..<(word + 4)]  // mov dword [0x6000 + 4i], …
        }
        code += [0xbb, 0x00, 0x03, 0xe0, 0xfe]                                // mov ebx, 0xfee00300 (ICR low)
        code += [0xc7, 0x83, 0xf0, 0xfd, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00]  // mov dword [rbx - 0x210], 0x1ff (SVR: enable)
        code += [0xc7, 0x43, 0x10, 0x00, 0x00, 0x00, 0x01]                    // mov dword [rbx + 0x10], APIC id 1 << 24
        code += [0xc7, 0x03, 0x00, 0x45, 0x00, 0x00]                          // mov dword [rbx], INIT, assert
        code += [0xc7, 0x03, 0x06, 0x46, 0x00, 0x00]                          // mov dword [rbx], start-up, vector 6
        code += Self.haltForGood
        let (r, seconds) = try boot(code, vcpus: 2)
        guard case .deadHalt = r.exit else { Issue.record("\(r.exit)"); return }
        #expect(r.serialOutput.contains("A"), "AP's output: \(r.serialOutput.debugDescription)")
        #expect(seconds < 5, "ended after \(seconds) s")
    }

    /// The Linux loader's snapshot: a kernel prints "s", computes a sum in a loop, prints a
    /// letter from it and powers off. Snapshotted at the "s" (in-kernel irqchip, PIT, LAPIC
    /// and clock saved with the registers, the UART's registers with the loader) and
    /// restored, it prints the same letter as an uninterrupted run and powers off.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here"), arguments: [1, 2])
    func snapshotAndRestoreOfALinuxMachine(vcpus: Int) throws {
        let code: [UInt8] = [0x66, 0xba, 0xf8, 0x03,            // mov dx, 0x3f8
                             0xb0, 0x73, 0xee,                  // mov al, 's'; out dx, al
                             0xb9, 0x10, 0x27, 0x00, 0x00,      // mov ecx, 10000
                             0x31, 0xc0,                        // xor eax, eax
                             0x01, 0xc8, 0xff, 0xc9, 0x75, 0xfa, // add eax, ecx; dec ecx; jnz .-6
                             0x83, 0xe0, 0x0f, 0x04, 0x41,      // and eax, 15; add al, 'A'
                             0xee,                              // out dx, al
                             0xb0, 0x34, 0x66, 0xba, 0x00, 0x06, 0xee] + Self.haltForGood  // S5 power-off
        let (plain, _) = try boot(code, vcpus: vcpus)
        #expect(plain.exit == .powerOff, "\(plain.exitDescription)")
        let letter = try #require(plain.serialOutput.last)
        let dir = "/tmp/axvm-test-\(getpid())-linux-snap"
        defer { removeSnapshot(dir) }
        var plan = SnapshotPlan(directory: dir)
        plan.onText = "s"
        plan.andExit = true
        let (taken, _) = try boot(code, vcpus: vcpus, snapshot: plan)
        #expect(taken.exit == .snapshotTaken(directory: dir), "\(taken.exitDescription)")
        var r = RestoreConfig(directory: dir)
        r.timeout = 20
        let restored = try Snapshots.restore(r)
        #expect(restored.exit == .powerOff, "\(restored.exitDescription)")
        #expect(restored.serialOutput == String(letter), "\(restored.serialOutput.debugDescription) after the restore, \(plain.serialOutput.debugDescription) without")
        #expect(restored.linux != nil)
    }

    /// Without firmware tables a guest finds one CPU: more vCPUs are refused up front.
    @Test func severalVCPUsNeedFirmwareTables() throws {
        var c = LinuxBootConfig(kernelPath: "/nonexistent")
        c.vcpus = 2
        c.firmware = .none
        do {
            _ = try LinuxMachine.plan(c)
            Issue.record("accepted")
        } catch {
            #expect("\(error)".contains("vCPUs"), "\(error)")
        }
    }
}
