// x86 only: a multiboot v1 kernel (kvm-unit-tests' x86 tests) on a small PC.
#if arch(x86_64)
import AxAddrSpace
import CKVM
import KVM

extension X86Platform {
    /// `axvm boot` with a multiboot kernel: placed and checked before KVM is opened, then run
    /// through `Runner` with `MultibootLoader`.
    func bootMultiboot(_ c: LinuxBootConfig, kernel: MultibootKernel, t0: UInt64) throws(LinuxBootError) -> RunReport {
        if c.virtioDevices > 0 {
            throw .vmm(.badValue(what: "virtio devices", value: "\(c.virtioDevices)",
                                 reason: "are for Linux guests (described in their ACPI tables): not with a multiboot kernel"))
        }
        if let plan = c.snapshot {
            throw .vmm(.badValue(what: "snapshot", value: plan.directory, reason: "a multiboot kernel's machine cannot be snapshotted"))
        }
        let ram = X86Layout.ramRanges(size: c.memorySize)
        let module = try c.initrdPath.map { p throws(LinuxBootError) in
            try LinuxInitrd(path: p, limit: min(c.memorySize, 1 << 32)) { "\($0) bytes do not fit in the \(c.memorySize >> 20) MiB of guest RAM" }
        }
        let plan = try MultibootPlan(kernel: kernel, ram: ram, cmdline: c.cmdline, modulePath: c.initrdPath, moduleSize: module?.size ?? 0)
        do { _ = try KVMSystem(path: c.kvmPath) } catch { throw .vmm(.kvm(error)) }
        let loader = MultibootLoader(platform: self, config: c, plan: plan, module: module, t0: t0)
        do { return try Runner(loader: loader).run() } catch { throw .vmm(error) }
    }
}

/// A multiboot kernel's loader and machine: its segments, module and information block in
/// RAM from address 0, the bootstrap processor in 32-bit protected mode at the kernel's
/// entry (§3.2: EAX the bootloader magic, EBX the information block, flat 4 GiB segments,
/// paging and interrupts off), the other vCPUs waiting in KVM for the INIT and SIPI the
/// kernel sends them. Devices: KVM's in-kernel PIC, IOAPIC, LAPICs and PIT; COM1's 8250;
/// fw_cfg's legacy ports (`FirmwareConfig`); the isa-debug-exit port (`DebugExit`), whose
/// write ends the run with the guest's code; pc-testdev's interrupt lines and MMIO window
/// (`TestDeviceIRQLines`, `TestDeviceMemory`). Other ports float, MMIO outside RAM reads 0xff.
/// A kernel whose every vCPU halted for good ends the run at once (`HaltWatch`, status 4).
final class MultibootLoader<P: Platform>: GuestLoader, @unchecked Sendable {  // device state behind `lock`
    let platform: P
    let config: LinuxBootConfig
    let plan: MultibootPlan
    let module: LinuxInitrd?
    let settings: RunSettings
    private let lock = Lock()
    private let console: LinuxConsole
    private var uart: UART8250?
    private let haltWatch: HaltWatch

    init(platform: P, config: LinuxBootConfig, plan: MultibootPlan, module: LinuxInitrd?, t0: UInt64) {
        self.platform = platform
        self.config = config
        self.plan = plan
        self.module = module
        settings = config.settings
        haltWatch = HaltWatch(vcpus: config.vcpus)
        console = LinuxConsole(config: config, placements: plan.placements, initrdAddress: plan.moduleAddress,
                               initrdSize: plan.moduleSize, t0: t0)
        console.result.multiboot = true
    }

    var ram: [GuestPhysRange] { plan.ram }
    var interrupts: InterruptModel { .inKernel }
    var testRegionBase: GuestPhysAddr { GuestPhysAddr(0) }

    func load(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        console.populated = { memory.regions.reduce(0) { $0 + memory.populatedBytes($1) } }
        for s in plan.kernel.segments where s.fileSize > 0 {
            var result: Result<Void, VMMError> = .success(())
            plan.kernel.bytes.withUnsafeBytes { b in
                // Sound: MultibootKernel checked fileOffset + fileSize against the file's size.
                let part = UnsafeRawBufferPointer(rebasing: b[s.fileOffset..<s.fileOffset + Int(s.fileSize)])
                result = Result { () throws(VMMError) in try memory.write(part, at: GuestPhysAddr(s.address)) }
            }
            try result.get()
        }
        // BSS (memorySize beyond fileSize) is left to the lazy pages: they read as zeros.
        try module?.load(into: memory, at: plan.moduleAddress)
        try memory.write(plan.info, at: GuestPhysAddr(plan.infoAddress))
        do { try Self.enterProtectedMode(vcpus[0], entry: plan.kernel.entry, info: plan.infoAddress) } catch { throw .kvm(error) }
    }

    /// The multiboot machine state (§3.2): CS a 32-bit flat code segment, the others flat data
    /// segments, CR0 = PE|ET (no paging, caches on), EFLAGS with IF clear.
    static func enterProtectedMode(_ vcpu: VCPU, entry: UInt64, info: UInt64) throws(KVMError) {
        var sregs = try vcpu.specialRegisters()
        var code = kvm_segment()
        code.base = 0; code.limit = 0xffff_ffff; code.selector = 0x08
        code.type = 11; code.present = 1; code.dpl = 0; code.db = 1; code.s = 1; code.l = 0; code.g = 1
        var data = code
        data.selector = 0x10; data.type = 3
        sregs.cs = code
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.cr0 = 1 << 0 | 1 << 4
        sregs.cr4 = 0
        sregs.efer = 0
        try vcpu.setSpecialRegisters(sregs)
        var regs = kvm_regs()
        regs.rflags = 2
        regs.rip = entry
        regs.rax = UInt64(MultibootKernel.bootloaderMagic)
        regs.rbx = info
        try vcpu.setRegisters(regs)
    }

    func start(vm: VirtualMachine, kick: @escaping @Sendable () -> Void) throws(VMMError) {
        lock.withLock {
            uart = UART8250(sink: { self.console.out($0) }, interrupt: { try? vm.pulseIRQ(LinuxLayout.serialIRQ) })
        }
        try haltWatch.start(kick: kick)
    }

    func stop() {
        haltWatch.stop()
        lock.withLock { uart = nil }
    }

    func attach(_ buses: inout DeviceBuses, memory: GuestMemory<P.Format>, ram: [RAMRegion]) throws(VMMError) {
        try buses.pio.register(ClosureDevice(read: { [self] offset, data in
            lock.withLock { for i in 0..<data.count { data[i] = uart?.read(port: UART8250.base + UInt16(offset)) ?? 0xff } }
            return .handled
        }, write: { [self] offset, data in
            lock.withLock { for b in data { uart?.write(port: UART8250.base + UInt16(offset), b) } }
            return .handled
        }), name: "COM1 (8250)", at: UInt64(UART8250.base), size: UInt64(UART8250.ports.count))
        try buses.pio.register(FirmwareConfig(ram: config.memorySize, cpus: config.vcpus), name: "fw_cfg",
                               at: UInt64(FirmwareConfig.selectorPort), size: 2)
        try buses.pio.register(DebugExit(), name: "isa-debug-exit", at: UInt64(DebugExit.port), size: 4)
        let vm = memory.vm
        try buses.pio.register(TestDeviceIRQLines(setLine: { line, high in try? vm.setIRQLine(line, high: high) }),
                               name: "pc-testdev interrupt lines", at: UInt64(TestDeviceIRQLines.base), size: UInt64(TestDeviceIRQLines.count))
        try buses.mmio.register(TestDeviceMemory(), name: "pc-testdev memory", at: TestDeviceMemory.base, size: UInt64(TestDeviceMemory.size))
    }

    func unclaimedMMIO(gpa: GuestPhysAddr, isWrite: Bool, size: Int, pc: UInt64) -> ExitReason? { nil }
    func halted(_ vcpu: VCPU) -> VCPUOutcome? { nil }
    func kicked(_ vcpu: VCPU, vm: VirtualMachine) -> ExitReason? { haltWatch.kicked(vcpu) }
    func timeoutState(_ vcpu: VCPU, vm: VirtualMachine, exits: Int) -> String? { "\(exits) exits" }

    func finish(_ report: inout RunReport, memory: GuestMemory<P.Format>, ram: [RAMRegion], outcomes: [VCPUOutcome]) {
        report.serialOutput = lock.withLock { console.text }
        finishEarly(&report)
    }

    func finishEarly(_ report: inout RunReport) { report.linux = lock.withLock { console.result } }
    func watchConsole(_ text: String, _ action: @escaping @Sendable () -> Void) { lock.withLock { console.watch(text, action) } }

    // Refused before the run (`bootMultiboot`): nothing is ever asked of these.
    var snapshotKind: String { "multiboot" }
    func snapshotBytes() -> [UInt8] { [] }
}
#endif
