import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM
import Synchronization

/// What to run and how.
public struct VMConfig: Sendable {
    public var guestPath: String
    /// Guest RAM in bytes, a multiple of 4 KiB (between 4 MiB and 64 GiB).
    public var memorySize: UInt64 = 64 << 20
    /// Populate RAM on first touch (true) or all up front.
    public var lazy = true
    /// Pages populated per fault: 4 KiB … 2 MiB, a power of two.
    public var faultAround: UInt64 = 4096
    /// Stop the guest after this many seconds (nil: never): finite, positive, at most
    /// `maxTimeout`.
    public var timeout: Double? = 30
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
    /// vCPUs, each on its own thread: 1 … `X86Layout.maxVCPUs` (and KVM's limit).
    public var vcpus = 1
    /// How memtest's vCPUs share the test pages.
    public var memtestMode: GuestParams.Mode = .split
    /// Threads serving the userfaultfd's events: 1 … 64 (nil: one per vCPU, at most the
    /// host's CPUs).
    public var faultThreads: Int?
    /// Most guest memory the host populates (nil: all of it). A lazy fault beyond it is out of
    /// memory: the pager fails and the run ends with `.pagerFailure`.
    public var maxResident: UInt64?
    /// Also copy the guest's serial output to stdout.
    public var serialToStdout = false
    /// End the run cleanly on SIGINT, SIGTERM, SIGHUP and SIGQUIT (for the CLI):
    /// `Termination.install()` (which the front ends call first thing anyway) and the
    /// watchdog kicks the vCPUs when one arrives.
    public var handleInterrupt = false
    public var kvmPath = "/dev/kvm"

    public init(guestPath: String) { self.guestPath = guestPath }

    public static let maxMemory: UInt64 = 64 << 30
    public static let defaultStride: UInt64 = 16
    /// The longest `timeout`: one week.
    public static let maxTimeout: Double = 7 * 86_400
    /// The test region starts this far into RAM (x86: at 2 MiB; arm64: at 1 GiB + 2 MiB).
    public static let testBase: UInt64 = 2 << 20
    /// A read-only area (KVM_MEM_READONLY) holding "AXVMROM!", for the read-only test guest
    /// (x86; arm64: `AArch64Layout.romBase`).
    public static let romBase: UInt64 = 0xe000_0000
    public static let romSize: UInt64 = 0x1_0000
}

/// The registers of a guest that shut down.
public struct ShutdownRegisters: Sendable, Equatable {
    public var rip, rsp, cr0, cr3: UInt64
}

/// How a run ended.
public enum ExitReason: Sendable, Equatable, CustomStringConvertible {
    /// The guest wrote its exit code to the debug-exit port.
    case guestExit(code: UInt8)
    /// `hlt` with interrupts enabled: the guest waits for an interrupt (axvm has no
    /// interrupt sources, so this ends the run; exit status 0).
    case halted(rip: UInt64)
    /// `hlt` with interrupts disabled (RFLAGS.IF = 0): nothing can ever wake the guest.
    case deadHalt(rip: UInt64)
    /// Triple fault or shutdown; registers at the time, when KVM kept them (kvm_amd resets
    /// the vCPU first: nil there).
    case shutdown(registers: ShutdownRegisters?)
    /// Access to a guest-physical address outside every area.
    case unmappedAccess(gpa: UInt64, write: Bool, size: Int, rip: UInt64)
    case readOnlyWrite(gpa: UInt64, rip: UInt64)
    case timeout(seconds: Double, rip: UInt64)
    /// A terminating signal (`Termination`): exit status 128 + its number.
    case interrupted(signal: Int32)
    case pagerFailure(String)
    case internalError(suberror: UInt32, data: [UInt64], rip: UInt64)
    case failEntry(reason: UInt64)
    case unsupportedExit(reason: UInt32, rip: UInt64)
    /// arm64: a data abort outside the memslots that KVM cannot emulate (no instruction
    /// syndrome), as the library's `Stage2Abort` decoder reads the record KVM gave.
    case unemulatedAbort(ipa: UInt64, esr: UInt64, fault: String, rip: UInt64)

    public var description: String { description(pcName: "rip") }

    /// The text, calling the program counter `pcName` ("rip" on x86, "pc" on arm64).
    public func description(pcName: String) -> String {
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        switch self {
        case let .guestExit(code): return "guest exit, code \(code)"
        case let .halted(rip): return "guest halted (hlt at \(pcName) \(h(rip)))"
        case let .deadHalt(rip):
            return "guest halted with interrupts disabled (cli; hlt at \(pcName) \(h(rip))): it can never resume; VM stopped"
        case let .shutdown(r?):
            return "guest shut down (triple fault?) at \(pcName) \(h(r.rip)), rsp \(h(r.rsp)), cr0 \(h(r.cr0)), cr3 \(h(r.cr3))"
        case .shutdown(nil):
            return "guest shut down (triple fault?); KVM reset the vCPU, so its last registers are unknown"
        case let .unmappedAccess(gpa, write, size, rip):
            return "guest \(write ? "wrote" : "read") \(size) byte(s) at unmapped GPA \(h(gpa)) (\(pcName) \(h(rip))); VM stopped"
        case let .readOnlyWrite(gpa, rip): return "guest wrote to read-only memory at GPA \(h(gpa)) (\(pcName) \(h(rip))); VM stopped"
        case let .timeout(s, rip): return "timeout: guest still running after \(s) s (\(pcName) \(h(rip)))"
        case let .interrupted(signal): return "interrupted by \(Termination.describe(signal))"
        case let .pagerFailure(m): return "lazy pager failed: \(m)"
        case let .internalError(sub, data, rip):
            return "KVM internal error, suberror \(sub), data \(data.map(h)) (\(pcName) \(h(rip)))"
        case let .failEntry(r): return "VM entry failed, hardware reason \(h(r))"
        case let .unsupportedExit(r, rip): return "unsupported KVM exit reason \(r) at \(pcName) \(h(rip))"
        case let .unemulatedAbort(ipa, esr, fault, rip):
            return "guest data abort at IPA \(h(ipa)) that KVM cannot emulate (no instruction syndrome; ESR_EL2 \(h(esr)): \(fault)) at \(pcName) \(h(rip)); VM stopped"
        }
    }
}

/// Statistics of one run.
public struct RunStatistics: Sendable {
    public var memoryBytes: UInt64 = 0
    public var populatedBytes: UInt64 = 0
    public var tableFrames = 0
    public var faults = 0
    /// Faults inside the memtest region (the rest: stack, boot data, KVM's own accesses).
    public var faultsInTestRegion = 0
    public var minorFaults = 0
    public var pagesMappedByFaults = 0
    public var faultP50Nanos: UInt64 = 0
    public var faultP99Nanos: UInt64 = 0
    public var faultMeanNanos: UInt64 = 0
    /// Fault service time split, summed: in `handlePageFault` (lock wait included) and
    /// resolving the host side (fallocate + UFFDIO_CONTINUE + wake).
    public var faultLibraryNanos: UInt64 = 0
    public var faultResolveNanos: UInt64 = 0
    /// The process's resident memory at the end of the run (/proc/self/status): all of it,
    /// the shared-memory part (guest RAM and the page-table pool, each page once), and the
    /// VMM's own overhead (VmRSS − RssShmem: code, libraries, heap, stacks).
    public var processRSSBytes: UInt64 = 0
    public var shmemRSSBytes: UInt64 = 0
    public var vmmOverheadBytes: UInt64 = 0
    public var exits = 0
    /// Each vCPU's exits and run time, and each fault thread's share.
    public var vcpus: [VCPUStatistics] = []
    public var faultThreads: [PagerStatistics] = []
    /// The library's own counters at the end (populated frames, pages mapped by faults…).
    public var addrSpace = AddrSpaceStatistics()
    public var setupSeconds = 0.0
    public var runSeconds = 0.0
    public var wallSeconds = 0.0
}

extension RunStatistics {
    /// The figures of a run that ended during set-up (a terminating signal): how long set-up
    /// took and the process's memory; no guest memory is left populated.
    init(setUpUntilNow t0: UInt64, memorySize: UInt64) {
        self.init()
        let process = ProcessMemory.current()
        memoryBytes = memorySize
        processRSSBytes = process.rss
        shmemRSSBytes = process.shmem
        vmmOverheadBytes = process.rss >= process.shmem ? process.rss - process.shmem : 0
        setupSeconds = Double(nowNanos() - t0) / 1e9
        wallSeconds = setupSeconds
    }

    /// Memory, fault and process figures at the end of a run (after the pager stopped):
    /// what every front end reports the same way.
    init<F>(memory: GuestMemory<F>, ram: [RAMRegion], pager: LazyPager<F>, memorySize: UInt64) {
        self.init()
        let lib = memory.withSpace { $0.statistics }
        let process = ProcessMemory.current()
        memoryBytes = memorySize
        populatedBytes = ram.reduce(0) { $0 + memory.populatedBytes($1) }
        tableFrames = lib.tableFrames
        addrSpace = lib
        let ps = pager.stats
        faults = ps.faults
        faultsInTestRegion = ps.faultsAbove
        minorFaults = ps.minorFaults
        pagesMappedByFaults = ps.pagesMapped
        faultP50Nanos = ps.percentile(0.5)
        faultP99Nanos = ps.percentile(0.99)
        faultMeanNanos = ps.latency.mean
        faultLibraryNanos = ps.libraryNanos
        faultResolveNanos = ps.resolveNanos
        faultThreads = pager.threadStats
        processRSSBytes = process.rss
        shmemRSSBytes = process.shmem
        vmmOverheadBytes = process.rss >= process.shmem ? process.rss - process.shmem : 0
    }
}

/// The outcome of `Machine.run`.
public struct RunReport: Sendable {
    public var exit: ExitReason
    public var serialOutput: String
    public var statistics: RunStatistics
    /// What the guest wrote in the parameter page (memtest guests).
    public var checksum: UInt64 = 0
    public var mismatches: UInt64 = 0
    /// The test pages the guest set out to touch (it announces them before it starts).
    public var pagesPlanned: UInt64 = 0
    /// The test pages it touched: `pagesPlanned` when the guest ran to its own exit; nil
    /// when the run ended before (a fault beyond --max-resident, a timeout, a signal…), as
    /// the guest does not say how far it got.
    public var pagesTouched: UInt64? {
        if case .guestExit = exit { pagesPlanned } else { nil }
    }
    /// Each vCPU's checksum (overlap mode: all equal the full one; split mode: they sum
    /// to it).
    public var vcpuChecksums: [UInt64] = []
    /// Pages where AddrSpace and the host (mincore) disagreed at the end (should be 0).
    public var residencyMismatches = 0
    public var config: VMConfig
    /// The architecture that ran the guest (the host's).
    public var arch: GuestArch = .x86_64

    /// The end of the run in words, with the program counter named as on this architecture.
    public var exitDescription: String { exit.description(pcName: arch.pcName) }

    /// The process exit status the CLI uses: the guest's code, or 2+ for VMM-side ends.
    public var exitStatus: Int32 {
        switch exit {
        case let .guestExit(code): Int32(code)
        case .halted: 0
        case let .interrupted(signal): 128 + signal
        case .timeout: 124
        default: 3
        }
    }
}

/// Runs one guest on KVM with its memory managed by `AddrSpace`: an x86_64 guest on an x86
/// host (nested faults as AMD #NPF or Intel EPT violations), an AArch64 guest on an arm64
/// host (stage 2 aborts).
public enum Machine {
    public static func run(_ config: VMConfig) throws(VMMError) -> RunReport {
        switch HostCPU.detect() {
        case .amd: return try Runner(config: config, format: NPT(), cpu: .amd).run()
        case .intel: return try Runner(config: config, format: EPT(), cpu: .intel).run()
        case .arm64:
            // A 40-bit IPA space, as KVM's default VM type (`AArch64Boot.createVM` checks
            // the host's limit).
            let format: Stage2
            do { format = try Stage2(levels: 4, ipaBits: 40) } catch { throw .addrSpace(error) }
            return try Runner(config: config, format: format, cpu: .arm64).run()
        }
    }

    /// Validates user-given values, naming the bad one. Everything that reaches the guest's
    /// arithmetic is bounded here.
    public static func validate(_ c: VMConfig) throws(VMMError) {
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
        if c.vcpus < 1 || c.vcpus > X86Layout.maxVCPUs {  // the parameter page's 64 slots, both arches
            throw .badValue(what: "vCPUs", value: "\(c.vcpus)", reason: "must be from 1 to \(X86Layout.maxVCPUs)")
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

final class Runner<Format: NestedPagingFormat>: @unchecked Sendable {  // immutable; vCPU threads share it
    let config: VMConfig
    let format: Format
    let cpu: HostCPU
    /// The guests' architecture: the host CPU's.
    var arch: GuestArch { cpu == .arm64 ? .aarch64 : .x86_64 }

    init(config: VMConfig, format: Format, cpu: HostCPU) {
        self.config = config
        self.format = format
        self.cpu = cpu
    }

    /// The layout's addresses for this architecture.
    var ramRanges: [GuestPhysRange] {
        arch == .aarch64 ? AArch64Layout.ramRanges(size: config.memorySize) : X86Layout.ramRanges(size: config.memorySize)
    }
    var romBase: UInt64 { arch == .aarch64 ? AArch64Layout.romBase : VMConfig.romBase }
    var paramsAddress: UInt64 { arch == .aarch64 ? AArch64Layout.params : X86Layout.params }
    func vcpuSlot(_ i: Int) -> UInt64 { arch == .aarch64 ? AArch64Layout.vcpuSlot(i) : X86Layout.vcpuSlot(i) }

    /// The VM and its vCPUs, set up for this architecture (the VM keeps /dev/kvm open).
    private func createVM() throws(VMMError) -> (VirtualMachine, [VCPU]) {
        let system: KVMSystem
        do { system = try KVMSystem(path: config.kvmPath) } catch { throw .kvm(error) }
        let limit = Int(system.checkExtension(KVM_CAP_MAX_VCPUS))
        if limit > 0 && config.vcpus > limit {
            throw .badValue(what: "vCPUs", value: "\(config.vcpus)", reason: "above this KVM's limit of \(limit)")
        }
        switch arch {
        case .aarch64:
            return try AArch64Boot.createVM(system: system, vcpus: config.vcpus,
                                            ramEnd: AArch64Layout.ramBase + config.memorySize)
        case .x86_64:
            #if arch(x86_64)
            do {
                let vm = try system.createVM()
                try vm.setTSSAddress(X86Layout.tss)
                var vcpus: [VCPU] = []
                for i in 0..<config.vcpus {
                    let v = try vm.createVCPU(id: UInt(i))
                    try v.setSupportedCPUID(from: system)
                    vcpus.append(v)
                }
                return (vm, vcpus)
            } catch { throw .kvm(error) }
            #else
            throw .host("x86_64 guests need an x86_64 host")
            #endif
        }
    }

    /// Identity map, descriptor tables (x86) or stage 1 table (arm64), and each vCPU's
    /// registers for `image`.
    private func boot(_ memory: GuestMemory<Format>, params: GuestParams, image: GuestImage, vcpus: [VCPU]) throws(VMMError) {
        try memory.write(params.words, at: GuestPhysAddr(paramsAddress))
        switch arch {
        case .aarch64:
            try memory.write(AArch64Layout.stage1Entries(ramEnd: params.ramEnd), at: GuestPhysAddr(AArch64Layout.stage1Table))
            for (i, v) in vcpus.enumerated() {
                do { try AArch64Boot.setupVCPU(v, entry: image.loadAddress + image.entryOffset, index: i) } catch { throw .kvm(error) }
            }
        case .x86_64:
            #if arch(x86_64)
            try X86Boot.writeBootData(memory, params: params)
            for (i, v) in vcpus.enumerated() {
                do { try X86Boot.setupVCPU(v, image: image, index: i) } catch { throw .kvm(error) }
            }
            #endif
        }
    }

    /// The guest's program counter, for reports (0 if KVM will not say).
    func programCounter(_ vcpu: VCPU) -> UInt64 {
        switch arch {
        case .aarch64: return (try? vcpu.register(AArch64Register.pc)) ?? 0
        case .x86_64:
            #if arch(x86_64)
            return (try? vcpu.registers().rip) ?? 0
            #else
            return 0
            #endif
        }
    }

    /// Runs the guest; a terminating signal during set-up ends it with a report too.
    func run() throws(VMMError) -> RunReport {
        let t0 = nowNanos()
        do { return try runGuest(t0: t0) } catch {
            guard case let .interrupted(signal) = error else { throw error }
            var report = RunReport(exit: .interrupted(signal: signal), serialOutput: "",
                                   statistics: RunStatistics(setUpUntilNow: t0, memorySize: config.memorySize), config: config)
            report.arch = arch
            return report
        }
    }

    private func runGuest(t0: UInt64) throws(VMMError) -> RunReport {
        try Machine.validate(config)
        let image = try GuestImage(path: config.guestPath)
        try Termination.checkpoint("setup")
        if image.mode.arch != arch {
            throw .guestImage(path: image.path, reason: "an \(image.mode.arch.rawValue) guest; this \(arch.rawValue) host runs \(arch.rawValue) guests (guests/build/\(arch == .aarch64 ? "aarch64/" : ""))")
        }
        if image.loadAddress + UInt64(image.bytes.count) > arch.ramBase + min(config.memorySize, VMConfig.testBase) {
            throw .guestImage(path: image.path, reason: "\(image.bytes.count) bytes at \(hex(image.loadAddress)) do not fit below the test region at 2 MiB into the \(config.memorySize)-byte RAM")
        }
        let (vm, vcpus) = try createVM()
        let memory = try GuestMemory(vm: vm, format: format,
                                     hostCapacity: config.memorySize + VMConfig.romSize + (256 << 20),
                                     spaceSize: 1 << 40)
        if let m = config.maxResident { memory.withSpace { $0.hal.guestFrameLimit = Int(m / 4096) } }
        var ram: [RAMRegion] = []
        for r in ramRanges {
            ram.append(try memory.addRAM(at: r.start, size: r.size, lazy: config.lazy))
        }
        let rom = try memory.addRAM(at: GuestPhysAddr(romBase), size: VMConfig.romSize, lazy: false, readOnly: true)
        try memory.write(Array("AXVMROM!".utf8), at: rom.range.start)
        let params = Machine.guestParams(config, arch: arch)
        try boot(memory, params: params, image: image, vcpus: vcpus)
        try memory.write(image.bytes, at: GuestPhysAddr(image.loadAddress))

        try Termination.check()
        let threads = config.faultThreads ?? min(config.vcpus, max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        let pager = try LazyPager(memory: memory, faultAround: config.faultAround, cpu: cpu,
                                  countAbove: params.testBase, threads: threads)
        let control = RunControl(vcpus: vcpus)
        installKickHandler()
        // The kick must reach the vCPU threads even if they block signals (helper threads
        // do from birth; libdispatch workers do): each unblocks SIGUSR1 for its run. Only
        // SIGUSR1's state is restored afterwards: SIGINT stays as the watchdog left it.
        let wasBlocked = unblockKick()
        defer { if wasBlocked { blockKick() } }
        pager.onFatal = { control.kickAll() }
        try pager.start()
        let watchdog: Watchdog
        do {
            watchdog = try Watchdog(timeout: config.timeout, handleInterrupt: config.handleInterrupt,
                                    kick: { control.kickAll() }, stuck: { pager.releaseStuckVCPUs() })
        } catch {
            pager.stop()
            throw error
        }
        let serial = Serial(toStdout: config.serialToStdout)
        let vcpuList = vcpus, ramList = ram
        let tRun = nowNanos()
        // vCPU 0 runs on this thread, the others on their own.
        let results = VCPUResults(count: config.vcpus)
        var others: [OSThread] = []
        for i in 1..<max(1, config.vcpus) {
            do {
                others.append(try OSThread { [self] in
                    _ = unblockKick()
                    results.set(i, runVCPU(vcpuList[i], index: i, memory: memory, ram: ramList, serial: serial,
                                           params: params, control: control, watchdog: watchdog, pager: pager))
                })
            } catch {
                control.fail(error)
                break
            }
        }
        results.set(0, runVCPU(vcpus[0], index: 0, memory: memory, ram: ram, serial: serial, params: params,
                               control: control, watchdog: watchdog, pager: pager))
        for t in others { t.join() }
        let tEnd = nowNanos()
        watchdog.stop()
        pager.stop()
        if let e = control.error { throw e }
        let outcomes = results.all
        var exit: ExitReason
        if let f = pager.failure {
            exit = .pagerFailure(f)
        } else if let e = control.end {
            exit = e
        } else {
            // Every vCPU ended by itself: the first non-zero exit code, else 0.
            let codes = outcomes.map { r -> UInt8 in if case let .exited(c) = r.outcome { c } else { 0 } }
            if outcomes.allSatisfy({ if case .halted = $0.outcome { true } else { false } }),
               case let .halted(rip) = outcomes[0].outcome {
                exit = .halted(rip: rip)
            } else {
                exit = .guestExit(code: codes.first { $0 != 0 } ?? 0)
            }
        }

        var report = RunReport(exit: exit, serialOutput: serial.text, statistics: RunStatistics(), config: config)
        report.arch = arch
        var slots: [(checksum: UInt64, mismatches: UInt64, pages: UInt64)] = []
        for i in 0..<config.vcpus {
            let base = vcpuSlot(i)
            slots.append(((try? memory.read(GuestPhysAddr(base), as: UInt64.self)) ?? 0,
                          (try? memory.read(GuestPhysAddr(base + 8), as: UInt64.self)) ?? 0,
                          (try? memory.read(GuestPhysAddr(base + 16), as: UInt64.self)) ?? 0))
        }
        report.vcpuChecksums = slots.map { $0.checksum }
        report.mismatches = slots.reduce(0) { $0 &+ $1.mismatches }
        if config.memtestMode == .overlap {
            report.checksum = slots[0].checksum
            report.pagesPlanned = slots[0].pages
        } else {
            report.checksum = slots.reduce(0) { $0 &+ $1.checksum }
            report.pagesPlanned = slots.reduce(0) { $0 &+ $1.pages }
        }
        report.residencyMismatches = ram.reduce(0) { $0 + memory.residencyMismatches($1).count }
        var s = RunStatistics(memory: memory, ram: ram, pager: pager, memorySize: config.memorySize)
        s.vcpus = outcomes.map { $0.stats }
        s.exits = s.vcpus.reduce(0) { $0 + $1.exits }
        s.setupSeconds = Double(tRun - t0) / 1e9
        s.runSeconds = Double(tEnd - tRun) / 1e9
        s.wallSeconds = Double(nowNanos() - t0) / 1e9
        report.statistics = s
        return report
    }

    /// One vCPU's loop, with its statistics. Ends of the whole run go through `control`.
    private func runVCPU(_ vcpu: VCPU, index: Int, memory: GuestMemory<Format>, ram: [RAMRegion], serial: Serial,
                         params: GuestParams, control: RunControl, watchdog: Watchdog,
                         pager: LazyPager<Format>) -> VCPUResult {
        control.register(index)
        var stats = VCPUStatistics()
        let t0 = nowNanos()
        var outcome = VCPUOutcome.stopped
        do {
            outcome = try loop(vcpu: vcpu, memory: memory, ram: ram, serial: serial, params: params,
                               exits: &stats.exits, control: control, watchdog: watchdog, pager: pager)
        } catch {
            control.fail(error)
        }
        stats.runNanos = nowNanos() - t0
        return VCPUResult(outcome: outcome, stats: stats)
    }

    private func loop(vcpu: VCPU, memory: GuestMemory<Format>, ram: [RAMRegion], serial: Serial, params: GuestParams,
                      exits: inout Int, control: RunControl, watchdog: Watchdog,
                      pager: LazyPager<Format>) throws(VMMError) -> VCPUOutcome {
        func rip() -> UInt64 { programCounter(vcpu) }
        /// An end of the whole VM: every other vCPU is stopped.
        func fatal(_ reason: ExitReason) -> VCPUOutcome {
            control.end(reason)
            return .stopped
        }
        while true {
            if control.isStopping { return .stopped }
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch {
                // EFAULT after the pager gave up (its windows are fenced off): the run
                // reports the pager's reason.
                if let f = pager.failure { return fatal(.pagerFailure(f)) }
                throw .kvm(error)
            }
            exits += 1
            switch exit {
            case let .io(port, isOut, _, data):
                if isOut {
                    switch port {
                    case Ports.serialData: serial.out(data)
                    case Ports.debugExit: return .exited(data.first ?? 0)
                    case Ports.reclaim: try reclaimTestRegion(memory, ram: ram, params: params)
                    default: break  // writes to absent devices are dropped, as on a bus
                    }
                } else {
                    // Reads: the serial line status says "ready"; absent devices float high.
                    let value: UInt8 = port == Ports.serialLineStatus ? serial.lineStatus : 0xff
                    for i in 0..<data.count { data[i] = value }
                }
            case let .mmio(gpa, isWrite, data):
                if arch == .aarch64 {
                    switch AArch64Devices.access(gpa: gpa, isWrite: isWrite, data: data, serial: serial) {
                    case .handled: continue
                    case let .exit(code): return .exited(code)
                    case .reclaim:
                        try reclaimTestRegion(memory, ram: ram, params: params)
                        continue
                    case .none: break
                    }
                }
                let inROM = gpa >= romBase && gpa < romBase + VMConfig.romSize
                if inROM && isWrite { return fatal(.readOnlyWrite(gpa: gpa, rip: rip())) }
                return fatal(.unmappedAccess(gpa: gpa, write: isWrite, size: data.count, rip: rip()))
            #if arch(x86_64)
            case .hlt:
                // RFLAGS.IF (bit 9) clear: no interrupt can end this halt.
                let r = try? vcpu.registers()
                if let r, r.rflags & (1 << 9) == 0 { return fatal(.deadHalt(rip: r.rip)) }
                return .halted(rip: r?.rip ?? 0)
            case .shutdown:
                let r = try? vcpu.registers(), s = try? vcpu.specialRegisters()
                // kvm_amd resets the vCPU on a shutdown intercept before exiting to us, so
                // the registers read back are the reset state (rip 0xfff0, CR0 = ET only):
                // the last state is lost there, and the report says so rather than show it.
                let reset = r?.rip == 0xfff0 && s.map { $0.cr0 & 1 == 0 } ?? false
                if reset || r == nil || s == nil { return fatal(.shutdown(registers: nil)) }
                return fatal(.shutdown(registers: .init(rip: r?.rip ?? 0, rsp: r?.rsp ?? 0, cr0: s?.cr0 ?? 0, cr3: s?.cr3 ?? 0)))
            #else
            case .hlt: return .halted(rip: rip())
            case .shutdown: return fatal(.shutdown(registers: nil))
            #endif
            case let .armNISV(iss, ipa):
                // The abort KVM could not emulate, through the library's decoder: the record
                // says what the guest did (a read or write, which fault), the IPA where.
                let record = AArch64Faults.unemulated(esrISS: iss, ipa: ipa)
                let what = record.fault.map { "\($0)" } ?? "not a data abort"
                return fatal(.unemulatedAbort(ipa: record.ipa.raw, esr: record.esr, fault: what, rip: rip()))
            case let .failEntry(reason): return fatal(.failEntry(reason: reason))
            case let .internalError(sub, data): return fatal(.internalError(suberror: sub, data: data, rip: rip()))
            case let .systemEvent(type): return fatal(.unsupportedExit(reason: 24_000 + type, rip: rip()))
            case .interrupted:
                if let f = pager.failure { return fatal(.pagerFailure(f)) }
                if let signal = watchdog.interruptSignal { return fatal(.interrupted(signal: signal)) }
                if watchdog.timedOut { return fatal(.timeout(seconds: config.timeout ?? 0, rip: rip())) }
                if control.isStopping { return .stopped }
                continue  // a stray signal: resume
            case let .unsupported(reason): return fatal(.unsupportedExit(reason: reason, rip: rip()))
            }
        }
    }
}

extension Runner {
    /// Every test page: all RAM from the test base up (the test pages may be spread over
    /// both x86 RAM areas).
    func reclaimTestRegion(_ memory: GuestMemory<Format>, ram: [RAMRegion], params: GuestParams) throws(VMMError) {
        for r in ram where r.range.end.raw > params.testBase {
            let from = GuestPhysAddr(max(r.range.start.raw, params.testBase))
            try memory.reclaim(from, size: r.range.end - from)
        }
    }
}

/// A vCPU's outcome and statistics.
struct VCPUResult: Sendable {
    var outcome: VCPUOutcome
    var stats: VCPUStatistics
}

/// The vCPU threads' results: each slot written once by its thread, read after the joins.
final class VCPUResults: Sendable {
    private let slots: Locked<[VCPUResult]>
    init(count: Int) { slots = Locked(Array(repeating: VCPUResult(outcome: .stopped, stats: VCPUStatistics()), count: max(1, count))) }
    func set(_ i: Int, _ r: VCPUResult) { slots.withLock { $0[i] = r } }
    var all: [VCPUResult] { slots.withLock { $0 } }
}

/// Ends a run after `timeout` seconds or on Ctrl-C, by kicking the vCPU.
final class Watchdog: Sendable {
    private let stopEvent: EventFD
    /// Written once, by `init` and `stop` on the owning thread.
    private nonisolated(unsafe) var thread: OSThread?
    /// Set by the watchdog thread, read by the run loop: atomics.
    private let timedOutFlag = Atomic<Bool>(false)
    private let interruptedFlag = Atomic<Bool>(false)
    var timedOut: Bool { timedOutFlag.load(ordering: .acquiring) }
    /// The terminating signal that ended the run (`Termination`), if one did.
    var interruptSignal: Int32? { interruptedFlag.load(ordering: .acquiring) ? Termination.signal : nil }

    /// How long the run may take to end after the kick before `stuck` is called.
    static let graceMillis: Int32 = 5000

    /// `kick` stops the vCPUs at the deadline or on a terminating signal (with
    /// `handleInterrupt`: `Termination`). If the run has not ended
    /// (`stop()`) `graceMillis` after that, `stuck` is called once, on this thread: a vCPU
    /// that a kick cannot reach is blocked in the host kernel — in 6.1, KVM waits for a
    /// guest page killably, so a fault the pager never answered holds KVM_RUN against any
    /// signal — and `stuck` releases it (the pager fences guest memory) and says why.
    init(timeout: Double?, handleInterrupt: Bool, kick: @escaping @Sendable () -> Void,
         graceMillis: Int32 = Watchdog.graceMillis, stuck: @escaping @Sendable () -> Void = {}) throws(VMMError) {
        stopEvent = try EventFD()
        if handleInterrupt { try Termination.install() }
        // `timeout` is validated (finite, at most a week), so the product fits.
        let deadline = timeout.map { nowNanos() + UInt64($0 * 1e9) }
        let sfd = handleInterrupt ? Termination.eventFD : -1
        thread = try OSThread { [self] in
            var fds = [pollfd(fd: stopEvent.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)]
            while true {
                var wait: Int32 = -1
                if let deadline {
                    let now = nowNanos()
                    if now >= deadline {
                        timedOutFlag.store(true, ordering: .releasing)
                        kick()
                        Self.awaitStop(&fds[0], graceMillis: graceMillis, stuck: stuck)
                        return
                    }
                    wait = Int32(min((deadline - now) / 1_000_000 + 1, 1_000_000))
                }
                let r = poll(&fds, sfd >= 0 ? 2 : 1, wait)
                if r < 0 && errno == EINTR { continue }
                if fds[0].revents != 0 { return }
                if sfd >= 0 && fds[1].revents != 0 {
                    interruptedFlag.store(true, ordering: .releasing)
                    kick()
                    Self.awaitStop(&fds[0], graceMillis: graceMillis, stuck: stuck)
                    return
                }
            }
        }
    }

    /// After the kick: waits up to `graceMillis` for `stop()`, else calls `stuck`.
    private static func awaitStop(_ stopFD: inout pollfd, graceMillis: Int32, stuck: @Sendable () -> Void) {
        let end = nowNanos() + UInt64(graceMillis) * 1_000_000
        while true {
            let now = nowNanos()
            if now >= end { stuck(); return }
            let r = poll(&stopFD, 1, Int32((end - now) / 1_000_000 + 1))
            if r > 0 { return }
            if r < 0 && errno != EINTR { stuck(); return }
        }
    }

    /// Stops the thread. The signals stay blocked (`Termination`): one that arrives while
    /// the CLI prints the results is recorded, not fatal.
    func stop() {
        stopEvent.signal()
        thread?.join()
        thread = nil
    }
}
