import AxAddrSpace
import CKVM
import Glibc
import KVM

/// What to run and how.
public struct VMConfig: Sendable {
    public var guestPath: String
    /// Guest RAM in bytes, a multiple of 4 KiB (between 4 MiB and 64 GiB).
    public var memorySize: UInt64 = 64 << 20
    /// Populate RAM on first touch (true) or all up front.
    public var lazy = true
    /// Pages populated per fault: 4 KiB … 2 MiB, a power of two.
    public var faultAround: UInt64 = 4096
    /// Stop the guest after this many seconds (nil: never).
    public var timeout: Double? = 30
    public var testOrder: GuestParams.Order = .sequential
    public var stridePages: UInt64 = 16
    public var seed: UInt64 = 1
    /// Bytes the memtest guest touches (0: all RAM above 2 MiB).
    public var testSize: UInt64 = 0
    /// Most guest memory the host populates (nil: all of it). A lazy fault beyond it is out of
    /// memory: the pager fails and the run ends with `.pagerFailure`.
    public var maxResident: UInt64?
    /// Also copy the guest's serial output to stdout.
    public var serialToStdout = false
    /// Stop cleanly on Ctrl-C (blocks SIGINT in the calling thread; for the CLI).
    public var handleInterrupt = false
    public var kvmPath = "/dev/kvm"

    public init(guestPath: String) { self.guestPath = guestPath }

    public static let maxMemory: UInt64 = 64 << 30
    public static let testBase: UInt64 = 2 << 20
    /// A read-only area (KVM_MEM_READONLY) holding "AXVMROM!", for the read-only test guest.
    public static let romBase: UInt64 = 0xe000_0000
    public static let romSize: UInt64 = 0x1_0000
}

/// How a run ended.
public enum ExitReason: Sendable, Equatable, CustomStringConvertible {
    /// The guest wrote its exit code to the debug-exit port.
    case guestExit(code: UInt8)
    case halted(rip: UInt64)
    /// Triple fault or shutdown; registers at the time.
    case shutdown(rip: UInt64, rsp: UInt64, cr0: UInt64, cr3: UInt64)
    /// Access to a guest-physical address outside every area.
    case unmappedAccess(gpa: UInt64, write: Bool, size: Int, rip: UInt64)
    case readOnlyWrite(gpa: UInt64, rip: UInt64)
    case timeout(seconds: Double, rip: UInt64)
    case interrupted
    case pagerFailure(String)
    case internalError(suberror: UInt32, data: [UInt64], rip: UInt64)
    case failEntry(reason: UInt64)
    case unsupportedExit(reason: UInt32, rip: UInt64)

    public var description: String {
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        switch self {
        case let .guestExit(code): return "guest exit, code \(code)"
        case let .halted(rip): return "guest halted (hlt at rip \(h(rip)))"
        case let .shutdown(rip, rsp, cr0, cr3):
            return "guest shut down (triple fault?) at rip \(h(rip)), rsp \(h(rsp)), cr0 \(h(cr0)), cr3 \(h(cr3))"
        case let .unmappedAccess(gpa, write, size, rip):
            return "guest \(write ? "wrote" : "read") \(size) byte(s) at unmapped GPA \(h(gpa)) (rip \(h(rip))); VM stopped"
        case let .readOnlyWrite(gpa, rip): return "guest wrote to read-only memory at GPA \(h(gpa)) (rip \(h(rip))); VM stopped"
        case let .timeout(s, rip): return "timeout: guest still running after \(s) s (rip \(h(rip)))"
        case .interrupted: return "interrupted (Ctrl-C)"
        case let .pagerFailure(m): return "lazy pager failed: \(m)"
        case let .internalError(sub, data, rip):
            return "KVM internal error, suberror \(sub), data \(data.map(h)) (rip \(h(rip)))"
        case let .failEntry(r): return "VM entry failed, hardware reason \(h(r))"
        case let .unsupportedExit(r, rip): return "unsupported KVM exit reason \(r) at rip \(h(rip))"
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
    public var exits = 0
    public var setupSeconds = 0.0
    public var runSeconds = 0.0
    public var wallSeconds = 0.0
}

/// The outcome of `Machine.run`.
public struct RunReport: Sendable {
    public var exit: ExitReason
    public var serialOutput: String
    public var statistics: RunStatistics
    /// What the guest wrote in the parameter page (memtest guests).
    public var checksum: UInt64 = 0
    public var mismatches: UInt64 = 0
    public var pagesTouched: UInt64 = 0
    /// Pages where AddrSpace and the host (mincore) disagreed at the end (should be 0).
    public var residencyMismatches = 0
    public var config: VMConfig

    /// The process exit status the CLI uses: the guest's code, or 2+ for VMM-side ends.
    public var exitStatus: Int32 {
        switch exit {
        case let .guestExit(code): Int32(code)
        case .halted: 0
        case .interrupted: 130
        case .timeout: 124
        default: 3
        }
    }
}

/// Runs one x86_64 guest on KVM with its memory managed by `AddrSpace`.
public enum Machine {
    public static func run(_ config: VMConfig) throws(VMMError) -> RunReport {
        switch HostCPU.detect() {
        case .amd: try Runner(config: config, format: NPT(), cpu: .amd).run()
        case .intel: try Runner(config: config, format: EPT(), cpu: .intel).run()
        }
    }

    /// Validates user-given sizes, naming the bad value.
    public static func validate(_ c: VMConfig) throws(VMMError) {
        if c.memorySize & 0xfff != 0 { throw .badSize(what: "memory size", value: c.memorySize, reason: "not a multiple of 4 KiB") }
        if c.memorySize < 4 << 20 { throw .badSize(what: "memory size", value: c.memorySize, reason: "below the 4 MiB minimum") }
        if c.memorySize > VMConfig.maxMemory {
            throw .badSize(what: "memory size", value: c.memorySize, reason: "above the \(VMConfig.maxMemory >> 30) GiB maximum")
        }
        let fa = c.faultAround
        if fa < 4096 || fa > 2 << 20 || fa & (fa - 1) != 0 {
            throw .badSize(what: "fault-around", value: fa, reason: "must be a power of two from 4 KiB to 2 MiB")
        }
        if c.testSize & 0xfff != 0 || c.testSize > c.memorySize - VMConfig.testBase {
            throw .badSize(what: "test size", value: c.testSize, reason: "must be a 4 KiB multiple within RAM above 2 MiB")
        }
        if let t = c.timeout, !(t > 0) { throw .badSize(what: "timeout", value: 0, reason: "must be positive") }
        if let m = c.maxResident, m & 0xfff != 0 || m == 0 {
            throw .badSize(what: "max resident", value: m, reason: "must be a non-zero multiple of 4 KiB")
        }
    }
}

/// SIGUSR1 interrupts KVM_RUN (EINTR); the handler itself does nothing.
private func installKickHandler() {
    var sa = sigaction()
    sa.__sigaction_handler.sa_handler = { _ in }
    sigemptyset(&sa.sa_mask)
    sa.sa_flags = 0  // no SA_RESTART: KVM_RUN must return
    sigaction(SIGUSR1, &sa, nil)
}

final class Runner<Format: NestedPagingFormat> {
    let config: VMConfig
    let format: Format
    let cpu: HostCPU

    init(config: VMConfig, format: Format, cpu: HostCPU) {
        self.config = config
        self.format = format
        self.cpu = cpu
    }

    func run() throws(VMMError) -> RunReport {
        let t0 = nowNanos()
        try Machine.validate(config)
        let image = try GuestImage(path: config.guestPath)
        if image.loadAddress + UInt64(image.bytes.count) > min(config.memorySize, VMConfig.testBase) {
            throw .guestImage(path: image.path, reason: "\(image.bytes.count) bytes at \(hex(image.loadAddress)) do not fit below the test region at 2 MiB of the \(config.memorySize)-byte RAM")
        }
        let system: KVMSystem, vm: VirtualMachine, vcpu: VCPU
        do {
            system = try KVMSystem(path: config.kvmPath)
            vm = try system.createVM()
            try vm.setTSSAddress(X86Layout.tss)
            vcpu = try vm.createVCPU()
        } catch {
            throw .kvm(error)
        }
        let memory = try GuestMemory(vm: vm, format: format,
                                     hostCapacity: config.memorySize + VMConfig.romSize + (256 << 20),
                                     spaceSize: 1 << 40)
        let ram = try memory.addRAM(at: GuestPhysAddr(0), size: config.memorySize, lazy: config.lazy)
        if let m = config.maxResident { memory.withSpace { $0.hal.guestFrameLimit = Int(m / 4096) } }
        let rom = try memory.addRAM(at: GuestPhysAddr(VMConfig.romBase), size: VMConfig.romSize, lazy: false, readOnly: true)
        try memory.write(Array("AXVMROM!".utf8), at: rom.range.start)
        let params = GuestParams(memorySize: config.memorySize, testBase: VMConfig.testBase,
                                 testSize: config.testSize == 0 ? config.memorySize - VMConfig.testBase : config.testSize,
                                 order: config.testOrder, stridePages: max(1, config.stridePages), seed: config.seed)
        try X86Boot.writeBootData(memory, params: params)
        try memory.write(image.bytes, at: GuestPhysAddr(image.loadAddress))
        do { try X86Boot.setupVCPU(vcpu, image: image) } catch { throw .kvm(error) }

        let pager = try LazyPager(memory: memory, faultAround: config.faultAround, cpu: cpu)
        installKickHandler()
        // The kick must reach this thread even if it blocks signals (libdispatch workers
        // do): unblock SIGUSR1 for the run, restore the mask after.
        var kickSet = sigset_t(), savedMask = sigset_t()
        sigemptyset(&kickSet)
        sigaddset(&kickSet, SIGUSR1)
        pthread_sigmask(SIG_UNBLOCK, &kickSet, &savedMask)
        defer { pthread_sigmask(SIG_SETMASK, &savedMask, nil) }
        let vcpuThread = pthread_self()
        let kick: @Sendable () -> Void = {
            vcpu.requestImmediateExit()
            pthread_kill(vcpuThread, SIGUSR1)
        }
        pager.onFatal = kick
        try pager.start()
        let watchdog = try Watchdog(timeout: config.timeout, handleInterrupt: config.handleInterrupt, kick: kick)
        let serial = Serial(toStdout: config.serialToStdout)
        let tRun = nowNanos()
        var exits = 0
        var exit: ExitReason
        do {
            exit = try loop(vcpu: vcpu, memory: memory, serial: serial, params: params, exits: &exits, watchdog: watchdog, pager: pager)
        } catch {
            watchdog.stop()
            pager.stop()
            throw error
        }
        let tEnd = nowNanos()
        watchdog.stop()
        pager.stop()
        if let f = pager.failure { exit = .pagerFailure(f) }

        var report = RunReport(exit: exit, serialOutput: String(decoding: serial.captured, as: UTF8.self),
                               statistics: RunStatistics(), config: config)
        report.checksum = (try? memory.read(GuestPhysAddr(X86Layout.params + 56), as: UInt64.self)) ?? 0
        report.mismatches = (try? memory.read(GuestPhysAddr(X86Layout.params + 64), as: UInt64.self)) ?? 0
        report.pagesTouched = (try? memory.read(GuestPhysAddr(X86Layout.params + 72), as: UInt64.self)) ?? 0
        report.residencyMismatches = memory.residencyMismatches(ram).count
        let lib = memory.withSpace { $0.statistics }
        var s = RunStatistics()
        s.memoryBytes = config.memorySize
        s.populatedBytes = populatedBytes(memory, ram)
        s.tableFrames = lib.tableFrames
        s.faults = pager.stats.faults
        s.faultsInTestRegion = pager.stats.faultAddresses.filter {
            $0 >= params.testBase && $0 < params.testBase + params.testSize
        }.count
        s.minorFaults = pager.stats.minorFaults
        s.pagesMappedByFaults = pager.stats.pagesMapped
        s.faultP50Nanos = pager.stats.percentile(0.5)
        s.faultP99Nanos = pager.stats.percentile(0.99)
        s.faultMeanNanos = pager.stats.latencies.isEmpty ? 0 : pager.stats.latencies.reduce(0, +) / UInt64(pager.stats.latencies.count)
        s.exits = exits
        s.setupSeconds = Double(tRun - t0) / 1e9
        s.runSeconds = Double(tEnd - tRun) / 1e9
        s.wallSeconds = Double(nowNanos() - t0) / 1e9
        report.statistics = s
        return report
    }

    private func populatedBytes(_ memory: GuestMemory<Format>, _ ram: RAMRegion) -> UInt64 {
        memory.withSpace { sp in
            var n: UInt64 = 0
            var p = ram.range.start
            while p < ram.range.end {
                if sp.isPopulated(p) { n += 4096 }
                p = p + 4096
            }
            return n
        }
    }

    private func loop(vcpu: VCPU, memory: GuestMemory<Format>, serial: Serial, params: GuestParams,
                      exits: inout Int, watchdog: Watchdog, pager: LazyPager<Format>) throws(VMMError) -> ExitReason {
        func rip() -> UInt64 { (try? vcpu.registers().rip) ?? 0 }
        while true {
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch {
                // EFAULT after the pager gave up: report the pager's reason.
                if pager.failure != nil { return .interrupted }
                throw .kvm(error)
            }
            exits += 1
            switch exit {
            case let .io(port, isOut, _, data):
                if isOut {
                    switch port {
                    case Ports.serialData: for b in data { serial.out(b) }
                    case Ports.debugExit: return .guestExit(code: data.first ?? 0)
                    case Ports.reclaim: try memory.reclaim(GuestPhysAddr(params.testBase), size: params.testSize)
                    default: break  // writes to absent devices are dropped, as on a bus
                    }
                } else {
                    // Reads: the serial line status says "ready"; absent devices float high.
                    let value: UInt8 = port == Ports.serialLineStatus ? serial.lineStatus : 0xff
                    for i in 0..<data.count { data[i] = value }
                }
            case let .mmio(gpa, isWrite, data):
                let inROM = gpa >= VMConfig.romBase && gpa < VMConfig.romBase + VMConfig.romSize
                if inROM && isWrite { return .readOnlyWrite(gpa: gpa, rip: rip()) }
                return .unmappedAccess(gpa: gpa, write: isWrite, size: data.count, rip: rip())
            case .hlt: return .halted(rip: rip())
            case .shutdown:
                let r = try? vcpu.registers(), s = try? vcpu.specialRegisters()
                return .shutdown(rip: r?.rip ?? 0, rsp: r?.rsp ?? 0, cr0: s?.cr0 ?? 0, cr3: s?.cr3 ?? 0)
            case let .failEntry(reason): return .failEntry(reason: reason)
            case let .internalError(sub, data): return .internalError(suberror: sub, data: data, rip: rip())
            case let .systemEvent(type): return .unsupportedExit(reason: 24_000 + type, rip: rip())
            case .interrupted:
                if pager.failure != nil { return .pagerFailure(pager.failure ?? "") }
                if watchdog.interruptedByUser { return .interrupted }
                if watchdog.timedOut { return .timeout(seconds: config.timeout ?? 0, rip: rip()) }
                continue  // a stray signal: resume
            case let .unsupported(reason): return .unsupportedExit(reason: reason, rip: rip())
            }
        }
    }
}

/// Ends a run after `timeout` seconds or on Ctrl-C, by kicking the vCPU.
final class Watchdog: @unchecked Sendable {  // flags written before kick(), read after KVM_RUN returns
    private let stopEvent: EventFD
    private var thread: OSThread?
    private(set) var timedOut = false
    private(set) var interruptedByUser = false
    private var signalFD: Int32 = -1

    init(timeout: Double?, handleInterrupt: Bool, kick: @escaping @Sendable () -> Void) throws(VMMError) {
        stopEvent = try EventFD()
        if handleInterrupt {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGINT)
            pthread_sigmask(SIG_BLOCK, &set, nil)
            signalFD = signalfd(-1, &set, Int32(SFD_CLOEXEC))
        }
        let deadline = timeout.map { nowNanos() + UInt64($0 * 1e9) }
        let sfd = signalFD
        thread = try OSThread { [self] in
            var fds = [pollfd(fd: stopEvent.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: sfd, events: Int16(POLLIN), revents: 0)]
            while true {
                var wait: Int32 = -1
                if let deadline {
                    let now = nowNanos()
                    if now >= deadline { timedOut = true; kick(); return }
                    wait = Int32(min((deadline - now) / 1_000_000 + 1, 1_000_000))
                }
                let r = poll(&fds, sfd >= 0 ? 2 : 1, wait)
                if r < 0 && errno == EINTR { continue }
                if fds[0].revents != 0 { return }
                if sfd >= 0 && fds[1].revents != 0 { interruptedByUser = true; kick(); return }
            }
        }
    }

    func stop() {
        stopEvent.signal()
        thread?.join()
        thread = nil
        if signalFD >= 0 { close(signalFD); signalFD = -1 }
    }
}
