import AxAddrSpace
import KVM

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
    /// `hlt` with interrupts disabled (RFLAGS.IF = 0): nothing can ever wake the guest (a
    /// Linux guest: every vCPU halted so, e.g. after `halt`). Exit status 4.
    case deadHalt(rip: UInt64)
    /// Triple fault or shutdown; registers at the time, when KVM kept them (kvm_amd resets
    /// the vCPU first: nil there).
    case shutdown(registers: ShutdownRegisters?)
    /// The guest reset the machine (x86: the i8042's reset line, which `reboot` and, with
    /// reboot=k and no ACPI, `poweroff` pulse): a Linux guest's normal end.
    case reset
    /// Access to a guest-physical address outside every area.
    case unmappedAccess(gpa: UInt64, write: Bool, size: Int, rip: UInt64)
    case readOnlyWrite(gpa: UInt64, rip: UInt64)
    /// `state`: where the guest stood (a Linux guest: the vCPU and the UART), if known.
    case timeout(seconds: Double, rip: UInt64, state: String?)
    /// A terminating signal (`Termination`): exit status 128 + its number.
    case interrupted(signal: Int32)
    case pagerFailure(String)
    case internalError(suberror: UInt32, data: [UInt64], rip: UInt64)
    case failEntry(reason: UInt64)
    /// The guest powered the machine off (arm64: PSCI SYSTEM_OFF, KVM's system event
    /// SHUTDOWN): a Linux guest's normal end, exit status 0.
    case powerOff
    /// The guest reset the machine through firmware (arm64: PSCI SYSTEM_RESET, KVM's system
    /// event RESET): a Linux guest's normal end after `reboot`, exit status 0.
    case systemReset
    /// Another KVM_EXIT_SYSTEM_EVENT (e.g. CRASH) with its type.
    case systemEvent(type: UInt32)
    case unsupportedExit(reason: UInt32, rip: UInt64)
    /// arm64: a data abort outside the memslots that KVM cannot emulate (no instruction
    /// syndrome), as the library's `Stage2Abort` decoder reads the record KVM gave.
    case unemulatedAbort(ipa: UInt64, esr: UInt64, fault: String, rip: UInt64)
    /// A guest access outside memory that KVM could neither run nor hand to the VMM (KVM_RUN
    /// failed with `errno`), as the platform explains it (riscv64: a fetch, an AMO).
    case unemulatedAccess(what: String, errno: Int32, rip: UInt64)
    /// A snapshot was written and the run ended there (`--snapshot-and-exit`): status 0.
    case snapshotTaken(directory: String)

    public var description: String { description(pcName: "rip") }

    /// The ways a Linux guest ends by itself, cleanly: reboot or power-off.
    public var isMachineEnd: Bool {
        switch self {
        case .reset, .powerOff, .systemReset: true
        default: false
        }
    }

    /// The text, calling the program counter `pcName` ("rip" on x86, "pc" on arm64).
    /// `pcName`: what the architecture calls its program counter; `powerOff`, `reset`: how
    /// its guests power off and reset (`GuestArch.linux`).
    public func description(pcName: String, powerOff: String = GuestArch.x86_64.linux.powerOff,
                            reset: String = GuestArch.aarch64.linux.reset) -> String {
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        switch self {
        case let .guestExit(code): return "guest exit, code \(code)"
        case let .halted(rip): return "guest halted (hlt at \(pcName) \(h(rip)))"
        case let .deadHalt(rip):
            return "guest halted with interrupts disabled (hlt at \(pcName) \(h(rip))): nothing can wake it; VM stopped"
        case let .shutdown(r?):
            return "guest shut down (triple fault?) at \(pcName) \(h(r.rip)), rsp \(h(r.rsp)), cr0 \(h(r.cr0)), cr3 \(h(r.cr3))"
        case .shutdown(nil):
            return "guest shut down (triple fault?); KVM reset the vCPU, so its last registers are unknown"
        case .reset: return "guest reset the machine (i8042 reset line: reboot or power-off)"
        case let .unmappedAccess(gpa, write, size, rip):
            return "guest \(write ? "wrote" : "read") \(size) byte(s) at unmapped GPA \(h(gpa)) (\(pcName) \(h(rip))); VM stopped"
        case let .readOnlyWrite(gpa, rip): return "guest wrote to read-only memory at GPA \(h(gpa)) (\(pcName) \(h(rip))); VM stopped"
        case let .timeout(s, rip, state?): return "timeout: guest still running after \(s) s (\(pcName) \(h(rip)); \(state))"
        case let .timeout(s, rip, nil): return "timeout: guest still running after \(s) s (\(pcName) \(h(rip)))"
        case let .interrupted(signal): return "interrupted by \(Termination.describe(signal))"
        case let .pagerFailure(m): return "lazy pager failed: \(m)"
        case let .internalError(1, data, rip):  // KVM_INTERNAL_ERROR_EMULATION
            let pvm = KVMFlavour.current.module == .kvmPVM
            return "KVM could not emulate an instruction at \(pcName) \(h(rip)) (data \(data.map(h)))"
                + (pvm ? ": kvm_pvm cannot run stock Linux kernels (see axvm boot --help)" : "")
        case let .internalError(sub, data, rip):
            return "KVM internal error, suberror \(sub), data \(data.map(h)) (\(pcName) \(h(rip)))"
        case let .failEntry(r): return "VM entry failed, hardware reason \(h(r))"
        case .powerOff: return "guest powered off (\(powerOff))"
        case .systemReset: return "guest reset the machine (\(reset))"
        case let .systemEvent(t): return "KVM system event \(t)"
        case let .unsupportedExit(r, rip): return "unsupported KVM exit reason \(r) at \(pcName) \(h(rip))"
        case let .unemulatedAbort(ipa, esr, fault, rip):
            return "guest data abort at IPA \(h(ipa)) that KVM cannot emulate (no instruction syndrome; ESR_EL2 \(h(esr)): \(fault)) at \(pcName) \(h(rip)); VM stopped"
        case let .unemulatedAccess(what, e, rip):
            return "guest \(what) at \(pcName) \(h(rip)) that KVM cannot emulate (KVM_RUN: \(errnoString(e))); VM stopped"
        case let .snapshotTaken(directory): return "snapshot written to \(directory); VM stopped"
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
    /// Pages given back to the host (virtio-balloon) that a guest fault mapped again.
    public var refaultedPages = 0
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
    /// With `--fault-map`: what the picture shows.
    public var faultMap: FaultMapData?
    /// The snapshot this run took, if any.
    public var snapshot: SnapshotResult?
    /// For a restored VM: what the snapshot held and what was copied from it.
    public var restore: RestoreStatistics?
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
        refaultedPages = ps.refaultedPages
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

/// The outcome of a run, whatever the guest: how it ended, the statistics, and what the
/// guest's loader adds (`memtest`: the memtest guests' results; `linux`: a Linux boot's).
/// Both front ends' text and JSON come from it.
public struct RunReport: Sendable {
    public var exit: ExitReason
    public var serialOutput: String
    /// The architecture that ran the guest (the host's).
    public var arch: GuestArch
    var settings: RunSettings
    public var statistics: RunStatistics
    /// Pages where AddrSpace and the host (mincore) disagreed at the end (should be 0).
    public var residencyMismatches = 0
    public var memtest: MemtestResult?
    public var linux: LinuxBootResult?

    init(exit: ExitReason, serialOutput: String, arch: GuestArch, settings: RunSettings, statistics: RunStatistics) {
        self.exit = exit
        self.serialOutput = serialOutput
        self.arch = arch
        self.settings = settings
        self.statistics = statistics
    }

    public var lazy: Bool { settings.lazy }
    public var faultAround: UInt64 { settings.faultAround }

    /// The end of the run in words, with the program counter named as on this architecture.
    public var exitDescription: String { exit.description(pcName: arch.pcName, powerOff: arch.linux.powerOff, reset: arch.linux.reset) }

    /// The process exit status the CLI uses: the guest's code, 0 for a halt or a reset,
    /// 4 halted for good, 124 timeout, 128 + the signal, 3 for other VMM-side ends.
    public var exitStatus: Int32 {
        switch exit {
        case let .guestExit(code): Int32(code)
        case .halted, .reset, .powerOff, .systemReset, .snapshotTaken: 0
        case let .interrupted(signal): 128 + signal
        case .timeout: 124
        case .deadHalt: 4
        default: 3
        }
    }
}

/// What the memtest guests report (guests/memtest.S and the others): the parameter page's
/// per-vCPU result slots.
public struct MemtestResult: Sendable {
    public var config: VMConfig
    public var checksum: UInt64 = 0
    public var mismatches: UInt64 = 0
    /// The test pages the guest set out to touch (it announces them before it starts).
    public var pagesPlanned: UInt64 = 0
    /// Each vCPU's checksum (overlap mode: all equal the full one; split mode: they sum
    /// to it).
    public var vcpuChecksums: [UInt64] = []
    /// The test pages it touched: `pagesPlanned` when the guest ran to its own exit (set by
    /// the loader), nil when the run ended before (a fault beyond --max-resident, a
    /// timeout, a signal…), as the guest does not say how far it got.
    public var pagesTouched: UInt64?
}
