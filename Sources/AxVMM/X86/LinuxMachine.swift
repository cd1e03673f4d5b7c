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
    /// (docs/linux.md, "Interrupts and stalls"). For experiments.
    public var mpTable = true

    public init(kernelPath: String) { self.kernelPath = kernelPath }

    /// Serial console; `reboot=k`: reboot through the i8042 (axvm's way out); no PCI
    /// bus to probe; the i8042 without keyboard and mouse ports; quiet.
    public static let defaultCmdline = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux i8042.nokbd quiet"
    /// What scripts/linux-guest-initramfs.sh's init prints first.
    public static let defaultInitMarker = "axvm-linux: init reached"
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

    public static func boot(_ c: LinuxBootConfig) throws(LinuxBootError) -> RunReport {
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
        struct Job: Platforms.Job {
            let config: LinuxBootConfig, plan: LinuxBootPlan, initrd: LinuxInitrd?, t0: UInt64
            func run<P: Platform>(_ platform: P) throws(VMMError) -> RunReport {
                try Runner(loader: LinuxLoader(platform: platform, config: config, plan: plan, initrd: initrd, t0: t0)).run()
            }
        }
        // This file is compiled for x86_64 only, so the host's platform is an x86 one.
        do { return try Platforms.withHost(Job(config: c, plan: plan, initrd: initrd, t0: t0)) } catch { throw .vmm(error) }
    }
}

/// What a Linux boot adds to the report.
public struct LinuxBootResult: Sendable {
    public var config: LinuxBootConfig
    public var plan: LinuxBootPlan
    /// Seconds from the start of `boot` (files read, memory set up, kernel loaded) to the
    /// first appearance of the init marker on the console; nil if it never appeared.
    public var initMarkerSeconds: Double?
    /// Guest RAM populated when the marker appeared.
    public var populatedAtMarker: UInt64?
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
}

extension RunReport {
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

/// A Linux bzImage's loader and its PC: the boot plan written into memory (zero page,
/// command line, GDT, page tables, MP table, kernel, initrd), the 64-bit boot protocol's
/// registers, and the devices — an 8250 on COM1 whose interrupt goes through KVM's in-kernel
/// IOAPIC (re-pulsed by `IRQResampler` while pending), an i8042 whose reset line ends the
/// run; other ports float, MMIO outside RAM reads 0xff.
final class LinuxLoader<P: Platform>: GuestLoader, @unchecked Sendable {  // device state behind `lock`
    let platform: P
    let config: LinuxBootConfig
    let plan: LinuxBootPlan
    let initrd: LinuxInitrd?
    let settings: RunSettings
    let t0: UInt64
    private let lock = Lock()
    private let serial: Serial
    private var marker: MarkerMatcher
    private var result: LinuxBootResult
    private var uart: UART8250?
    private let i8042 = I8042()
    private var resampler: IRQResampler?
    /// Guest RAM populated now (set by `load`).
    private var populated: @Sendable () -> UInt64 = { 0 }
    static var interruptWaitsKept: Int { 4 }

    init(platform: P, config: LinuxBootConfig, plan: LinuxBootPlan, initrd: LinuxInitrd?, t0: UInt64) {
        self.platform = platform
        self.config = config
        self.plan = plan
        self.initrd = initrd
        self.t0 = t0
        settings = RunSettings(memorySize: config.memorySize, lazy: config.lazy, faultAround: config.faultAround,
                               timeout: config.timeout, serialToStdout: config.serialToStdout,
                               handleInterrupt: config.handleInterrupt, kvmPath: config.kvmPath)
        serial = Serial(toStdout: config.serialToStdout)
        marker = MarkerMatcher(config.initMarker)
        result = LinuxBootResult(config: config, plan: plan)
    }

    var ram: [GuestPhysRange] { plan.ram }
    var interrupts: InterruptModel { .inKernel }
    var testRegionBase: GuestPhysAddr { GuestPhysAddr(0) }

    func load(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        populated = { memory.regions.reduce(0) { $0 + memory.populatedBytes($1) } }
        // A terminating signal ends a long initrd load between its chunks.
        try write(memory, progress: { _, _ throws(VMMError) in try Termination.checkpoint("load") })
        for v in vcpus {
            do { try LinuxBoot.setupVCPU(v, entry: plan.kernel.entryPoint) } catch { throw .kvm(error) }
        }
    }

    /// Zero page, command line, GDT, page tables, the kernel and the initrd, written through
    /// the address space (lazy pages populated on the way, as a guest touch would), where
    /// the plan placed them. The initrd is read from its file straight into guest memory,
    /// chunk by chunk; `progress(done, total)` is called after each chunk (a large initrd
    /// also shows a progress line on a terminal), and what it throws aborts the load.
    private func write(_ memory: GuestMemory<P.Format>,
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

    func start(vm: VirtualMachine, kick: @escaping @Sendable () -> Void) throws(VMMError) {
        let resampler = try IRQResampler(vm: vm, irq: LinuxLayout.serialIRQ, kick: kick)
        self.resampler = resampler
        // The UART's bytes go to the console through `out` (under `lock`). The closure holds
        // the loader until `stop` drops the UART.
        uart = UART8250(sink: { self.out($0) },
                        interrupt: { resampler.edge(); try? vm.pulseIRQ(LinuxLayout.serialIRQ) },
                        level: { resampler.set($0) })
    }

    func stop() {
        resampler?.stop()
        lock.withLock {
            result.serialIRQResamples = resampler?.resampled ?? 0
            uart = nil
        }
    }

    /// A byte from the UART (called under `lock`): to the console, and watched for the marker.
    private func out(_ byte: UInt8) {
        serial.out(byte)
        if result.initMarkerSeconds == nil && marker.feed(byte) {
            result.initMarkerSeconds = Double(nowNanos() - t0) / 1e9
            result.populatedAtMarker = populated()
        }
    }

    func access(_ access: DeviceAccess, vcpu: VCPU) -> DeviceAction {
        guard case let .io(port, isOut, data) = access else { return .unhandled }
        let isUART = UART8250.ports.contains(port), isI8042 = port == I8042.dataPort || port == I8042.commandPort
        guard isUART || isI8042 else { return .unhandled }
        return lock.withLock {
            if isOut {
                for b in data {
                    if isUART { uart?.write(port: port, b) } else { i8042.write(port: port, b) }
                }
                return i8042.resetRequested ? .reset : .handled
            }
            for i in 0..<data.count { data[i] = isUART ? (uart?.read(port: port) ?? 0xff) : i8042.read(port: port) }
            return .handled
        }
    }

    /// Nothing is mapped outside RAM (the LAPIC and IOAPIC are in the kernel): reads see an
    /// empty bus, writes are dropped.
    func unclaimedMMIO(gpa: GuestPhysAddr, isWrite: Bool, size: Int, pc: UInt64) -> ExitReason? { nil }

    /// The in-kernel LAPIC handles `hlt`; a stray exit resumes.
    func halted(_ vcpu: VCPU) -> VCPUOutcome? { nil }

    /// The resampler's kick: a vCPU halted (KVM_MP_STATE_HALTED = 3) while the UART's
    /// interrupt has been pending for a whole period is made runnable, so that KVM looks at
    /// the pending interrupt again on entry.
    func kicked(_ vcpu: VCPU, vm: VirtualMachine) {
        lock.withLock {
            guard uart?.asserted == true else { return }
            if result.interruptWaits.count < Self.interruptWaitsKept {
                let at = StatsFormat.fixed(Double(nowNanos() - t0) / 1e9, 3)
                result.interruptWaits.append("\(at) s: \(vcpu.interruptState(line: LinuxLayout.serialIRQ, vm: vm))")
            }
            if (try? vcpu.multiprocessingState()) == 3 {
                try? vcpu.setMultiprocessingState(0)
                result.haltedWakeups += 1
            }
        }
    }

    /// The interrupt state starts with the mp state: halted (in hlt) or runnable.
    func timeoutState(_ vcpu: VCPU, vm: VirtualMachine, exits: Int) -> String? {
        let uartState = lock.withLock { uart?.state ?? "not set up" }
        return "UART \(uartState); \(vcpu.interruptState(line: LinuxLayout.serialIRQ, vm: vm)); \(exits) exits"
    }

    func finish(_ report: inout RunReport, memory: GuestMemory<P.Format>, ram: [RAMRegion], outcomes: [VCPUOutcome]) {
        report.serialOutput = serial.text
        report.linux = lock.withLock { result }
    }

    func finishEarly(_ report: inout RunReport) { report.linux = lock.withLock { result } }
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

#endif
