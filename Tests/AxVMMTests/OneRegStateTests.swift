import AxAddrSpace
@testable import AxVMM
import KVM
import Testing

/// The ONE_REG vCPU state arm64 and riscv64 snapshots hold (`OneRegState`), read back from
/// bytes a damaged or hostile file could hold: every field checked, named in the error,
/// nothing trusted for a size. (Saving and restoring real vCPUs runs in the arm64 and
/// riscv64 rigs.)
@Suite struct OneRegStateTests {
    /// arm64-like ids: a 64-bit core register, a 128-bit FP register, a 32-bit one.
    static let sample = OneRegState(mpState: 5, registers: [
        (0x6030_0000_0010_0000, [1, 2, 3, 4, 5, 6, 7, 8]),
        (0x6040_0000_0010_0054, Array(0..<16)),
        (0x6020_0000_0010_00d4, [9, 9, 9, 9]),
    ])

    func decode(_ bytes: [UInt8]) throws(VMMError) -> OneRegState { try OneRegState(decoding: bytes, path: "state") }

    func field(_ bytes: [UInt8]) -> String? {
        do { _ = try decode(bytes); return nil } catch {
            guard case let .snapshot(path, field, _) = error, path == "state" else { return "not a snapshot error: \(error)" }
            return field
        }
    }

    @Test func roundTrip() throws {
        let bytes = Self.sample.encoded()
        #expect(bytes.count == 16 + (8 + 8) + (8 + 16) + (8 + 4))
        #expect(try decode(bytes) == Self.sample)
        #expect(try decode(OneRegState(mpState: 0, registers: []).encoded()).registers.isEmpty)
    }

    @Test func everyTruncationIsRefusedNamingTheField() {
        let bytes = Self.sample.encoded()
        for n in 0..<bytes.count {
            let f = field(Array(bytes.prefix(n)))
            #expect(f != nil && f?.hasPrefix("not a") == false, "\(n) bytes: \(f ?? "accepted")")
        }
        #expect(field(bytes + [0]) == "register state")
    }

    @Test func badHeadersAndSizes() {
        var bytes = Self.sample.encoded()
        bytes[0] ^= 1
        #expect(field(bytes) == "register state magic")
        bytes = Self.sample.encoded()
        bytes[4] = 2
        #expect(field(bytes) == "register state version")
        bytes = Self.sample.encoded()
        bytes[12...15] = [0xff, 0xff, 0xff, 0xff]  // four billion registers
        #expect(field(bytes) == "register count")
        // An id whose size field says 2^15 bytes: no KVM register is that large.
        bytes = OneRegState(mpState: 0, registers: [(0x60f0_0000_0000_0000, [])]).encoded() + [UInt8](repeating: 0, count: 64)
        #expect(field(bytes) == "register 0 id")
    }

    /// Flipped bytes anywhere: decoded or refused, never a crash or a wild allocation.
    @Test func flippedBytesAreDecodedOrRefused() {
        let bytes = Self.sample.encoded()
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            var b = bytes
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if let f = field(b) { #expect(!f.hasPrefix("not a"), "\(f)") }
        }
    }

    @Test func registerSizeFollowsTheIdsSizeField() {
        #expect(VCPU.registerSize(0x6030_0000_0010_0000) == 8)      // KVM_REG_SIZE_U64
        #expect(VCPU.registerSize(0x6040_0000_0010_0054) == 16)     // U128
        #expect(VCPU.registerSize(0x8020_0000_0400_0000) == 4)      // riscv U32
        #expect(VCPU.registerSize(0x6080_0000_0015_0000) == 256)    // U2048 (SVE)
    }

    /// arm64 and riscv64 snapshot the memtest guests, arm64 Linux too (its vGIC's state is
    /// the loader's: `ArmGICState`); riscv64 Linux (a PLIC whose state is not saved) is refused
    /// before the run, naming what is missing.
    @Test func linuxGuestsAreRefusedWhereTheirInterruptControllerIsNotSaved() throws {
        let arm = AArch64Platform(format: try Stage2(levels: 4, ipaBits: 40)), riscv = RiscV64Platform(system: nil)
        #expect(arm.snapshotRefusal(interrupts: .none) == nil && riscv.snapshotRefusal(interrupts: .none) == nil)
        #expect(arm.snapshotRefusal(interrupts: .inKernel) == nil)
        #expect(riscv.snapshotRefusal(interrupts: .inKernel)?.contains("PLIC") == true)
        #expect(arm.fixedStateSizes == nil && riscv.fixedStateSizes == nil)
    }
}
