// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

extension LinuxMachine {
    /// x86: reads and checks the bzImage, and checks the initrd (its size: it is opened, not
    /// read) and command line against the RAM layout: every input error is found here,
    /// before KVM is opened, and an initrd that cannot fit is refused without reading it.
    public static func plan(_ c: LinuxBootConfig) throws(LinuxBootError) -> (LinuxBootPlan, initrd: LinuxInitrd?) {
        let (plan, initrd, _) = try planWithDevices(c)
        return (plan, initrd)
    }

    /// `plan`, and the virtio devices (their images opened and locked) at their slots.
    /// `kernelBytes`: the kernel file, if the caller has read it already.
    static func planWithDevices(_ c: LinuxBootConfig, kernelBytes: [UInt8]? = nil) throws(LinuxBootError) -> (LinuxBootPlan, initrd: LinuxInitrd?, VirtioSet?) {
        do { try validate(c) } catch { throw .vmm(error) }
        guard c.vcpus == 1 || c.firmware != .none else {
            throw .vmm(.badValue(what: "vCPUs", value: "\(c.vcpus)",
                                 reason: "without firmware tables (--no-mp-table) a Linux guest finds one CPU"))
        }
        let bytes: [UInt8]
        if let kernelBytes { bytes = kernelBytes } else { bytes = try LinuxKernel.read(c.kernelPath) }
        let kernel = try LinuxKernel(path: c.kernelPath, bytes: bytes)
        // Larger than RAM cannot fit: refused from its fstat; the plan then places it by size.
        let initrd = try c.initrdPath.map { p throws(LinuxBootError) in
            try LinuxInitrd(path: p, limit: min(c.memorySize, 4 << 30)) { size in
                "\(size) bytes do not fit in RAM: larger than the \(c.memorySize >> 20) MiB of guest RAM"
            }
        }
        let virtio: VirtioSet?
        do {
            virtio = c.virtioDevices > 0
                ? try VirtioSet(disks: c.disks, rng: c.rng, balloon: c.balloonTargetPages, base: X86Layout.virtioBase,
                                firstGSI: X86Layout.virtioFirstGSI) : nil
        } catch { throw .vmm(error) }
        let slots = virtio?.slots ?? []
        let plan = try LinuxBootPlan(kernel: kernel, ram: X86Layout.ramRanges(size: c.memorySize), cmdline: c.cmdline,
                                     initrdPath: c.initrdPath, initrdSize: initrd?.size ?? 0, firmware: c.firmware, cpus: c.vcpus,
                                     virtio: slots)
        return (plan, initrd, virtio)
    }
}

extension X86Platform {
    /// A bzImage through the 64-bit boot protocol, on a PC (`LinuxLoader`); a multiboot
    /// kernel (a file without a bzImage's setup header and with a multiboot header) on the
    /// smaller machine of `MultibootLoader`.
    func bootLinux(_ c: LinuxBootConfig, t0: UInt64) throws(LinuxBootError) -> RunReport {
        // `LinuxMachine.boot` has validated `c`.
        let bytes = try LinuxKernel.read(c.kernelPath)
        if !LinuxSetupHeader.isBzImage(bytes) && MultibootKernel.headerOffset(in: bytes) != nil {
            return try bootMultiboot(c, kernel: MultibootKernel(path: c.kernelPath, bytes: bytes), t0: t0)
        }
        let (plan, initrd, virtio) = try LinuxMachine.planWithDevices(c, kernelBytes: bytes)
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
        let loader = LinuxLoader(platform: self, config: c, plan: plan, initrd: initrd, t0: t0)
        loader.virtio = virtio
        do { return try Runner(loader: loader).run() } catch {
            throw .vmm(error)
        }
    }
}

/// A Linux bzImage's loader and its PC: the boot plan written into memory (zero page,
/// command line, GDT, page tables, ACPI or MP tables, kernel, initrd), the 64-bit boot
/// protocol's registers on the bootstrap processor, and the devices — an 8250 on COM1 whose
/// interrupt goes through KVM's in-kernel IOAPIC (re-pulsed by `IRQResampler` while
/// pending), an i8042 whose reset line ends the run, the ACPI sleep control register whose
/// S5 powers off, an empty PCI bus (`EmptyPCIBus`); other ports float, MMIO outside RAM
/// reads 0xff. `HaltWatch` ends a guest whose every vCPU halted for good (Linux's `halt`) at
/// once rather than at the timeout.
final class LinuxLoader<P: Platform>: GuestLoader, @unchecked Sendable {  // device state behind `lock`
    let platform: P
    let config: LinuxBootConfig
    /// nil for a restore (memory and registers come from the snapshot).
    let plan: LinuxBootPlan?
    let ram: [GuestPhysRange]
    let initrd: LinuxInitrd?
    /// A restore's device registers, set once `start` has made the UART.
    private var restoredUART: [UInt8]?
    let settings: RunSettings
    let t0: UInt64
    private let lock = Lock()
    private let console: LinuxConsole
    private var uart: UART8250?
    private let i8042 = I8042()
    private var pci = EmptyPCIBus()
    private var resampler: IRQResampler?
    /// The virtio devices, at `X86Layout.virtioBase` (set before the run; attached with the VM).
    var virtio: VirtioSet?
    /// Ends the run when every vCPU has halted for good (`HaltWatch`).
    private let haltWatch: HaltWatch
    static var interruptWaitsKept: Int { 4 }

    init(platform: P, config: LinuxBootConfig, plan: LinuxBootPlan?, ram: [GuestPhysRange], initrd: LinuxInitrd?, t0: UInt64) {
        self.platform = platform
        self.config = config
        self.plan = plan
        self.ram = ram
        self.initrd = initrd
        self.t0 = t0
        settings = config.settings
        haltWatch = HaltWatch(vcpus: config.vcpus)
        console = LinuxConsole(config: config, placements: plan?.placements ?? [], initrdAddress: plan?.initrdAddress ?? 0,
                               initrdSize: plan?.initrdSize ?? 0, t0: t0)
    }

    convenience init(platform: P, config: LinuxBootConfig, plan: LinuxBootPlan, initrd: LinuxInitrd?, t0: UInt64) {
        self.init(platform: platform, config: config, plan: plan as LinuxBootPlan?, ram: plan.ram, initrd: initrd, t0: t0)
    }

    var interrupts: InterruptModel { .inKernel }
    var testRegionBase: GuestPhysAddr { GuestPhysAddr(0) }

    func load(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        guard let plan else { throw .host("Linux loader without a boot plan (a restore) asked to load") }
        console.populated = { memory.regions.reduce(0) { $0 + memory.populatedBytes($1) } }
        try write(memory, plan)
        // The bootstrap processor enters the kernel; the others wait in KVM for the INIT and
        // SIPIs Linux sends them through its local APIC (KVM_MP_STATE_UNINITIALIZED).
        do { try LinuxBoot.setupVCPU(vcpus[0], entry: plan.kernel.entryPoint) } catch { throw .kvm(error) }
    }

    /// Zero page, command line, GDT, page tables, the kernel and the initrd, written through
    /// the address space (lazy pages populated on the way, as a guest touch would), where
    /// the plan placed them.
    private func write(_ memory: GuestMemory<P.Format>, _ plan: LinuxBootPlan) throws(VMMError) {
        try memory.write(plan.zeroPage(), at: GuestPhysAddr(LinuxLayout.zeroPage))
        try memory.write(plan.cmdline, at: GuestPhysAddr(LinuxLayout.cmdline))
        if !plan.firmwareTables.isEmpty { try memory.write(plan.firmwareTables, at: GuestPhysAddr(plan.firmwareAddress)) }
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
        try memory.mapForGuest(GuestPhysAddr(plan.kernel.loadAddress), size: UInt64(plan.kernel.protectedModeKernel.count))
        try initrd?.load(into: memory, at: plan.initrdAddress)
    }

    func start(vm: VirtualMachine, kick: @escaping @Sendable () -> Void) throws(VMMError) {
        let resampler = try IRQResampler(vm: vm, irq: LinuxLayout.serialIRQ, kick: kick)
        self.resampler = resampler
        // The UART's bytes go to the console through `out` (under `lock`). The closure holds
        // the loader until `stop` drops the UART.
        uart = UART8250(sink: { self.console.out($0) },
                        interrupt: { resampler.edge(); try? vm.pulseIRQ(LinuxLayout.serialIRQ) },
                        level: { resampler.set($0) })
        if let r = restoredUART { lock.withLock { uart?.restore(r) } }
        try haltWatch.start(kick: kick)
        try virtio?.start()
    }

    func stop() {
        virtio?.stop()
        haltWatch.stop()
        resampler?.stop()
        lock.withLock {
            console.result.serialIRQResamples = resampler?.resampled ?? 0
            uart = nil
        }
    }

    /// The PC devices on I/O ports, all under the loader's lock: the empty PCI bus's
    /// configuration ports, the ACPI sleep registers, COM1's 8250, the i8042.
    func attach(_ buses: inout DeviceBuses, memory: GuestMemory<P.Format>, ram: [RAMRegion]) throws(VMMError) {
        func ports(_ name: String, _ base: UInt16, _ count: UInt16,
                   read: @escaping @Sendable (UInt16, UnsafeMutableRawBufferPointer) -> BusEffect,
                   write: @escaping @Sendable (UInt16, UnsafeRawBufferPointer) -> BusEffect) throws(VMMError) {
            try buses.pio.register(ClosureDevice(read: { read(base + UInt16($0), $1) }, write: { write(base + UInt16($0), $1) }),
                                   name: name, at: UInt64(base), size: UInt64(count))
        }
        @Sendable func pci(_ port: UInt16, _ isOut: Bool, _ data: UnsafeMutableRawBufferPointer) -> BusEffect {
            lock.withLock { self.pci.access(port: port, isOut: isOut, data: data) }
            return .handled
        }
        try ports("PCI address", EmptyPCIBus.addressPort, 1, read: { pci($0, false, $1) },
                  write: { pci($0, true, UnsafeMutableRawBufferPointer(mutating: $1)) })  // read only when written
        let dataPorts = EmptyPCIBus.dataPorts
        try ports("PCI data", dataPorts.lowerBound, dataPorts.upperBound - dataPorts.lowerBound + 1, read: { pci($0, false, $1) },
                  write: { pci($0, true, UnsafeMutableRawBufferPointer(mutating: $1)) })
        // The sleep control and status registers: no wake status; S5 written to the control
        // byte powers off (a wider write's first byte is the one at 0x600).
        try ports("ACPI sleep registers", ACPITables.sleepControlPort, 2, read: { _, data in
            data.fill(0)
            return .handled
        }, write: { port, data in
            port == ACPITables.sleepControlPort && data.first.map(ACPITables.isPowerOff) == true ? .endMachine(.powerOff) : .handled
        })
        try ports("COM1 (8250)", UART8250.ports.lowerBound, UInt16(UART8250.ports.count), read: { [self] port, data in
            lock.withLock { for i in 0..<data.count { data[i] = uart?.read(port: port) ?? 0xff } }
            return .handled
        }, write: { [self] port, data in
            lock.withLock { for b in data { uart?.write(port: port, b) } }
            return .handled
        })
        for port in [I8042.dataPort, I8042.commandPort] {
            try ports(port == I8042.dataPort ? "i8042 data" : "i8042 command", port, 1, read: { [self] port, data in
                lock.withLock { for i in 0..<data.count { data[i] = i8042.read(port: port) } }
                return .handled
            }, write: { [self] port, data in
                lock.withLock { () -> BusEffect in
                    for b in data { i8042.write(port: port, b) }
                    return i8042.resetRequested ? .endMachine(.reset) : .handled
                }
            })
        }
        if let virtio {
            try virtio.attach(&buses, memory: memory.deviceAccess, release: { gpa, size throws(DeviceMemoryError) in
                try memory.returnToHost(gpa, size: size)
            }, vm: memory.vm)
        }
    }

    /// Nothing is mapped outside RAM (the LAPIC and IOAPIC are in the kernel): reads see an
    /// empty bus, writes are dropped.
    func unclaimedMMIO(gpa: GuestPhysAddr, isWrite: Bool, size: Int, pc: UInt64) -> ExitReason? { nil }

    /// The in-kernel LAPIC handles `hlt`; a stray exit resumes.
    func halted(_ vcpu: VCPU) -> VCPUOutcome? { nil }

    /// A kick (the halt probe's or the resampler's): the end of the run if every vCPU has
    /// halted for good (`HaltWatch`). A vCPU halted (KVM_MP_STATE_HALTED = 3) while the
    /// UART's interrupt has been pending for a whole period is made runnable, so that KVM
    /// looks at the pending interrupt again on entry.
    func kicked(_ vcpu: VCPU, vm: VirtualMachine) -> ExitReason? {
        if let end = haltWatch.kicked(vcpu) { return end }
        lock.withLock {
            guard uart?.asserted == true else { return }
            if console.result.interruptWaits.count < Self.interruptWaitsKept {
                let at = StatsFormat.fixed(Double(nowNanos() - t0) / 1e9, 3)
                console.result.interruptWaits.append("\(at) s: \(vcpu.interruptState(line: LinuxLayout.serialIRQ, vm: vm))")
            }
            if (try? vcpu.multiprocessingState()) == 3 {
                try? vcpu.setMultiprocessingState(0)
                console.result.haltedWakeups += 1
            }
        }
        return nil
    }

    /// The interrupt state starts with the mp state: halted (in hlt) or runnable.
    func timeoutState(_ vcpu: VCPU, vm: VirtualMachine, exits: Int) -> String? {
        let uartState = lock.withLock { uart?.state ?? "not set up" }
        return "UART \(uartState); \(vcpu.interruptState(line: LinuxLayout.serialIRQ, vm: vm)); \(exits) exits"
    }

    func finish(_ report: inout RunReport, memory: GuestMemory<P.Format>, ram: [RAMRegion], outcomes: [VCPUOutcome]) {
        report.serialOutput = lock.withLock { console.text }
        finishEarly(&report)
    }

    func finishEarly(_ report: inout RunReport) {
        report.linux = lock.withLock { console.result }
        report.linux?.balloon = virtio?.balloonBackend?.current
    }

    func watchConsole(_ text: String, _ action: @escaping @Sendable () -> Void) { lock.withLock { console.watch(text, action) } }

    func restored(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        console.populated = { memory.regions.reduce(0) { $0 + memory.populatedBytes($1) } }
    }

    // A snapshot keeps what the guest's devices hold (the UART's registers, the i8042's,
    // the PCI address latch, the virtio devices: `VirtioSet.save`) and the configuration the
    // report names (kernel, initrd, command line, marker). The irqchip, PIT and LAPICs are
    // the VM's and vCPUs' state.
    func pauseDevices() { virtio?.pause() }
    func resumeDevices() { virtio?.resume() }
    func control(_ request: ControlRequest) -> ControlResponse? { virtio?.control(request, ramBytes: config.memorySize) }
    var snapshotKind: String { "linux" }
    func snapshotBytes() -> [UInt8] {
        var w = ByteWriter()
        config.writeSnapshotFields(&w)
        w.string(config.firmware.rawValue)
        lock.withLock {
            w.blob(uart?.registers ?? [])
            w.blob(i8042.state)
            w.u32(pci.address)
        }
        virtio?.save(into: &w)
        return w.bytes
    }

    /// The loader of a restored Linux guest: the saved configuration and device state, with
    /// the restore's own settings (`base`: paging, fault-around, timeout, marker, …) over it.
    static func restoring(platform: P, bytes: [UInt8], path: String, ram: [GuestPhysRange], base: LinuxBootConfig,
                          t0: UInt64) throws(VMMError) -> LinuxLoader {
        var r = ByteReader(bytes, path: path)
        var c = try LinuxBootConfig.readSnapshotFields(&r, base: base)
        let firmware = try r.string("linux firmware")
        guard let f = FirmwareTables(rawValue: firmware) else {
            throw .snapshot(path: path, field: "linux firmware", reason: "\(firmware) is no firmware table kind")
        }
        c.firmware = f
        let uart = try UART8250.readRegisters(&r)
        let i8042 = try r.blob("i8042 state", limit: 64)
        let pciAddress = try r.u32("pci address")
        let virtio = try LinuxBootConfig.readSnapshotVirtio(&r, config: &c, base: X86Layout.virtioBase,
                                                            firstGSI: X86Layout.virtioFirstGSI, path: path)
        let loader = LinuxLoader(platform: platform, config: c, plan: nil, ram: ram, initrd: nil, t0: t0)
        loader.virtio = virtio
        loader.restoredUART = uart
        loader.lock.withLock {
            loader.i8042.restore(i8042)
            loader.pci.address = pciAddress
        }
        return loader
    }
}

#endif
