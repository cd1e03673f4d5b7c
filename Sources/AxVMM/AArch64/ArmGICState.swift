import KVM

/// A GICv3's state (and its ITS's) as KVM's device attributes give it out and take it back
/// (Documentation/virt/kvm/devices/arm-vgic-v3.rst, arm-vgic-its.rst): every register a
/// restore writes, in the order it writes them.
///
/// The order is the one QEMU restores a vGICv3 in: the distributor's control, then each
/// redistributor (LPI tables before the control that enables LPIs; configuration before
/// pending state, so that a level interrupt is treated as one), then the distributor's
/// interrupts (routing and configuration before pending state, so that it lands on the right
/// CPU), then each CPU interface's system registers (ICC_CTLR_EL1 before the registers its
/// fields size), then the ITS (its command queue base first, its tables read back from guest
/// memory, its control last). A fresh vGIC enables some interrupts itself: every
/// write-1-to-set register follows a write of all ones to its write-1-to-clear twin.
///
/// What is saved is a list of (target, group, attribute, value); the list a restore expects
/// is worked out from its own vGIC (`plan`), and the saved one must name the same attributes
/// in the same order: a snapshot of another layout (vCPUs, interrupt lines, ITS, priority
/// bits) is refused naming the first attribute that differs.
///
/// Bytes, little-endian: "GICS", version 1, count (u32 each), then per entry its target,
/// group (u32), attribute and value (u64).
struct ArmGICState: Equatable {
    static let magic: UInt32 = 0x5343_4947  // "GICS"
    static let version: UInt32 = 1

    /// The device an attribute belongs to.
    enum Target: UInt32, Sendable { case gic = 0, its = 1 }

    struct Entry: Equatable, Sendable {
        var target: Target
        var group: UInt32
        var attribute: UInt64
        var value: UInt64
    }

    var entries: [Entry]

    init(entries: [Entry]) { self.entries = entries }

    // The attribute groups and commands (ArmGIC's constants, named short here).
    static let groupDistributor = ArmGIC.groupDistributor, groupRedistributor = ArmGIC.groupRedistributor
    static let groupControl = ArmGIC.groupControl, groupCPUSysregs = ArmGIC.groupCPUSysregs
    static let groupLevelInfo = ArmGIC.groupLevelInfo, groupITS = ArmGIC.groupITS
    static let itsSaveTables = ArmGIC.itsSaveTables, itsRestoreTables = ArmGIC.itsRestoreTables
    static let savePendingTables = ArmGIC.savePendingTables

    /// How a restore treats one step of the plan.
    enum Kind: Sendable {
        /// A register: read by the save, written back by the restore.
        case register
        /// A write-1-to-clear register written with all ones (nothing is read).
        case clearAll
        /// A control command the restore gives at this point (the ITS's RESTORE_TABLES).
        case command
    }

    struct Step: Sendable {
        var target: Target
        var group: UInt32
        var attribute: UInt64
        var kind: Kind
    }

    /// The steps a vGICv3 of `layout` with vCPUs `mpidrs` is saved and restored in;
    /// `activePriorityRegisters`: ICC_AP0Rn/AP1Rn per group (1, 2 or 4, from ICC_CTLR_EL1's
    /// PRIbits).
    static func plan(layout: ArmGIC.Layout, mpidrs: [UInt64], activePriorityRegisters: Int) -> [Step] {
        var steps: [Step] = []
        func add(_ target: Target, _ group: UInt32, _ attribute: UInt64, _ kind: Kind) {
            steps.append(Step(target: target, group: group, attribute: attribute, kind: kind))
        }
        func gic(_ group: UInt32, _ attribute: UInt64) { add(.gic, group, attribute, .register) }
        /// A write-1-to-set register after all ones to its write-1-to-clear twin.
        func setAfterClear(_ group: UInt32, _ affinity: UInt64, set: UInt64, clear: UInt64) {
            add(.gic, group, affinity | clear, .clearAll)
            gic(group, affinity | set)
        }
        let lines = UInt64(ArmGIC.lines)
        let redist = groupRedistributor, dist = groupDistributor
        gic(dist, GICD.ctlr)
        for mpidr in mpidrs {
            let a = affinity(mpidr)
            for offset in [GICR.propbaser, GICR.propbaser + 4, GICR.pendbaser, GICR.pendbaser + 4, GICR.ctlr, GICR.waker] {
                gic(redist, a | offset)
            }
            let sgi = GICR.sgiFrame
            gic(redist, a | (sgi + GICD.igroupr))
            setAfterClear(redist, a, set: sgi + GICD.isenabler, clear: sgi + GICD.icenabler)
            gic(redist, a | (sgi + GICD.icfgr + 4))  // ICFGR1: the PPIs (ICFGR0, the SGIs', is fixed)
            gic(groupLevelInfo, a | 0)
            setAfterClear(redist, a, set: sgi + GICD.ispendr, clear: sgi + GICD.icpendr)
            setAfterClear(redist, a, set: sgi + GICD.isactiver, clear: sgi + GICD.icactiver)
            for word in 0..<UInt64(8) { gic(redist, a | (sgi + GICD.ipriorityr + 4 * word)) }
        }
        // The shared interrupts (32 and up; the distributor's words for 0-31 are the
        // redistributors' when affinity routing is on, as it always is on KVM's GICv3).
        let words = 1..<lines / 32
        for w in words { gic(dist, GICD.igroupr + 4 * w) }
        for irq in 32..<lines { gic(dist, GICD.irouter + 8 * irq); gic(dist, GICD.irouter + 8 * irq + 4) }
        for w in 2..<lines / 16 { gic(dist, GICD.icfgr + 4 * w) }
        let first = affinity(mpidrs.first ?? 0)
        for w in words { gic(groupLevelInfo, first | 32 * w) }
        for w in words { setAfterClear(dist, 0, set: GICD.ispendr + 4 * w, clear: GICD.icpendr + 4 * w) }
        for w in words { setAfterClear(dist, 0, set: GICD.isactiver + 4 * w, clear: GICD.icactiver + 4 * w) }
        for w in words { setAfterClear(dist, 0, set: GICD.isenabler + 4 * w, clear: GICD.icenabler + 4 * w) }
        for w in 8..<lines / 4 { gic(dist, GICD.ipriorityr + 4 * w) }
        for mpidr in mpidrs {
            let a = affinity(mpidr)
            for r in [ICC.sre, ICC.ctlr, ICC.igrpen0, ICC.igrpen1, ICC.pmr, ICC.bpr0, ICC.bpr1] { gic(groupCPUSysregs, a | r) }
            for n in 0..<UInt64(activePriorityRegisters) { gic(groupCPUSysregs, a | (ICC.ap0r0 + n)) }
            for n in 0..<UInt64(activePriorityRegisters) { gic(groupCPUSysregs, a | (ICC.ap1r0 + n)) }
        }
        if layout.its {
            // CBASER before CREADR (writing CBASER resets CREADR), the tables after the
            // registers that locate them, CTLR (the enable) last.
            for r in [GITS.iidr, GITS.cbaser, GITS.creadr, GITS.cwriter] { add(.its, groupITS, r, .register) }
            for n in 0..<UInt64(8) { add(.its, groupITS, GITS.baser + 8 * n, .register) }
            add(.its, groupControl, itsRestoreTables, .command)
            add(.its, groupITS, GITS.ctlr, .register)
        }
        return steps
    }

    /// The attribute's vCPU field: MPIDR's affinity levels packed Aff3.Aff2.Aff1.Aff0 into
    /// bits 63-32 (KVM_DEV_ARM_VGIC_V3_MPIDR).
    static func affinity(_ mpidr: UInt64) -> UInt64 {
        ((mpidr >> 32 & 0xff) << 24 | mpidr & 0xff_ffff) << 32
    }

    /// Bytes a group's values have: the CPU interface's system registers and the ITS's
    /// registers 64-bit, the rest 32-bit.
    static func is64Bit(_ group: UInt32) -> Bool { group == groupCPUSysregs || group == groupITS }

    /// ICC_AP0Rn/AP1Rn registers for ICC_CTLR_EL1's PRIbits (bits 10:8, priority bits − 1):
    /// 5 or fewer bits need one, 6 two, 7 four (GIC architecture specification).
    static func activePriorityRegisters(iccCTLR: UInt64) -> Int {
        switch (iccCTLR >> 8) & 7 {
        case 6: 4
        case 5: 2
        default: 1
        }
    }

    /// The plan of `gic` as it stands: its layout, vCPUs and CPU interface's priority bits.
    static func plan(of gic: ArmGIC) throws(KVMError) -> [Step] {
        let ctlr = try gic.device.get(UInt64.self, group: groupCPUSysregs, attribute: affinity(gic.mpidrs.first ?? 0) | ICC.ctlr,
                                      what: "ICC_CTLR_EL1")
        return plan(layout: gic.layout, mpidrs: gic.mpidrs, activePriorityRegisters: activePriorityRegisters(iccCTLR: ctlr))
    }

    /// Reads the state of `gic` (every vCPU out of KVM_RUN: KVM refuses with EBUSY while one
    /// runs). With an ITS, its tables and the LPIs' pending bits are written to guest memory
    /// first, so this comes before guest memory is saved.
    static func save(_ gic: ArmGIC) throws(VMMError) -> ArmGICState {
        guard gic.layout.version == .v3 else {
            throw .host("snapshot: this VM's interrupt controller is a GICv2 (the host has no GICv3 CPU interface for guests); axvm saves a GICv3's state only")
        }
        do {
            if let its = gic.itsDevice {
                try gic.device.command(group: groupControl, attribute: savePendingTables, what: "SAVE_PENDING_TABLES")
                try its.command(group: groupControl, attribute: itsSaveTables, what: "ITS SAVE_TABLES")
            }
            var entries: [Entry] = []
            for step in try plan(of: gic) {
                var value: UInt64 = 0
                switch step.kind {
                case .register:
                    let device = step.target == .its ? gic.itsDevice : gic.device
                    guard let device else { continue }
                    let what = describe(step)
                    value = is64Bit(step.group)
                        ? try device.get(UInt64.self, group: step.group, attribute: step.attribute, what: what)
                        : UInt64(try device.get(UInt32.self, group: step.group, attribute: step.attribute, what: what))
                case .clearAll: value = UInt64(UInt32.max)
                case .command: value = 0
                }
                entries.append(Entry(target: step.target, group: step.group, attribute: step.attribute, value: value))
            }
            return ArmGICState(entries: entries)
        } catch {
            throw .kvm(error)
        }
    }

    /// Writes the state into `gic` (a fresh vGIC made as the saved one was, its vCPUs made,
    /// guest memory present or lazily so, before any vCPU runs); `path`: the state file.
    func restore(_ gic: ArmGIC, path: String) throws(VMMError) {
        let steps: [Step]
        do { steps = try Self.plan(of: gic) } catch { throw .kvm(error) }
        guard steps.count == entries.count else {
            throw .snapshot(path: path, field: "vGIC state", reason: "\(entries.count) registers saved; this VM's vGIC (\(gic.mpidrs.count) vCPUs, \(gic.layout.its ? "an" : "no") ITS) has \(steps.count) (a snapshot of another GIC layout)")
        }
        for (i, (step, entry)) in zip(steps, entries).enumerated() {
            guard step.target == entry.target && step.group == entry.group && step.attribute == entry.attribute else {
                throw .snapshot(path: path, field: "vGIC register \(i)",
                                reason: "the snapshot has \(Self.describe(entry.target, entry.group, entry.attribute)) where this VM's vGIC has \(Self.describe(step)) (a snapshot of another GIC layout)")
            }
            guard let device = step.target == .its ? gic.itsDevice : gic.device else { continue }
            let what = Self.describe(step)
            let wide = Self.is64Bit(step.group)
            guard wide || entry.value <= UInt64(UInt32.max) else {
                throw .snapshot(path: path, field: "vGIC \(what)", reason: "value 0x\(String(entry.value, radix: 16)) does not fit the register's 32 bits")
            }
            do throws(KVMError) {
                switch step.kind {
                case .command:
                    try device.command(group: step.group, attribute: step.attribute, what: what)
                case .register, .clearAll:
                    if wide {
                        try device.set(group: step.group, attribute: step.attribute, entry.value, what: what)
                    } else {
                        try device.set(group: step.group, attribute: step.attribute, UInt32(truncatingIfNeeded: entry.value), what: what)
                    }
                }
            } catch {
                throw .snapshot(path: path, field: "vGIC \(what)", reason: "value 0x\(String(entry.value, radix: 16)): \(error)")
            }
        }
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.u32(Self.magic)
        w.u32(Self.version)
        w.u32(UInt32(entries.count))
        for e in entries {
            w.u32(e.target.rawValue)
            w.u32(e.group)
            w.u64(e.attribute)
            w.u64(e.value)
        }
        return w.bytes
    }

    /// Bytes per entry, and the most entries a state may have (8 vCPUs' redistributors and
    /// CPU interfaces, 1020 interrupt lines' distributor words: far below).
    static let entryBytes = 24
    static let maxEntries = 1 << 14

    /// The state `bytes` hold, every field checked; an error names the field and the value.
    init(decoding bytes: [UInt8], path: String) throws(VMMError) {
        var r = ByteReader(bytes, path: path)
        try r.header("vGIC state", magic: Self.magic, tag: "GICS", version: Self.version)
        let count = try r.u32("vGIC register count")
        guard Int(count) <= Self.maxEntries && Int(count) * Self.entryBytes <= r.remaining else {
            throw r.error("vGIC register count", "\(count) registers (\(r.remaining) bytes left; at most \(Self.maxEntries))")
        }
        entries = []
        entries.reserveCapacity(Int(count))
        for i in 0..<Int(count) {
            let t = try r.u32("vGIC register \(i) target")
            guard let target = Target(rawValue: t) else { throw r.error("vGIC register \(i) target", "\(t); 0 (GIC) or 1 (ITS)") }
            entries.append(Entry(target: target, group: try r.u32("vGIC register \(i) group"),
                                 attribute: try r.u64("vGIC register \(i) attribute"), value: try r.u64("vGIC register \(i) value")))
        }
        guard r.remaining == 0 else { throw r.error("vGIC state", "\(r.remaining) bytes after the last register") }
    }

    static func describe(_ step: Step) -> String { describe(step.target, step.group, step.attribute) }

    /// "GICR 0x10100 (MPIDR affinity 0.0.0.1)"-style names for errors.
    static func describe(_ target: Target, _ group: UInt32, _ attribute: UInt64) -> String {
        let offset = "0x\(String(attribute & 0xffff_ffff, radix: 16))"
        let aff = attribute >> 32
        let cpu = "vCPU affinity \(aff >> 24 & 0xff).\(aff >> 16 & 0xff).\(aff >> 8 & 0xff).\(aff & 0xff)"
        switch (target, group) {
        case (.gic, groupDistributor): return "GICD \(offset)"
        case (.gic, groupRedistributor): return "GICR \(offset) of \(cpu)"
        case (.gic, groupCPUSysregs): return "ICC system register \(offset) of \(cpu)"
        case (.gic, groupLevelInfo): return "line levels of INTIDs \(attribute & 0x3ff)+ (\(cpu))"
        case (.its, groupITS): return "GITS \(offset)"
        case (.its, groupControl): return attribute == itsRestoreTables ? "ITS RESTORE_TABLES" : "ITS command \(attribute)"
        default: return "\(target) group \(group) attribute 0x\(String(attribute, radix: 16))"
        }
    }

    /// Distributor register offsets (GIC architecture specification, GICv3 "GICD_*"); the
    /// redistributor's SGI frame has the same layout for INTIDs 0-31.
    enum GICD {
        static let ctlr: UInt64 = 0x0000
        static let igroupr: UInt64 = 0x0080
        static let isenabler: UInt64 = 0x0100
        static let icenabler: UInt64 = 0x0180
        static let ispendr: UInt64 = 0x0200
        static let icpendr: UInt64 = 0x0280
        static let isactiver: UInt64 = 0x0300
        static let icactiver: UInt64 = 0x0380
        static let ipriorityr: UInt64 = 0x0400
        static let icfgr: UInt64 = 0x0c00
        static let irouter: UInt64 = 0x6000
    }

    /// Redistributor offsets: the RD_base frame, and the SGI_base frame 64 KiB above it.
    enum GICR {
        static let ctlr: UInt64 = 0x0000
        static let waker: UInt64 = 0x0014
        static let propbaser: UInt64 = 0x0070
        static let pendbaser: UInt64 = 0x0078
        static let sgiFrame: UInt64 = 0x1_0000
    }

    /// The CPU interface's system registers as KVM_REG_ARM64_SYSREG encodes them:
    /// op0 << 14 | op1 << 11 | CRn << 7 | CRm << 3 | op2 (all op0 3, op1 0, CRn 12 but PMR's 4).
    enum ICC {
        static func sysreg(crn: UInt64, crm: UInt64, op2: UInt64) -> UInt64 { 3 << 14 | crn << 7 | crm << 3 | op2 }
        static let pmr = sysreg(crn: 4, crm: 6, op2: 0)
        static let bpr0 = sysreg(crn: 12, crm: 8, op2: 3)
        static let ap0r0 = sysreg(crn: 12, crm: 8, op2: 4)
        static let ap1r0 = sysreg(crn: 12, crm: 9, op2: 0)
        static let bpr1 = sysreg(crn: 12, crm: 12, op2: 3)
        static let ctlr = sysreg(crn: 12, crm: 12, op2: 4)
        static let sre = sysreg(crn: 12, crm: 12, op2: 5)
        static let igrpen0 = sysreg(crn: 12, crm: 12, op2: 6)
        static let igrpen1 = sysreg(crn: 12, crm: 12, op2: 7)
    }

    /// ITS register offsets (GITS_*).
    enum GITS {
        static let ctlr: UInt64 = 0x0000
        static let iidr: UInt64 = 0x0004
        static let cbaser: UInt64 = 0x0080
        static let cwriter: UInt64 = 0x0088
        static let creadr: UInt64 = 0x0090
        static let baser: UInt64 = 0x0100
    }
}
