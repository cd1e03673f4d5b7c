// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// What Linux kernel to boot and how (`axvm boot`).
public struct LinuxBootConfig: Sendable {
    public var kernelPath: String
    public var initrdPath: String?
    public var cmdline = LinuxBootConfig.defaultCmdline
    /// Guest RAM in bytes, a multiple of 4 KiB (at most 64 GiB; the kernel's header says
    /// how much it needs at least).
    public var memorySize: UInt64 = 256 << 20
    public var lazy = true
    public var faultAround: UInt64 = 4096
    public var timeout: Double? = 120
    /// The run's boot time is when this text first appears on the serial console.
    public var initMarker = LinuxBootConfig.defaultInitMarker
    public var serialToStdout = false
    public var handleInterrupt = false
    public var kvmPath = "/dev/kvm"
    /// Try even on kvm_pvm (which cannot run a stock kernel): for experiments.
    public var allowKVMPVM = false
    /// Give the guest an MP table (`MPTable`), so that Linux takes device interrupts through
    /// the IOAPIC; false: none, Linux runs the APIC in virtual-wire mode on the 8259 PIC
    /// (the way boots stalled in the rig: README, "Linux on axvm"). For experiments.
    public var mpTable = true

    public init(kernelPath: String) { self.kernelPath = kernelPath }

    /// Serial console; `reboot=k`: reboot through the i8042 (axvm's way out); no PCI
    /// bus to probe; the i8042 without keyboard and mouse ports; quiet.
    public static let defaultCmdline = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux i8042.nokbd quiet"
    /// What scripts/linux-guest-initramfs.sh's init prints first.
    public static let defaultInitMarker = "axvm-linux: init reached"
}

/// How a Linux run ended.
public enum LinuxExitReason: Sendable, Equatable, CustomStringConvertible {
    /// The guest pulsed the reset line through the i8042 (`reboot`, or `poweroff` with
    /// reboot=k when there is no ACPI): the normal end.
    case reset
    /// Triple fault or shutdown.
    case shutdown
    /// `state`: what the vCPU and the UART were doing (for a boot that hangs).
    case timeout(seconds: Double, rip: UInt64, state: String)
    /// A terminating signal (`Termination`): exit status 128 + its number.
    case interrupted(signal: Int32)
    case pagerFailure(String)
    /// KVM could not emulate an instruction (KVM_INTERNAL_ERROR_EMULATION).
    case emulationFailure(rip: UInt64, data: [UInt64], kvmPVM: Bool)
    case internalError(suberror: UInt32, data: [UInt64], rip: UInt64)
    case failEntry(reason: UInt64)
    case systemEvent(type: UInt32)
    case unsupportedExit(reason: UInt32, rip: UInt64)

    public var description: String {
        func h(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        switch self {
        case .reset: return "guest reset the machine (i8042 reset line: reboot or power-off)"
        case .shutdown: return "guest shut down (triple fault)"
        case let .timeout(s, rip, state): return "timeout: guest still running after \(s) s (rip \(h(rip)); \(state))"
        case let .interrupted(signal): return "interrupted by \(Termination.describe(signal))"
        case let .pagerFailure(m): return "lazy pager failed: \(m)"
        case let .emulationFailure(rip, data, pvm):
            return "KVM could not emulate an instruction at rip \(h(rip)) (data \(data.map(h)))"
                + (pvm ? ": kvm_pvm cannot run stock Linux kernels (see axvm boot --help)" : "")
        case let .internalError(sub, data, rip):
            return "KVM internal error, suberror \(sub), data \(data.map(h)) (rip \(h(rip)))"
        case let .failEntry(r): return "VM entry failed, hardware reason \(h(r))"
        case let .systemEvent(t): return "KVM system event \(t)"
        case let .unsupportedExit(r, rip): return "unsupported KVM exit reason \(r) at rip \(h(rip))"
        }
    }

    /// The CLI's exit status: 0 for the normal end, 124 timeout, 128 + the signal when
    /// interrupted (130 for Ctrl-C), 3 otherwise.
    public var exitStatus: Int32 {
        switch self {
        case .reset: 0
        case .timeout: 124
        case let .interrupted(signal): 128 + signal
        default: 3
        }
    }
}

/// The outcome of `LinuxMachine.boot`.
public struct LinuxBootReport: Sendable {
    public var exit: LinuxExitReason
    public var serialOutput: String
    public var statistics: RunStatistics
    /// Seconds from the start of `boot` (files read, memory set up, kernel loaded) to the
    /// first appearance of the init marker on the console; nil if it never appeared.
    public var initMarkerSeconds: Double?
    /// Guest RAM populated when the marker appeared.
    public var populatedAtMarker: UInt64?
    /// Pages where AddrSpace and the host (mincore) disagreed at the end (should be 0).
    public var residencyMismatches = 0
    /// Times the UART's interrupt was pulsed again because the guest left it pending for a
    /// whole period (`IRQResampler`).
    public var serialIRQResamples = 0
    /// Times the run loop found the vCPU halted with that interrupt pending and made it
    /// runnable.
    public var haltedWakeups = 0
    /// The first few times the run loop found the UART's interrupt pending for a whole
    /// resampler period: seconds since start and where the interrupt stood
    /// (`VCPU.interruptState`), for tracking down why a guest did not take it.
    public var interruptWaits: [String] = []
    public var config: LinuxBootConfig
    public var plan: LinuxBootPlan

    /// "MemTotal: N kB" as the guest printed it (from /proc/meminfo), in KiB.
    public var memTotalKiB: UInt64? {
        for line in serialOutput.split(separator: "\n") {
            let bytes = Array(line.utf8)
            guard let i = bytes.offset(of: "MemTotal:") else { continue }
            let digits = bytes[(i + 9)...].drop { $0 == UInt8(ascii: " ") }.prefix { $0 >= 0x30 && $0 <= 0x39 }
            return UInt64(String(decoding: digits, as: UTF8.self))
        }
        return nil
    }
}

/// Boots a Linux bzImage on KVM with its RAM in an `AddrSpace`, lazily populated.
public enum LinuxMachine {
    /// The checks made before anything runs: sizes bounded (usage errors).
    public static func validate(_ c: LinuxBootConfig) throws(VMMError) {
        try Machine.validateMemory(c.memorySize, faultAround: c.faultAround)
        if let t = c.timeout, !(t > 0 && t <= VMConfig.maxTimeout) {
            throw .badValue(what: "timeout", value: "\(t)",
                            reason: "must be a number of seconds above 0 and at most \(Int(VMConfig.maxTimeout)) (one week); 0 or none: no limit")
        }
        if c.initMarker.isEmpty || c.initMarker.utf8.count > 256 {
            throw .badValue(what: "init marker", value: c.initMarker, reason: "must be 1 to 256 bytes")
        }
    }

    /// Reads and checks the kernel, and checks the initrd (its size: it is opened, not read)
    /// and command line against the RAM layout: every input error is found here, before KVM
    /// is opened, and an initrd that cannot fit is refused without reading it.
    public static func plan(_ c: LinuxBootConfig) throws(LinuxBootError) -> (LinuxBootPlan, initrd: LinuxInitrd?) {
        do { try validate(c) } catch { throw .vmm(error) }
        let kernel = try LinuxKernel(path: c.kernelPath)
        // Larger than RAM cannot fit: refused from its fstat; the plan then places it by size.
        let initrd = try c.initrdPath.map { p throws(LinuxBootError) in
            try LinuxInitrd(path: p, limit: min(c.memorySize, 4 << 30)) { size in
                "\(size) bytes do not fit in RAM: larger than the \(c.memorySize >> 20) MiB of guest RAM"
            }
        }
        let plan = try LinuxBootPlan(kernel: kernel, ram: X86Layout.ramRanges(size: c.memorySize), cmdline: c.cmdline,
                                     initrdPath: c.initrdPath, initrdSize: initrd?.size ?? 0, mpTable: c.mpTable)
        return (plan, initrd)
    }

    public static func boot(_ c: LinuxBootConfig) throws(LinuxBootError) -> LinuxBootReport {
        let t0 = nowNanos()
        let (plan, initrd) = try plan(c)
        // The device first, so that a bad --kvm is named as such rather than judged by the
        // host's modules.
        do { _ = try KVMSystem(path: c.kvmPath) } catch { throw .vmm(.kvm(error)) }
        let flavour = KVMFlavour.detect()
        if flavour.module == .kvmPVM && !c.allowKVMPVM {
            throw .unsupportedKVM("""
                this host's KVM is \(flavour): it cannot boot a stock Linux kernel (guest kernel \
                code is emulated, and its emulator lacks instructions Linux uses, e.g. cmpxchg16b, \
                xsaves/xrstors; QEMU and kvmtool fail the same way). Boot on kvm_amd or kvm_intel, \
                e.g. in the rig: scripts/kvm-rig.sh test x86_64
                """)
        }
        do throws(VMMError) {
            switch HostCPU.detect() {
            case .amd: return try LinuxRunner(config: c, plan: plan, initrd: initrd, format: NPT(), cpu: .amd,
                                              kvmPVM: flavour.module == .kvmPVM, t0: t0).run()
            case .intel: return try LinuxRunner(config: c, plan: plan, initrd: initrd, format: EPT(), cpu: .intel,
                                                kvmPVM: flavour.module == .kvmPVM, t0: t0).run()
            case .arm64: throw VMMError.host("axvm boot runs x86 Linux kernels on x86 hosts")
            }
        } catch {
            throw .vmm(error)
        }
    }
}

/// SIGUSR1 interrupts KVM_RUN (EINTR); the handler does nothing. As `Machine`'s.
private func installLinuxKickHandler() {
    var sa = sigaction()
    sa.__sigaction_handler.sa_handler = { _ in }
    sigemptyset(&sa.sa_mask)
    sa.sa_flags = 0  // no SA_RESTART: KVM_RUN must return
    sigaction(SIGUSR1, &sa, nil)
}

/// The guest's console: bytes to stdout (optionally) and to a bounded capture (the report's
/// `serialOutput`): the first `captureLimit` bytes are kept, later ones only counted.
struct LinuxConsole {
    static let captureLimit = 1 << 20
    private(set) var captured: [UInt8] = []
    private(set) var dropped = 0
    let toStdout: Bool

    mutating func out(_ bytes: [UInt8]) {
        let room = max(0, Self.captureLimit - captured.count)
        captured += bytes.prefix(room)
        dropped += max(0, bytes.count - room)
        if toStdout { StandardStreams.write(1, bytes) }
    }

    var text: String {
        let s = String(decoding: captured, as: UTF8.self)
        return dropped == 0 ? s : s + "\n[axvm: \(dropped) more console bytes not kept]\n"
    }
}

/// Finds a fixed text in a byte stream, one byte at a time.
struct MarkerMatcher {
    let marker: [UInt8]
    private var window: [UInt8] = []
    init(_ text: String) { marker = Array(text.utf8) }
    /// True on the byte that completes the marker.
    mutating func feed(_ b: UInt8) -> Bool {
        window.append(b)
        if window.count > marker.count { window.removeFirst() }
        return window == marker
    }
}

final class LinuxRunner<Format: NestedPagingFormat> {
    let config: LinuxBootConfig
    let plan: LinuxBootPlan
    let initrd: LinuxInitrd?
    let format: Format
    let cpu: HostCPU
    let kvmPVM: Bool
    let t0: UInt64

    init(config: LinuxBootConfig, plan: LinuxBootPlan, initrd: LinuxInitrd?, format: Format, cpu: HostCPU, kvmPVM: Bool, t0: UInt64) {
        self.config = config
        self.plan = plan
        self.initrd = initrd
        self.format = format
        self.cpu = cpu
        self.kvmPVM = kvmPVM
        self.t0 = t0
    }

    /// Boots the kernel; a terminating signal during set-up ends it with a report too.
    func run() throws(VMMError) -> LinuxBootReport {
        do { return try boot() } catch {
            guard case let .interrupted(signal) = error else { throw error }
            return LinuxBootReport(exit: .interrupted(signal: signal), serialOutput: "",
                                   statistics: RunStatistics(setUpUntilNow: t0, memorySize: config.memorySize),
                                   config: config, plan: plan)
        }
    }

    private func boot() throws(VMMError) -> LinuxBootReport {
        try Termination.checkpoint("setup")
        let system: KVMSystem, vm: VirtualMachine, vcpu: VCPU
        do {
            system = try KVMSystem(path: config.kvmPath)
            vm = try system.createVM()
            try vm.setTSSAddress(X86Layout.tss)
            try vm.setIdentityMapAddress(X86Layout.tss - 0x1000)
            try vm.createIRQChip()
            try vm.createPIT2()
            vcpu = try vm.createVCPU()
            try vcpu.setSupportedCPUIDWithHypervisorBit(from: system)
            try vcpu.setLocalInterruptsForVirtualWire()
        } catch {
            throw .kvm(error)
        }
        let memory = try GuestMemory(vm: vm, format: format, hostCapacity: config.memorySize + (256 << 20),
                                     spaceSize: 1 << 40)
        var ram: [RAMRegion] = []
        for r in plan.ram { ram.append(try memory.addRAM(at: r.start, size: r.size, lazy: config.lazy)) }
        // A terminating signal ends a long initrd load between its chunks.
        try load(memory, progress: { _, _ throws(VMMError) in try Termination.checkpoint("load") })
        do { try LinuxBoot.setupVCPU(vcpu, entry: plan.kernel.entryPoint) } catch { throw .kvm(error) }
        try Termination.check()

        let pager = try LazyPager(memory: memory, faultAround: config.faultAround, cpu: cpu, countAbove: 0)
        installLinuxKickHandler()
        var kickSet = sigset_t(), savedMask = sigset_t()
        sigemptyset(&kickSet)
        sigaddset(&kickSet, SIGUSR1)
        pthread_sigmask(SIG_UNBLOCK, &kickSet, &savedMask)
        defer { if sigismember(&savedMask, SIGUSR1) == 1 { pthread_sigmask(SIG_BLOCK, &kickSet, nil) } }
        let vcpuThread = pthread_self()
        let kick: @Sendable () -> Void = {
            vcpu.requestImmediateExit()
            pthread_kill(vcpuThread, SIGUSR1)
        }
        pager.onFatal = kick
        try pager.start()
        let watchdog: Watchdog
        do {
            watchdog = try Watchdog(timeout: config.timeout, handleInterrupt: config.handleInterrupt, kick: kick,
                                    stuck: { pager.releaseStuckVCPUs() })
        } catch {
            pager.stop()
            throw error
        }
        let tRun = nowNanos()
        var state = LoopState(marker: MarkerMatcher(config.initMarker), serial: LinuxConsole(toStdout: config.serialToStdout))
        var exit: LinuxExitReason
        do {
            exit = try loop(vcpu: vcpu, vm: vm, memory: memory, ram: ram, state: &state, watchdog: watchdog, pager: pager,
                            kick: kick)
        } catch {
            watchdog.stop()
            pager.stop()
            throw error
        }
        let tEnd = nowNanos()
        watchdog.stop()
        pager.stop()
        if let f = pager.failure { exit = .pagerFailure(f) }

        var s = RunStatistics(memory: memory, ram: ram, pager: pager, memorySize: config.memorySize)
        s.exits = state.exits
        s.setupSeconds = Double(tRun - t0) / 1e9
        s.runSeconds = Double(tEnd - tRun) / 1e9
        s.wallSeconds = Double(nowNanos() - t0) / 1e9
        var report = LinuxBootReport(exit: exit, serialOutput: state.serial.text, statistics: s, config: config, plan: plan)
        report.initMarkerSeconds = state.markerAt.map { Double($0 - t0) / 1e9 }
        report.populatedAtMarker = state.populatedAtMarker
        report.serialIRQResamples = state.serialIRQResamples
        report.haltedWakeups = state.haltedWakeups
        report.interruptWaits = state.interruptWaits
        report.residencyMismatches = ram.reduce(0) { $0 + memory.residencyMismatches($1).count }
        return report
    }

    /// Zero page, command line, GDT, page tables, the kernel and the initrd, written through
    /// the address space (lazy pages populated on the way, as a guest touch would), where
    /// the plan placed them. The initrd is read from its file straight into guest memory,
    /// chunk by chunk; `progress(done, total)` is called after each chunk (a large initrd
    /// also shows a progress line on a terminal), and what it throws aborts the load.
    private func load(_ memory: GuestMemory<Format>,
                      progress: (_ done: UInt64, _ total: UInt64) throws(VMMError) -> Void) throws(VMMError) {
        try memory.write(plan.zeroPage(), at: GuestPhysAddr(LinuxLayout.zeroPage))
        try memory.write(plan.cmdline, at: GuestPhysAddr(LinuxLayout.cmdline))
        if !plan.mpTable.isEmpty { try memory.write(plan.mpTable, at: GuestPhysAddr(LinuxLayout.mpTable)) }
        try memory.write(LinuxBootPlan.gdt, at: GuestPhysAddr(LinuxLayout.gdt))
        let t = LinuxBootPlan.pageTables()
        try memory.write(t.pml4, at: GuestPhysAddr(LinuxLayout.pml4))
        try memory.write(t.pdpt, at: GuestPhysAddr(LinuxLayout.pdpt))
        try memory.write(t.directories, at: GuestPhysAddr(LinuxLayout.pageDirectories))
        var result: Result<Void, VMMError> = .success(())
        plan.kernel.protectedModeKernel.withUnsafeBytes { b in
            result = Result { () throws(VMMError) in try memory.write(b, at: GuestPhysAddr(plan.kernel.loadAddress)) }
        }
        try result.get()
        if let initrd {
            var line = LoadProgressLine(label: "axvm: loading initrd \(initrd.path)", total: initrd.size)
            var done: UInt64 = 0
            defer { line.finish(done, initrd.size) }
            try initrd.copy(to: { chunk, offset throws(VMMError) in
                // offset + count <= initrdSize: inside the placement the plan checked.
                try memory.write(chunk, at: GuestPhysAddr(plan.initrdAddress + offset))
            }, progress: { d, total throws(VMMError) in
                done = d
                line.update(d, total)
                try progress(d, total)
            })
        }
    }

    struct LoopState {
        var marker: MarkerMatcher
        var serial: LinuxConsole
        var exits = 0
        var markerAt: UInt64?
        var populatedAtMarker: UInt64?
        var serialIRQResamples = 0
        var haltedWakeups = 0
        var interruptWaits: [String] = []
        static var interruptWaitsKept: Int { 4 }
    }

    private func loop(vcpu: VCPU, vm: VirtualMachine, memory: GuestMemory<Format>, ram: [RAMRegion], state: inout LoopState,
                      watchdog: Watchdog, pager: LazyPager<Format>, kick: @escaping @Sendable () -> Void) throws(VMMError) -> LinuxExitReason {
        func rip() -> UInt64 { (try? vcpu.registers().rip) ?? 0 }
        let i8042 = I8042()
        // The UART's bytes go through `state`; a local buffer keeps the closure out of inout.
        var pending: [UInt8] = []
        let resampler = try IRQResampler(vm: vm, irq: LinuxLayout.serialIRQ, kick: kick)
        defer {
            resampler.stop()
            state.serialIRQResamples = resampler.resampled
        }
        let uart = UART8250(sink: { pending.append($0) },
                            interrupt: { resampler.edge(); try? vm.pulseIRQ(LinuxLayout.serialIRQ) },
                            level: { resampler.set($0) })
        while true {
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch {
                if let f = pager.failure { return .pagerFailure(f) }
                throw .kvm(error)
            }
            state.exits += 1
            switch exit {
            case let .io(port, isOut, _, data):
                if isOut {
                    for b in data {
                        if UART8250.ports.contains(port) {
                            uart.write(port: port, b)
                        } else if port == I8042.dataPort || port == I8042.commandPort {
                            i8042.write(port: port, b)
                        }
                    }
                    if !pending.isEmpty { state.serial.out(pending) }
                    for b in pending where state.markerAt == nil {
                        if state.marker.feed(b) {
                            state.markerAt = nowNanos()
                            state.populatedAtMarker = ram.reduce(0) { $0 + memory.populatedBytes($1) }
                        }
                    }
                    pending.removeAll(keepingCapacity: true)
                    if i8042.resetRequested { return .reset }
                } else {
                    for i in 0..<data.count {
                        if UART8250.ports.contains(port) {
                            data[i] = uart.read(port: port)
                        } else if port == I8042.dataPort || port == I8042.commandPort {
                            data[i] = i8042.read(port: port)
                        } else {
                            data[i] = 0xff  // absent devices float high
                        }
                    }
                }
            case let .mmio(_, isWrite, data):
                // Nothing is mapped outside RAM (the LAPIC and IOAPIC are in the kernel):
                // reads see an empty bus, writes are dropped.
                if !isWrite { for i in 0..<data.count { data[i] = 0xff } }
            case .hlt:
                continue  // the in-kernel LAPIC handles hlt; a stray exit resumes
            case .shutdown: return .shutdown
            case let .failEntry(reason): return .failEntry(reason: reason)
            case let .internalError(sub, data):
                // KVM_INTERNAL_ERROR_EMULATION = 1 (include/uapi/linux/kvm.h).
                if sub == 1 { return .emulationFailure(rip: rip(), data: data, kvmPVM: kvmPVM) }
                return .internalError(suberror: sub, data: data, rip: rip())
            case let .systemEvent(type): return .systemEvent(type: type)
            case .armNISV: return .unsupportedExit(reason: UInt32(KVM_EXIT_ARM_NISV), rip: rip())  // arm64 only
            case .interrupted:
                if let f = pager.failure { return .pagerFailure(f) }
                if let signal = watchdog.interruptSignal { return .interrupted(signal: signal) }
                if watchdog.timedOut {
                    // The interrupt state starts with the mp state: halted (in hlt) or runnable.
                    return .timeout(seconds: config.timeout ?? 0, rip: rip(),
                                    state: "UART \(uart.state); \(vcpu.interruptState(line: LinuxLayout.serialIRQ, vm: vm)); \(state.exits) exits")
                }
                // The resampler's kick: a vCPU halted (KVM_MP_STATE_HALTED = 3) while the UART's
                // interrupt has been pending for a whole period is made runnable, so that
                // KVM looks at the pending interrupt again on entry.
                if uart.asserted {
                    if state.interruptWaits.count < LoopState.interruptWaitsKept {
                        let at = StatsFormat.fixed(Double(nowNanos() - t0) / 1e9, 3)
                        state.interruptWaits.append("\(at) s: \(vcpu.interruptState(line: LinuxLayout.serialIRQ, vm: vm))")
                    }
                    if (try? vcpu.multiprocessingState()) == 3 {
                        try? vcpu.setMultiprocessingState(0)
                        state.haltedWakeups += 1
                    }
                }
                continue
            case let .unsupported(reason): return .unsupportedExit(reason: reason, rip: rip())
            }
        }
    }
}
#endif
