import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// What memtest guest to run and how (`axvm run`).
public struct VMConfig: Sendable {
    public var guestPath: String
    /// How it runs (RAM, paging, vCPUs, …): what the runner gets (`MemtestLoader.settings`).
    public var settings = RunSettings.memtest
    public var testOrder: GuestParams.Order = .sequential
    /// memtest's stride in pages for the strided order: 1 … the number of test pages (nil:
    /// `defaultStride`).
    public var stridePages: UInt64?
    public var seed: UInt64 = 1
    /// Bytes the memtest guest touches: a 4 KiB multiple, at least 4 KiB (nil: all RAM above
    /// 2 MiB).
    public var testSize: UInt64?
    /// Spread the test pages evenly over all RAM above 2 MiB instead of taking the first
    /// `testSize` bytes (so a small test size still reaches RAM above 4 GiB).
    public var sparse = false
    /// How memtest's vCPUs share the test pages.
    public var memtestMode: GuestParams.Mode = .split

    public init(guestPath: String) { self.guestPath = guestPath }

    public static let maxMemory: UInt64 = 64 << 30
    public static let defaultStride: UInt64 = 16
    /// The longest `timeout`: one week.
    public static let maxTimeout: Double = 7 * 86_400
    /// The test region starts this far into RAM (x86: at 2 MiB; arm64: at 1 GiB + 2 MiB).
    public static let testBase: UInt64 = 2 << 20
    public static let romSize: UInt64 = 0x1_0000
}

extension RunSettings {
    /// A memtest run's defaults (`axvm run`; a restored memtest guest's fault-around).
    public static let memtest = RunSettings(memorySize: 64 << 20, faultAround: 4 << 10, timeout: 30)
}

extension VMConfig: RunConfiguration {}

/// Runs one guest on KVM with its memory managed by `AddrSpace`: an x86_64 guest on an x86
/// host (nested faults as AMD #NPF or Intel EPT violations), an AArch64 guest on an arm64
/// host (stage 2 aborts).
public enum Machine {
    public static func run(_ config: VMConfig) throws(VMMError) -> RunReport {
        struct Job: Platforms.Job {
            let config: VMConfig
            func run<P: Platform>(_ platform: P) throws(VMMError) -> RunReport {
                try Machine.validate(config)
                let image = try GuestImage(path: config.guestPath)
                return try Runner(loader: try MemtestLoader(platform: platform, config: config, image: image)).run()
            }
        }
        return try Platforms.withHost(Job(config: config))
    }

    /// Validates user-given values, naming the bad one. Everything that reaches the guest's
    /// arithmetic is bounded here.
    public static func validate(_ c: VMConfig) throws(VMMError) { try validate(c, restoring: false) }

    /// `restoring`: the configuration of a restored guest, whose snapshot plan may be a diff.
    static func validate(_ c: VMConfig, restoring: Bool) throws(VMMError) {
        try validateMemory(c.memorySize, faultAround: c.faultAround)
        let usable = c.memorySize - VMConfig.testBase
        if let size = c.testSize, size & 0xfff != 0 || size == 0 || size > usable {
            throw .badSize(what: "test size", value: size,
                           reason: "must be a 4 KiB multiple from 4 KiB to the \(usable) bytes of RAM above 2 MiB (leave --test-size out for all of it)")
        }
        if let t = c.timeout, !(t > 0 && t <= VMConfig.maxTimeout) {
            throw .badValue(what: "timeout", value: "\(t)",
                            reason: "must be a number of seconds above 0 and at most \(Int(VMConfig.maxTimeout)) (one week); 0 or none: no limit")
        }
        if c.vcpus < 1 || c.vcpus > GuestParams.maxVCPUs {
            throw .badValue(what: "vCPUs", value: "\(c.vcpus)", reason: "must be from 1 to \(GuestParams.maxVCPUs)")
        }
        if let t = c.faultThreads, t < 1 || t > 64 {
            throw .badValue(what: "fault threads", value: "\(t)", reason: "must be from 1 to 64")
        }
        // A stride the user gave is checked whatever the order; the default only where it
        // is used, and the message says it is the default.
        let testPages = (c.testSize ?? usable) / 4096
        let stride = c.stridePages ?? VMConfig.defaultStride
        if (c.stridePages != nil || c.testOrder == .strided) && (stride < 1 || stride > testPages) {
            let given = c.stridePages == nil ? " (the default stride; --stride sets it)" : ""
            throw .badSize(what: "stride", value: stride,
                           reason: "must be from 1 to the \(testPages) test pages\(given)")
        }
        try c.snapshot?.validate()
        if let plan = c.snapshot, plan.diff && !restoring {
            throw .badValue(what: "diff snapshot", value: plan.directory, reason: "needs a restored VM (axvm restore … --snapshot-diff): a diff is over the snapshot restored")
        }
        if let m = c.maxResident {
            if m & 0xfff != 0 || m == 0 {
                throw .badSize(what: "max resident", value: m, reason: "must be a non-zero multiple of 4 KiB")
            }
            if !c.lazy && m < c.memorySize {
                throw .badSize(what: "max resident", value: m,
                               reason: "below the \(c.memorySize) bytes (\(c.memorySize >> 20) MiB) of RAM that --populate maps up front")
            }
        }
    }

    /// The checks every front end makes on guest RAM and the fault-around window.
    public static func validateMemory(_ memorySize: UInt64, faultAround fa: UInt64) throws(VMMError) {
        if memorySize & 0xfff != 0 { throw .badSize(what: "memory size", value: memorySize, reason: "not a multiple of 4 KiB") }
        if memorySize < 4 << 20 { throw .badSize(what: "memory size", value: memorySize, reason: "below the 4 MiB minimum") }
        if memorySize > VMConfig.maxMemory {
            throw .badSize(what: "memory size", value: memorySize, reason: "above the \(VMConfig.maxMemory >> 30) GiB maximum")
        }
        if fa < 4096 || fa > 2 << 20 || fa & (fa - 1) != 0 {
            throw .badSize(what: "fault-around", value: fa, reason: "must be a power of two from 4 KiB to 2 MiB")
        }
    }

    /// `guestParams`, for tests that work out what a guest must report.
    public static func guestParamsForTests(_ c: VMConfig, arch: GuestArch = .x86_64) -> GuestParams {
        guestParams(c, arch: arch)
    }

    /// The parameters the guest gets for `c` (validated).
    static func guestParams(_ c: VMConfig, arch: GuestArch = .x86_64) -> GuestParams {
        let usable = c.memorySize - VMConfig.testBase
        let size = c.testSize ?? usable
        let spacing = c.sparse && size > 0 ? max(1, (usable / 4096) / (size / 4096)) : 1
        var p = GuestParams(memorySize: c.memorySize, testBase: arch.ramBase + VMConfig.testBase, testSize: size,
                            order: c.testOrder, stridePages: c.stridePages ?? VMConfig.defaultStride, seed: c.seed, spacing: spacing, arch: arch)
        p.vcpus = UInt64(c.vcpus)
        p.mode = c.memtestMode
        return p
    }
}


/// The memtest guests of guests/ (`GuestImage`): the parameter page, the platform's boot
/// data and registers, a read-only area holding "AXVMROM!", and the platform's memtest
/// devices; an MMIO access outside every area ends the run, as does a `hlt`.
final class MemtestLoader<P: Platform>: GuestLoader, @unchecked Sendable {  // immutable but `serial`, which locks
    let platform: P
    let config: VMConfig
    /// nil for a restore (guest memory comes from the snapshot).
    let image: GuestImage?
    let params: GuestParams
    let serial: Serial
    let settings: RunSettings
    let ram: [GuestPhysRange]

    convenience init(platform: P, config: VMConfig, image: GuestImage) throws(VMMError) {
        let arch = platform.arch
        if image.arch != arch {
            throw .guestImage(path: image.path, reason: "an \(image.arch) guest; this \(arch) host runs \(arch) guests (\(arch.guestDirectory))")
        }
        let fits = image.loadAddress.addingReportingOverflow(UInt64(image.bytes.count))
        if fits.overflow || fits.partialValue > arch.ramBase + min(config.memorySize, VMConfig.testBase) {
            throw .guestImage(path: image.path, reason: "\(image.bytes.count) bytes at 0x\(String(image.loadAddress, radix: 16)) do not fit below the test region at 2 MiB into the \(config.memorySize)-byte RAM")
        }
        self.init(platform: platform, config: config, image: image as GuestImage?)
    }

    private init(platform: P, config: VMConfig, image: GuestImage?) {
        self.platform = platform
        self.config = config
        self.image = image
        params = Machine.guestParams(config, arch: platform.arch)
        serial = Serial(toStdout: config.serialToStdout)
        settings = config.settings
        ram = platform.ramRanges(size: config.memorySize)
    }

    var interrupts: InterruptModel { .none }
    var testRegionBase: GuestPhysAddr { GuestPhysAddr(params.testBase) }

    func load(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        guard let image else { throw .host("memtest loader without an image (a restore) asked to load") }
        let rom = try memory.addRAM(at: platform.romBase, size: VMConfig.romSize, lazy: false, readOnly: true)
        try memory.write(Array("AXVMROM!".utf8), at: rom.range.start)
        try memory.write(params.words, at: platform.paramsAddress)
        try platform.bootMemtest(memory: memory, params: params, image: image, vcpus: vcpus)
        try memory.write(image.bytes, at: GuestPhysAddr(image.loadAddress))
    }

    func start(vm: VirtualMachine, kick: @escaping @Sendable () -> Void) throws(VMMError) {}
    func stop() {}

    func attach(_ buses: inout DeviceBuses, memory: GuestMemory<P.Format>, ram: [RAMRegion]) throws(VMMError) {
        try platform.attachMemtestDevices(&buses, serial: serial, reclaim: { [self] () throws(VMMError) in
            try reclaim(memory: memory, ram: ram)
        })
    }

    func unclaimedMMIO(gpa: GuestPhysAddr, isWrite: Bool, size: Int, pc: UInt64) -> ExitReason? {
        let rom = platform.romBase
        if isWrite && gpa >= rom && gpa.raw < rom.raw + VMConfig.romSize { return .readOnlyWrite(gpa: gpa.raw, rip: pc) }
        return .unmappedAccess(gpa: gpa.raw, write: isWrite, size: size, rip: pc)
    }

    func halted(_ vcpu: VCPU) -> VCPUOutcome? { platform.halted(vcpu) }
    func kicked(_ vcpu: VCPU, vm: VirtualMachine) -> ExitReason? { nil }
    func timeoutState(_ vcpu: VCPU, vm: VirtualMachine, exits: Int) -> String? { nil }

    /// The vCPU slots of the parameter page: checksums, mismatches, pages.
    func finish(_ report: inout RunReport, memory: GuestMemory<P.Format>, ram: [RAMRegion], outcomes: [VCPUOutcome]) {
        report.serialOutput = serial.text
        var result = MemtestResult(config: config)
        var slots: [(checksum: UInt64, mismatches: UInt64, pages: UInt64)] = []
        for i in 0..<config.vcpus {
            let base = platform.vcpuSlot(i)
            slots.append(((try? memory.read(base, as: UInt64.self)) ?? 0,
                          (try? memory.read(base + 8, as: UInt64.self)) ?? 0,
                          (try? memory.read(base + 16, as: UInt64.self)) ?? 0))
        }
        result.vcpuChecksums = slots.map { $0.checksum }
        result.mismatches = slots.reduce(0) { $0 &+ $1.mismatches }
        if config.memtestMode == .overlap {
            result.checksum = slots.first?.checksum ?? 0
            result.pagesPlanned = slots.first?.pages ?? 0
        } else {
            result.checksum = slots.reduce(0) { $0 &+ $1.checksum }
            result.pagesPlanned = slots.reduce(0) { $0 &+ $1.pages }
        }
        if case .guestExit = report.exit { result.pagesTouched = result.pagesPlanned }
        report.memtest = result
    }

    func finishEarly(_ report: inout RunReport) {
        report.memtest = MemtestResult(config: config)
    }

    func watchConsole(_ text: String, _ action: @escaping @Sendable () -> Void) { serial.watch(text, action) }

    // A snapshot keeps the configuration the guest's parameters and results come from; the
    // devices (console, exit and reclaim ports) have no state.
    var snapshotKind: String { "memtest" }
    func snapshotBytes() -> [UInt8] {
        var w = ByteWriter()
        w.string(config.guestPath)
        w.u64(config.memorySize)
        w.u64(config.testOrder.rawValue)
        w.u64(config.stridePages ?? 0)
        w.u64(config.seed)
        w.u64(config.testSize ?? 0)
        w.u8(config.sparse ? 1 : 0)
        w.u64(UInt64(config.vcpus))
        w.u64(config.memtestMode.rawValue)
        return w.bytes
    }

    /// What `Machine.validate` calls the values a memtest snapshot holds.
    static var savedFields: Set<String> { ["memory size", "test size", "vCPUs", "stride", "max resident"] }

    /// The loader of a restored memtest guest: the saved configuration, with the run's own
    /// settings (`base`: paging, fault-around, timeout, threads, …) over it.
    static func restoring(platform: P, bytes: [UInt8], path: String, base: VMConfig) throws(VMMError) -> MemtestLoader {
        var r = ByteReader(bytes, path: path)
        var c = base
        c.guestPath = try r.string("memtest guest")
        c.memorySize = try r.u64("memtest memory size")
        let order = try r.u64("memtest order")
        guard let o = GuestParams.Order(rawValue: order) else {
            throw .snapshot(path: path, field: "memtest order", reason: "\(order) is no order")
        }
        c.testOrder = o
        let stride = try r.u64("memtest stride")
        c.stridePages = stride == 0 ? nil : stride
        c.seed = try r.u64("memtest seed")
        let size = try r.u64("memtest test size")
        c.testSize = size == 0 ? nil : size
        let sparse = try r.u8("memtest sparse")
        guard sparse <= 1 else { throw .snapshot(path: path, field: "memtest sparse", reason: "\(sparse); 0 or 1") }
        c.sparse = sparse == 1
        c.vcpus = Int(truncatingIfNeeded: try r.u64("memtest vcpus"))
        let mode = try r.u64("memtest mode")
        guard let m = GuestParams.Mode(rawValue: mode) else {
            throw .snapshot(path: path, field: "memtest mode", reason: "\(mode) is no mode")
        }
        c.memtestMode = m
        guard r.remaining == 0 else { throw .snapshot(path: path, field: "loader", reason: "\(r.remaining) bytes after memtest's fields") }
        do {
            try Machine.validate(c, restoring: true)
        } catch {
            // A value the snapshot gave is the snapshot's fault (status 2, naming the file
            // and the field); the restore's own options stay usage errors.
            switch error {
            case let .badSize(what, value, reason) where Self.savedFields.contains(what):
                throw .snapshot(path: path, field: "memtest " + what, reason: "\(value): \(reason)")
            case let .badValue(what, value, reason) where Self.savedFields.contains(what):
                throw .snapshot(path: path, field: "memtest " + what, reason: "\(value): \(reason)")
            default: throw error
            }
        }
        return MemtestLoader(platform: platform, config: c, image: nil)
    }
}
