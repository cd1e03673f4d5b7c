@testable import AxVMM
import Testing

/// The vGICv3 state arm64 Linux snapshots hold (`ArmGICState`): the plan of attributes a save
/// reads and a restore writes, and the bytes read back from what a damaged or hostile file
/// could hold. (Saving and restoring a real vGIC runs in the arm64 rig's snapshot cases.)
@Suite struct ArmGICStateTests {
    static let mpidrs: [UInt64] = [0x8000_0000, 0x8000_0001]
    static func plan(its: Bool = true, mpidrs: [UInt64] = mpidrs, ap: Int = 1) -> [ArmGICState.Step] {
        ArmGICState.plan(layout: ArmGIC.Layout(version: .v3, vcpus: mpidrs.count, its: its), mpidrs: mpidrs, activePriorityRegisters: ap)
    }

    /// A state as a save of `plan` would record it: each step's value made up from its index.
    static func state(_ plan: [ArmGICState.Step]) -> ArmGICState {
        ArmGICState(entries: plan.enumerated().map { i, s in
            ArmGICState.Entry(target: s.target, group: s.group, attribute: s.attribute,
                              value: s.kind == .clearAll ? 0xffff_ffff : ArmGICState.is64Bit(s.group) ? UInt64(i) << 40 | UInt64(i) : UInt64(i))
        })
    }

    func field(_ bytes: [UInt8]) -> String? {
        do { _ = try ArmGICState(decoding: bytes, path: "state"); return nil } catch {
            guard case let .snapshot(path, field, _) = error, path == "state" else { return "not a snapshot error: \(error)" }
            return field
        }
    }

    @Test func planNamesEveryRegisterOnceInRestoreOrder() {
        let steps = Self.plan()
        // Per vCPU: 6 RD_base registers, IGROUPR0, ICFGR1, the line levels, 3 set/clear pairs,
        // 8 priority words; 7 ICC registers and one AP0R/AP1R each. The distributor: CTLR, then
        // for 96 SPIs 3 group words, 192 IROUTER halves, 6 ICFGR words, 3 line-level words,
        // 3 × 3 set/clear pairs, 24 priority words. The ITS: 4 + 8 registers, the command, CTLR.
        let perVCPU = 6 + 1 + 2 + 1 + 1 + 2 + 2 + 8 + 7 + 2
        #expect(steps.count == 1 + 2 * perVCPU + 3 + 192 + 6 + 3 + 18 + 24 + 14)
        let keys = steps.map { "\($0.target) \($0.group) \($0.attribute)" }
        #expect(Set(keys).count == keys.count)
        #expect(steps.first?.attribute == ArmGICState.GICD.ctlr && steps.first?.group == ArmGICState.groupDistributor)
        // The ITS's command queue base before its read pointer, its tables before its enable.
        let its = steps.filter { $0.target == .its }
        #expect(its.map(\.attribute).prefix(3) == [ArmGICState.GITS.iidr, ArmGICState.GITS.cbaser, ArmGICState.GITS.creadr])
        #expect(its.suffix(2).map(\.attribute) == [ArmGICState.itsRestoreTables, ArmGICState.GITS.ctlr])
        #expect(its.suffix(2).first?.kind == .command)
        // Every set register follows its clear twin with all ones.
        for (i, s) in steps.enumerated() where s.kind == .clearAll {
            #expect(steps[i + 1].kind == .register && steps[i + 1].attribute == s.attribute - 0x80)
        }
        // Without an ITS none of its steps; more priority bits, more AP registers.
        #expect(Self.plan(its: false).count == steps.count - 14)
        #expect(Self.plan(ap: 4).count == steps.count + 2 * 6)
    }

    @Test func attributesCarryTheVCPUAffinity() {
        #expect(ArmGICState.affinity(0x8000_0000) == 0)
        #expect(ArmGICState.affinity(0x0000_0001_0002_0304) == 0x0102_0304 << 32)
        let second = Self.plan().filter { $0.group == ArmGICState.groupRedistributor && $0.attribute >> 32 == 1 }
        #expect(second.count == 6 + 1 + 2 + 1 + 2 + 2 + 8)
        #expect(ArmGICState.describe(.gic, ArmGICState.groupRedistributor, 1 << 32 | 0x10100) == "GICR 0x10100 of vCPU affinity 0.0.0.1")
        #expect(ArmGICState.ICC.ctlr == 0xc664 && ArmGICState.ICC.pmr == 0xc230 && ArmGICState.ICC.igrpen1 == 0xc667)
        #expect(ArmGICState.activePriorityRegisters(iccCTLR: 4 << 8) == 1)
        #expect(ArmGICState.activePriorityRegisters(iccCTLR: 5 << 8) == 2)
        #expect(ArmGICState.activePriorityRegisters(iccCTLR: 6 << 8) == 4)
    }

    @Test func roundTripAndEveryTruncationRefused() throws {
        let s = Self.state(Self.plan())
        let bytes = s.encoded()
        #expect(bytes.count == 12 + 24 * s.entries.count)
        #expect(try ArmGICState(decoding: bytes, path: "state") == s)
        for n in stride(from: 0, to: bytes.count, by: 7) {
            let f = field(Array(bytes.prefix(n)))
            #expect(f != nil && f?.hasPrefix("not a") == false, "\(n) bytes: \(f ?? "accepted")")
        }
        #expect(field(bytes + [0]) == "vGIC state")
    }

    @Test func hostileFieldsNamed() {
        var bytes = Self.state(Self.plan(its: false, mpidrs: [0])).encoded()
        var magic = bytes; magic[0] ^= 1
        #expect(field(magic) == "vGIC state magic")
        var version = bytes; version[4] = 9
        #expect(field(version) == "vGIC state version")
        var count = bytes; count[8] = 0xff; count[9] = 0xff; count[10] = 0xff; count[11] = 0x7f
        #expect(field(count) == "vGIC register count")
        bytes[12] = 7  // the first entry's target
        #expect(field(bytes) == "vGIC register 0 target")
    }
}
