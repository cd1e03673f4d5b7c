import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// The one run path for every guest: KVM, guest memory as an `AddrSpace`, the lazy pager
/// and its threads, the vCPU threads, kicks, the watchdog and the report are built here and
/// driven by one exit loop. What differs between guests is the loader (`GuestLoader`: what
/// goes into memory, which registers, which devices); what differs between hosts is the
/// platform (`Platform`).
final class Runner<L: GuestLoader>: @unchecked Sendable {  // immutable; vCPU threads share it
    let loader: L
    var platform: L.P { loader.platform }
    var settings: RunSettings { loader.settings }
    /// Set for a restore: the snapshot whose memory, vCPUs and VM state replace the loader's `load`.
    let restore: RestoreSource?

    init(loader: L, restore: RestoreSource? = nil) {
        self.loader = loader
        self.restore = restore
    }

    /// Runs the guest; a terminating signal during set-up ends it with a report too. `start`:
    /// when the run began, if before this call (a restore reads its snapshot first).
    func run(start: UInt64? = nil) throws(VMMError) -> RunReport {
        let t0 = start ?? nowNanos()
        do { return try runGuest(t0: t0) } catch {
            guard case let .interrupted(signal) = error else { throw error }
            var report = RunReport(exit: .interrupted(signal: signal), serialOutput: "", arch: platform.arch, settings: settings,
                                   statistics: RunStatistics(setUpUntilNow: t0, memorySize: settings.memorySize))
            loader.finishEarly(&report)
            return report
        }
    }

    private func runGuest(t0: UInt64) throws(VMMError) -> RunReport {
        try Termination.checkpoint("setup")
        if settings.snapshot != nil, let why = platform.snapshotRefusal(interrupts: loader.interrupts) {
            throw .badValue(what: "snapshot", value: platform.arch.rawValue, reason: why)
        }
        if let plan = settings.snapshot, plan.diff && restore == nil {
            throw .badValue(what: "diff snapshot", value: plan.directory, reason: "needs a restored VM (axvm restore … --snapshot-diff): a diff is over the snapshot restored")
        }
        // Before any VM exists: a snapshot directory is usable and replaces nothing this run
        // reads (`RestoreSource.withLoader` checked the restored snapshot's machine).
        if let plan = settings.snapshot {
            try restore?.checkSnapshotTarget(plan.directory)
            _ = try SnapshotDirectory(plan.directory)
        }
        // The control socket is bound now (no thread may make a socket once confined); its
        // file goes when the run ends, however it ends.
        let controlSocket = try settings.apiSocket.map { path throws(VMMError) in try ControlSocket(path: path) }
        defer { controlSocket?.stop() }
        let system: KVMSystem
        do { system = try KVMSystem(path: settings.kvmPath) } catch { throw .kvm(error) }
        let limit = Int(system.checkExtension(KVM_CAP_MAX_VCPUS))
        if limit > 0 && settings.vcpus > limit {
            throw .badValue(what: "vCPUs", value: "\(settings.vcpus)", reason: "above this KVM's limit of \(limit)")
        }
        let ramEnd = loader.ram.last?.end ?? GuestPhysAddr(0)
        let (vm, vcpus) = try platform.createVM(system: system, vcpus: settings.vcpus, ramEnd: ramEnd,
                                                interrupts: loader.interrupts)
        let memory = try GuestMemory(vm: vm, format: platform.format,
                                     hostCapacity: settings.memorySize + VMConfig.romSize + (256 << 20), spaceSize: 1 << 40)
        if let m = settings.maxResident { memory.withSpace { $0.hal.guestFrameLimit = Int(m / 4096) } }
        var ram: [RAMRegion] = []
        if let restore {
            ram = try restoreMachine(restore, memory: memory, vm: vm, vcpus: vcpus)
        } else {
            for r in loader.ram { ram.append(try memory.addRAM(at: r.start, size: r.size, lazy: settings.lazy)) }
            try loader.load(memory: memory, vm: vm, vcpus: vcpus)
        }
        var buses = DeviceBuses()
        try loader.attach(&buses, memory: memory, ram: ram)
        try Termination.check()

        let cpus = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let platform = self.platform
        let mapLayout = settings.faultMap ? FaultMapLayout(areas: ram.map { ($0.range, $0.lazy) }) : nil
        let mapStart = nowNanos()
        let pager = try LazyPager(memory: memory, faultAround: settings.faultAround, countAbove: loader.testRegionBase.raw,
                                  threads: settings.faultThreads ?? min(settings.vcpus, cpus),
                                  mapLayout: mapLayout, mapStart: mapStart,
                                  nestedFault: { platform.nestedFault(gpa: $0, write: $1) })
        let control = RunControl(vcpus: vcpus)
        installKickHandler()
        // The kick must reach the vCPU threads even if they block signals (helper threads
        // do from birth; libdispatch workers do): each unblocks SIGUSR2 for its run. Only
        // SIGUSR2's state is restored afterwards.
        let wasBlocked = unblockKick()
        defer { if wasBlocked { blockKick() } }
        pager.onFatal = { control.kickAll() }
        try pager.start()
        let watchdog: Watchdog
        /// A failed step of set-up after the pager started: what runs is stopped again.
        func abandon(_ watchdog: Watchdog?) {
            watchdog?.stop()
            loader.stop()
            pager.stop()
        }
        do {
            // A restore's VM and vCPU state after the pager runs: KVM reads guest memory as
            // it takes some of it (the kvmclock MSR maps its page), and that page may be lazy.
            if let restore { try restoreState(restore, vm: vm, vcpus: vcpus) }
            try loader.start(vm: vm, kick: { control.kickAll() })
            watchdog = try Watchdog(timeout: settings.timeout, handleInterrupt: settings.handleInterrupt,
                                    kick: { control.kickAll() }, stuck: { pager.releaseStuckVCPUs() })
        } catch {
            abandon(nil)
            throw error
        }
        let taker: SnapshotTaker?
        do throws(VMMError) {
            taker = try settings.snapshot.map { plan throws(VMMError) in
                let t = try SnapshotTaker(plan: plan, vcpus: settings.vcpus)
                t.kick = { control.kickAll() }
                t.save = { [self] states, ended throws(VMMError) in
                    loader.pauseDevices()
                    defer { loader.resumeDevices() }
                    return try writeSnapshot(plan.directory, states: states, ended: ended, vm: vm, memory: memory)
                }
                if let text = plan.onText { loader.watchConsole(text) { t.request("console text") } }
                try t.start()
                return t
            }
        } catch {
            abandon(watchdog)
            throw error
        }
        defer { taker?.stop() }
        do {
            try controlSocket?.start { [loader, settings] request in
                Self.answer(request, loader: loader, settings: settings, memory: memory, arch: platform.arch)
            }
        } catch {
            abandon(watchdog)
            throw error
        }
        // Set-up is done: from here this thread runs under the sandbox's `main` filter.
        if settings.sandbox {
            do throws(VMMError) { try Sandbox.confineMain() } catch {
                abandon(watchdog)
                throw error
            }
        }
        let context = Context(vm: vm, system: system, memory: memory, ram: ram, buses: buses, control: control,
                              watchdog: watchdog, pager: pager, taker: taker)
        let tRun = nowNanos()
        // vCPU 0 runs on this thread, the others on their own; vCPUs a snapshot saved as
        // ended (a memtest vCPU that had exited) keep that outcome and do not run.
        let results = VCPUResults(count: settings.vcpus)
        let preEnded = restore?.endedVCPUs ?? []
        for (i, e) in preEnded.enumerated() { if let e { results.set(i, VCPUResult(outcome: e, stats: VCPUStatistics())) } }
        func mustRun(_ i: Int) -> Bool { i >= preEnded.count || preEnded[i] == nil }
        var others: [OSThread] = []
        for i in 1..<max(1, settings.vcpus) where mustRun(i) {
            do {
                others.append(try OSThread(.vcpu, name: "axvm-vcpu\(i)") { [self] in
                    _ = unblockKick()
                    results.set(i, runVCPU(vcpus[i], index: i, context))
                })
            } catch {
                control.fail(error)
                break
            }
        }
        if mustRun(0) {
            results.set(0, runVCPU(vcpus[0], index: 0, context))
        } else {
            taker?.leave(index: 0, outcome: preEnded[0] ?? .stopped)
        }
        for t in others { t.join() }
        let tEnd = nowNanos()
        watchdog.stop()
        loader.stop()
        pager.stop()
        if let e = control.error { throw e }
        if let e = taker?.error { throw e }
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

        var s = RunStatistics(memory: memory, ram: ram, pager: pager, memorySize: settings.memorySize)
        s.vcpus = outcomes.map { $0.stats }
        s.exits = s.vcpus.reduce(0) { $0 + $1.exits }
        s.setupSeconds = Double(tRun - t0) / 1e9
        s.runSeconds = Double(tEnd - tRun) / 1e9
        s.wallSeconds = Double(nowNanos() - t0) / 1e9
        if let layout = mapLayout {
            s.faultMap = FaultMapData(layout: layout, memory: memory, ram: ram, threads: s.faultThreads,
                                      runNanos: tEnd - mapStart)
        }
        s.snapshot = taker?.taken
        s.restore = restore.map { r in memory.withSpace { _ in r.statistics(pagesCopied: memory.hal.contents?.pagesCopied ?? 0) } }
        var report = RunReport(exit: exit, serialOutput: "", arch: platform.arch, settings: settings, statistics: s)
        report.residencyMismatches = ram.reduce(0) { $0 + memory.residencyMismatches($1).count }
        loader.finish(&report, memory: memory, ram: ram, outcomes: outcomes.map { $0.outcome })
        return report
    }

    /// What every vCPU loop of one run shares.
    struct Context: @unchecked Sendable {  // each field is thread-safe
        let vm: VirtualMachine
        let system: KVMSystem
        let memory: GuestMemory<L.P.Format>
        let ram: [RAMRegion]
        let buses: DeviceBuses
        let control: RunControl
        let watchdog: Watchdog
        let pager: LazyPager<L.P.Format>
        let taker: SnapshotTaker?
    }

    /// One vCPU's loop, with its statistics. Ends of the whole run go through `control`.
    private func runVCPU(_ vcpu: VCPU, index: Int, _ c: Context) -> VCPUResult {
        c.control.register(index)
        var stats = VCPUStatistics()
        let t0 = nowNanos()
        var outcome = VCPUOutcome.stopped
        do { outcome = try loop(vcpu: vcpu, index: index, c, exits: &stats.exits) } catch { c.control.fail(error) }
        c.taker?.leave(index: index, outcome: outcome)
        stats.runNanos = nowNanos() - t0
        return VCPUResult(outcome: outcome, stats: stats)
    }

    /// The exit loop: every guest's exits, the devices' through the loader.
    private func loop(vcpu: VCPU, index: Int, _ c: Context, exits: inout Int) throws(VMMError) -> VCPUOutcome {
        func pc() -> UInt64 { platform.programCounter(vcpu) }
        /// An end of the whole VM: every other vCPU is stopped.
        func fatal(_ reason: ExitReason) -> VCPUOutcome {
            c.control.end(reason)
            return .stopped
        }
        /// A device's answer.
        func act(_ effect: BusEffect) throws(VMMError) -> VCPUOutcome? {
            switch effect {
            case .handled: return nil
            case let .endVCPU(outcome): return outcome
            case let .endMachine(reason): return fatal(reason)
            case let .fail(error): throw error
            }
        }
        while true {
            if c.control.isStopping { return .stopped }
            if let taker = c.taker, taker.isPending {
                // Complete the last exit first (KVM_RUN with immediate_exit: a port read
                // gets its data, the instruction retires, nothing runs), then save.
                vcpu.requestImmediateExit()
                _ = try? vcpu.run()
                let state = Result { () throws(VMMError) in try platform.saveVCPU(vcpu, system: c.system) }
                if taker.pause(index: index, state: state) {
                    if let e = taker.error { throw e }
                    return fatal(.snapshotTaken(directory: taker.plan.directory))
                }
                continue
            }
            let exit: VCPUExit
            do { exit = try vcpu.run() } catch {
                // EFAULT after the pager gave up (its windows are fenced off): the run
                // reports the pager's reason.
                if let f = c.pager.failure { return fatal(.pagerFailure(f)) }
                if let end = platform.runFailed(error, vcpu: vcpu) { return fatal(end) }
                throw .kvm(error)
            }
            exits += 1
            switch exit {
            case let .io(port, isOut, _, data):
                let bus = c.buses.pio
                let effect = isOut ? bus.write(UInt64(port), UnsafeRawBufferPointer(data), vcpu: index) : bus.read(UInt64(port), data, vcpu: index)
                // No device there: writes are dropped, reads float high, as on a PC's bus.
                if effect == nil && !isOut { data.fill(0xff) }
                if let effect, let end = try act(effect) { return end }
            case let .mmio(gpa, isWrite, data):
                let bus = c.buses.mmio
                let effect = isWrite ? bus.write(gpa, UnsafeRawBufferPointer(data), vcpu: index) : bus.read(gpa, data, vcpu: index)
                if let effect {
                    if let end = try act(effect) { return end }
                } else {
                    if let end = loader.unclaimedMMIO(gpa: GuestPhysAddr(gpa), isWrite: isWrite, size: data.count, pc: pc()) {
                        return fatal(end)
                    }
                    if !isWrite { data.fill(0xff) }
                }
            case .hlt:
                if let outcome = loader.halted(vcpu) {
                    if case let .deadHalt(rip) = outcome { return fatal(.deadHalt(rip: rip)) }
                    return outcome
                }
            case .shutdown: return fatal(.shutdown(registers: platform.shutdownRegisters(vcpu)))
            case let .armNISV(iss, ipa): return fatal(platform.unemulatedAbort(esrISS: iss, ipa: ipa, pc: pc()))
            case let .riscvSBI(call):
                switch loader.firmwareCall(call, vcpu: index) {
                case let .answer(error, value): vcpu.setSBIReturn(error: error, value: value)
                case let .end(reason): return fatal(reason)
                }
            case let .failEntry(reason): return fatal(.failEntry(reason: reason))
            case let .internalError(sub, data): return fatal(.internalError(suberror: sub, data: data, rip: pc()))
            case let .systemEvent(type): return fatal(Self.systemEvent(type))
            case .interrupted:
                if let f = c.pager.failure { return fatal(.pagerFailure(f)) }
                if let signal = c.watchdog.interruptSignal { return fatal(.interrupted(signal: signal)) }
                if c.watchdog.timedOut {
                    return fatal(.timeout(seconds: settings.timeout ?? 0, rip: pc(),
                                          state: loader.timeoutState(vcpu, vm: c.vm, exits: exits)))
                }
                if c.control.isStopping { return .stopped }
                if let end = loader.kicked(vcpu, vm: c.vm) { return fatal(end) }
            case let .unsupported(reason): return fatal(.unsupportedExit(reason: reason, rip: pc()))
            }
        }
    }
}

extension Runner {
    /// A KVM_EXIT_SYSTEM_EVENT as the run's end (include/uapi/linux/kvm.h:
    /// KVM_SYSTEM_EVENT_SHUTDOWN 1, RESET 2; arm64's PSCI SYSTEM_OFF and SYSTEM_RESET).
    static func systemEvent(_ type: UInt32) -> ExitReason {
        switch type {
        case 1: .powerOff
        case 2: .systemReset
        default: .systemEvent(type: type)
        }
    }
}

extension GuestLoader {
    /// The `reclaim` device (memtest's retouch guest): RAM from `testRegionBase` up is
    /// depopulated, so the next touch faults again and reads 0.
    func reclaim(memory: GuestMemory<P.Format>, ram: [RAMRegion]) throws(VMMError) {
        let base = testRegionBase.raw
        for r in ram where r.range.end.raw > base && !r.readOnly {
            let from = GuestPhysAddr(max(r.range.start.raw, base))
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
