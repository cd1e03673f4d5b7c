import AxAddrSpace
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// Guest-physical layout of an arm64 Linux guest: devices in the first GiB at QEMU virt's
/// addresses, RAM from 1 GiB (`AArch64Layout.ramBase`).
public enum ArmLinuxLayout {
    /// GIC distributor; a GICv2's CPU interface after it, a GICv3's redistributors (128 KiB
    /// per vCPU, up to `LinuxBootConfig.maxVCPUs`: 8 MiB) from 0x080a_0000.
    public static let gicDistributor: UInt64 = 0x0800_0000
    public static let gicCPUInterface: UInt64 = 0x0801_0000
    public static let gicRedistributors: UInt64 = 0x080a_0000
    /// A GICv3's ITS (MSI translation), 128 KiB below the redistributors, as on QEMU's virt.
    public static let gicITS: UInt64 = 0x0808_0000
    /// The ns16550a UART (registers one byte apart), on SPI 1 (INTID 33), level-triggered.
    public static let uart: UInt64 = 0x0900_0000
    public static let uartSize: UInt64 = 0x1000
    public static let uartSPI: UInt32 = 1
    /// Its input clock (the PC's 1.8432 MHz; the divisor the driver programs is not used).
    public static let uartClock: UInt32 = 1_843_200
    /// The virtio-mmio transports (`VirtioSet`): 0x200 apart, on SPIs 16 and up, edge-triggered.
    public static let virtioBase: UInt64 = 0x0a00_0000
    public static let virtioFirstSPI: UInt32 = 16
    /// The device tree's slot: the last 2 MiB of RAM (booting.rst: at most 2 MiB, 8-byte
    /// aligned, inside a 2 MiB region of its own).
    public static let deviceTreeSlot: UInt64 = 2 << 20
    /// The Image's base is 2 MiB aligned; the kernel starts `text_offset` above it.
    public static let kernelAlignment: UInt64 = 2 << 20
    /// arm64's COMMAND_LINE_SIZE (arch/arm64/include/uapi/asm/setup.h), with the NUL.
    public static let cmdlineLimit = 2048
}

/// Everything an arm64 Linux boot puts in guest memory, worked out from the Image header,
/// the RAM areas, the command line and the initrd size before any memory exists: the
/// kernel at the first 2 MiB boundary of RAM plus `text_offset`, the device tree in the
/// last 2 MiB, the initrd just below it. Pure, so it is tested on any host.
public struct ArmLinuxPlan: Sendable {
    public let kernel: ArmKernelImage
    public let ram: [GuestPhysRange]
    public let cmdline: String
    /// Where the kernel's first byte goes and where the CPU starts (booting.rst: the start
    /// of the Image).
    public let kernelAddress: UInt64
    public let initrdAddress: UInt64
    public let initrdSize: UInt64
    public let deviceTreeAddress: UInt64
    /// Kernel (its image_size footprint), initrd, device tree: each inside RAM, no overlap.
    public let placements: [BootPlacement]

    /// `cmdlineLimit`/`arch`: the kernel's COMMAND_LINE_SIZE and its architecture's name
    /// (riscv64 lays its Image out the same way, with 1024).
    public init(kernel: ArmKernelImage, ram: [GuestPhysRange], cmdline: String,
                initrdPath: String? = nil, initrdSize: UInt64 = 0,
                cmdlineLimit: Int = ArmLinuxLayout.cmdlineLimit, arch: String = "arm64") throws(LinuxBootError) {
        let text = Array(cmdline.utf8)
        guard !text.contains(0) else { throw .cmdline(reason: "contains a NUL byte") }
        guard text.count < cmdlineLimit else {
            throw .cmdline(reason: "\(text.count) bytes, longer than the \(cmdlineLimit - 1) bytes \(arch) Linux accepts (COMMAND_LINE_SIZE)")
        }
        guard let area = ram.first else { throw .memory(reason: "no RAM") }
        let start = area.start.raw, end = area.end.raw
        let base = (start + ArmLinuxLayout.kernelAlignment - 1) & ~(ArmLinuxLayout.kernelAlignment - 1)
        // Hostile header values: the sums are checked (a kernel that does not fit is refused).
        guard let kernelAddress = checkedSum(base, kernel.textOffset),
              let kernelEnd = checkedSum(kernelAddress, kernel.imageSize),
              let needed = checkedSum(kernelEnd, ArmLinuxLayout.deviceTreeSlot), needed <= end else {
            throw .memory(reason: "\((end - start) >> 20) MiB of RAM cannot hold this kernel (text_offset \(hex(kernel.textOffset)), image_size \(hex(kernel.imageSize))) and the 2 MiB device tree slot")
        }
        let dtb = end - ArmLinuxLayout.deviceTreeSlot
        var initrdAddress: UInt64 = 0
        if initrdSize > 0 {
            let floor = (kernelEnd + 0xfff) & ~0xfff  // kernelEnd <= dtb, far below 2^64
            let free = dtb > floor ? dtb - floor : 0
            guard initrdSize <= free else {
                throw .initrd(path: initrdPath ?? "", reason: "\(initrdSize) bytes do not fit in RAM: \(free) bytes free between the kernel's end \(hex(floor)) and the device tree at \(hex(dtb))")
            }
            initrdAddress = (dtb - initrdSize) & ~0xfff
        }
        var places = [BootPlacement("kernel", kernelAddress, end: kernelEnd)]
        if initrdSize > 0 { places.append(BootPlacement("initrd", initrdAddress, end: initrdAddress + initrdSize)) }
        places.append(BootPlacement("device tree", dtb, end: end))
        try BootPlacement.validate(places, ram: ram)
        self.kernel = kernel
        self.ram = ram
        self.cmdline = cmdline
        self.kernelAddress = kernelAddress
        self.initrdAddress = initrdAddress
        self.initrdSize = initrdSize
        deviceTreeAddress = dtb
        placements = places
    }
}

extension ArmLinuxPlan {
    /// Reads and checks the kernel at `c.kernelPath` (inflating an `Image.gz`) and the initrd
    /// (its size), and plans them into `ram` with the command line: every input error before
    /// KVM is opened. riscv64 plans its Image the same way (`flavour`, `cmdlineLimit`, `arch`).
    static func read(_ c: LinuxBootConfig, ram: [GuestPhysRange], flavour: ArmKernelImage.Flavour = .arm64,
                     cmdlineLimit: Int = ArmLinuxLayout.cmdlineLimit, arch: String = "arm64") throws(LinuxBootError) -> (ArmLinuxPlan, LinuxInitrd?) {
        let kernel = try ArmKernelImage(path: c.kernelPath, limit: c.memorySize, raw: c.rawKernel, flavour: flavour)
        let initrd = try c.initrdPath.map { p throws(LinuxBootError) in
            try LinuxInitrd(path: p, limit: c.memorySize) { size in
                "\(size) bytes do not fit in RAM: larger than the \(c.memorySize >> 20) MiB of guest RAM"
            }
        }
        let plan = try ArmLinuxPlan(kernel: kernel, ram: ram, cmdline: c.cmdline, initrdPath: c.initrdPath, initrdSize: initrd?.size ?? 0,
                                    cmdlineLimit: cmdlineLimit, arch: arch)
        return (plan, initrd)
    }

    /// Writes the kernel (and maps it into the guest's window at once, so its first
    /// instructions cost no fault each), the initrd and the device tree where the plan put them.
    func load<F>(into memory: GuestMemory<F>, initrd: LinuxInitrd?, deviceTree: [UInt8]) throws(VMMError) {
        var written: Result<Void, VMMError> = .success(())
        kernel.bytes.withUnsafeBytes { b in
            written = Result { () throws(VMMError) in try memory.write(b, at: GuestPhysAddr(kernelAddress)) }
        }
        try written.get()
        try memory.mapForGuest(GuestPhysAddr(kernelAddress), size: UInt64(kernel.bytes.count))
        try initrd?.load(into: memory, at: initrdAddress)
        try memory.write(deviceTree, at: GuestPhysAddr(deviceTreeAddress))
    }
}

/// The device tree an arm64 Linux guest boots with (Devicetree Specification v0.4; the
/// nodes Firecracker and kvmtool write): RAM, CPUs started through PSCI, the GIC, the
/// architected timer, the UART and `chosen`.
enum ArmDeviceTree {
    static let gicPhandle: UInt32 = 1

    /// `mpidrs`: each vCPU's MPIDR_EL1 (its `reg`); `virtio`: the virtio-mmio transports, as
    /// `virtio,mmio` nodes (their `gsi` an SPI number, edge-triggered, DMA-coherent).
    static func build(plan: ArmLinuxPlan, gic: ArmGIC.Layout, mpidrs: [UInt64], virtio: [VirtioSlot] = [], pmu: Bool = false) throws(LinuxBootError) -> [UInt8] {
        var w = DeviceTreeWriter()
        func cells(_ pairs: [(UInt64, UInt64)]) -> DeviceTreeValue { .u64s(pairs.flatMap { [$0.0, $0.1] }) }
        w.beginNode("")
        w.property("compatible", .string("linux,dummy-virt"))
        w.property("model", .string("axvm"))
        w.property("#address-cells", .u32s([2]))
        w.property("#size-cells", .u32s([2]))
        w.property("interrupt-parent", .u32s([gicPhandle]))

        w.beginNode("chosen")
        w.property("bootargs", .string(plan.cmdline))
        w.property("stdout-path", .string("/uart@\(hexDigits(ArmLinuxLayout.uart))"))
        if plan.initrdSize > 0 {
            w.property("linux,initrd-start", .u64s([plan.initrdAddress]))
            w.property("linux,initrd-end", .u64s([plan.initrdAddress + plan.initrdSize]))
        }
        w.endNode()

        for r in plan.ram {
            w.beginNode("memory@\(hexDigits(r.start.raw))")
            w.property("device_type", .string("memory"))
            w.property("reg", cells([(r.start.raw, r.end.raw - r.start.raw)]))
            w.endNode()
        }

        w.beginNode("cpus")
        w.property("#address-cells", .u32s([1]))
        w.property("#size-cells", .u32s([0]))
        for mpidr in mpidrs {
            // Aff2..Aff0, the affinity fields below bit 24 (Aff3 is 0 for KVM's vCPU ids here).
            let reg = UInt32(mpidr & 0xff_ffff)
            w.beginNode("cpu@\(String(reg, radix: 16))")
            w.property("device_type", .string("cpu"))
            w.property("compatible", .string("arm,arm-v8"))
            w.property("enable-method", .string("psci"))
            w.property("reg", .u32s([reg]))
            w.endNode()
        }
        w.endNode()

        w.beginNode("psci")
        w.property("compatible", .strings(["arm,psci-1.0", "arm,psci-0.2"]))
        w.property("method", .string("hvc"))
        w.endNode()

        w.beginNode("intc@\(hexDigits(ArmLinuxLayout.gicDistributor))")
        w.property("compatible", .string(gic.compatible))
        w.property("#interrupt-cells", .u32s([3]))
        w.property("interrupt-controller", .empty)
        // Cells for children (a GICv3 ITS would be one; none here): dtc wants them stated.
        w.property("#address-cells", .u32s([2]))
        w.property("#size-cells", .u32s([2]))
        w.property("ranges", .empty)
        w.property("reg", cells(gic.registers))
        w.property("phandle", .u32s([gicPhandle]))
        if gic.its {
            w.beginNode("its@\(hexDigits(ArmLinuxLayout.gicITS))")
            w.property("compatible", .string("arm,gic-v3-its"))
            w.property("msi-controller", .empty)
            w.property("#msi-cells", .u32s([1]))
            w.property("reg", cells([(ArmLinuxLayout.gicITS, ArmGIC.itsSize)]))
            w.endNode()
        }
        w.endNode()

        // The timer's PPIs (secure, non-secure, virtual, hypervisor: 13, 14, 11, 10), level
        // high; a GICv2's cells also name the CPUs that receive them (bits 8-15).
        let ppi: UInt32 = 1, spi: UInt32 = 0, levelHigh: UInt32 = 4, edgeRising: UInt32 = 1
        let cpuMask: UInt32 = gic.version == .v2 ? ((1 << UInt32(min(mpidrs.count, 8))) - 1) << 8 : 0
        w.beginNode("timer")
        w.property("compatible", .string("arm,armv8-timer"))
        w.property("always-on", .empty)
        w.property("interrupts", .u32s([13, 14, 11, 10].flatMap { [ppi, $0, cpuMask | levelHigh] }))
        w.endNode()

        if pmu {
            w.beginNode("pmu")
            w.property("compatible", .string("arm,armv8-pmuv3"))
            w.property("interrupts", .u32s([ppi, ArmPMU.ppi, cpuMask | levelHigh]))
            w.endNode()
        }

        w.beginNode("uart@\(hexDigits(ArmLinuxLayout.uart))")
        w.property("compatible", .string("ns16550a"))
        w.property("reg", cells([(ArmLinuxLayout.uart, ArmLinuxLayout.uartSize)]))
        w.property("interrupts", .u32s([spi, ArmLinuxLayout.uartSPI, levelHigh]))
        w.property("clock-frequency", .u32s([ArmLinuxLayout.uartClock]))
        w.endNode()

        for slot in virtio {
            w.beginNode("virtio_mmio@\(hexDigits(slot.base))")
            w.property("compatible", .string("virtio,mmio"))
            w.property("reg", cells([(slot.base, UInt64(slot.size))]))
            w.property("interrupts", .u32s([spi, slot.gsi, edgeRising]))
            w.property("dma-coherent", .empty)
            w.endNode()
        }

        w.endNode()
        let blob: [UInt8]
        do { blob = try w.finish() } catch { throw .deviceTree(reason: "\(error)") }
        guard UInt64(blob.count) <= ArmLinuxLayout.deviceTreeSlot else {
            throw .deviceTree(reason: "\(blob.count) bytes, more than the 2 MiB a device tree may have (booting.rst)")
        }
        return blob
    }

    private static func hexDigits(_ v: UInt64) -> String { String(v, radix: 16) }
}

extension AArch64Platform {
    /// An arm64 `Image` (or `Image.gz`) with a device tree axvm writes (`ArmLinuxLoader`).
    func bootLinux(_ c: LinuxBootConfig, t0: UInt64) throws(LinuxBootError) -> RunReport {
        let (plan, initrd) = try ArmLinuxLoader<Self>.plan(c)
        let virtio: VirtioSet?
        do {
            virtio = c.virtioDevices > 0
                ? try VirtioSet(disks: c.disks, rng: c.rng, balloon: c.balloonTargetPages, base: ArmLinuxLayout.virtioBase,
                                firstGSI: ArmLinuxLayout.virtioFirstSPI) : nil
        } catch { throw .vmm(error) }
        let loader = ArmLinuxLoader(platform: self, config: c, plan: plan, initrd: initrd, t0: t0)
        loader.virtio = virtio
        do {
            return try Runner(loader: loader).run()
        } catch {
            throw .vmm(error)
        }
    }
}

/// An arm64 Linux guest's loader and its machine: the Image, initrd and device tree written
/// where the plan put them, vCPU 0 entered at the Image with x0 = the device tree (MMU off,
/// EL1h, DAIF masked; booting.rst), the others powered off until PSCI CPU_ON (in KVM); the
/// vGIC in the kernel; an ns16550a UART on MMIO whose level-triggered SPI follows the chip's
/// interrupt output. PSCI SYSTEM_OFF and SYSTEM_RESET end the run (`Runner.systemEvent`).
final class ArmLinuxLoader<P: Platform>: GuestLoader, @unchecked Sendable {  // device state behind `lock`
    let platform: P
    let config: LinuxBootConfig
    /// nil for a restore (memory and registers come from the snapshot).
    let plan: ArmLinuxPlan?
    let ram: [GuestPhysRange]
    let initrd: LinuxInitrd?
    let settings: RunSettings
    private let lock = Lock()
    private let console: LinuxConsole
    private var uart: UART8250?
    private var uartLevel = false
    private var gic: ArmGIC?
    /// A restore's device state, put back in `start`: after the vCPUs' registers, with the
    /// pager running (the ITS reads its tables from guest memory), before any vCPU runs.
    private var restoredGIC: ArmGICState?
    private var restoredUART: [UInt8]?
    /// The virtio devices, at `ArmLinuxLayout.virtioBase` (set before the run; attached with the VM).
    var virtio: VirtioSet?
    private var virtioSlots: [VirtioSlot] { virtio?.slots ?? [] }

    /// Reads and checks the kernel (inflating an `Image.gz`), and checks the initrd (its size)
    /// and command line against the layout: every input error before KVM is opened.
    static func plan(_ c: LinuxBootConfig) throws(LinuxBootError) -> (ArmLinuxPlan, LinuxInitrd?) {
        try ArmLinuxPlan.read(c, ram: AArch64Layout.ramRanges(size: c.memorySize))
    }

    init(platform: P, config: LinuxBootConfig, plan: ArmLinuxPlan?, ram: [GuestPhysRange], initrd: LinuxInitrd?, t0: UInt64) {
        self.platform = platform
        self.config = config
        self.plan = plan
        self.ram = ram
        self.initrd = initrd
        settings = config.settings
        console = LinuxConsole(config: config, placements: plan?.placements ?? [], initrdAddress: plan?.initrdAddress ?? 0,
                               initrdSize: plan?.initrdSize ?? 0, t0: t0)
    }

    convenience init(platform: P, config: LinuxBootConfig, plan: ArmLinuxPlan, initrd: LinuxInitrd?, t0: UInt64) {
        self.init(platform: platform, config: config, plan: plan as ArmLinuxPlan?, ram: plan.ram, initrd: initrd, t0: t0)
    }

    var interrupts: InterruptModel { .inKernel }
    var testRegionBase: GuestPhysAddr { GuestPhysAddr(0) }

    func load(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        guard let plan else { throw .host("arm64 Linux loader without a boot plan (a restore) asked to load") }
        console.populated = { memory.regions.reduce(0) { $0 + memory.populatedBytes($1) } }
        let (gic, pmu) = try makeInterruptController(vm: vm, vcpus: vcpus)
        let blob: [UInt8]
        do { blob = try ArmDeviceTree.build(plan: plan, gic: gic.layout, mpidrs: gic.mpidrs, virtio: virtioSlots, pmu: pmu) } catch {
            throw .host("\(error)")
        }
        try plan.load(into: memory, initrd: initrd, deviceTree: blob)
        guard let boot = vcpus.first else { return }
        do {
            for (id, value) in Self.entryRegisters(kernel: plan.kernelAddress, deviceTree: plan.deviceTreeAddress) {
                try boot.setRegister(id, value)
            }
        } catch {
            throw .kvm(error)
        }
    }

    /// The vGIC (after the vCPUs, as KVM wants it) and the vCPUs' PMU (after the vGIC);
    /// whether they have a PMU.
    private func makeInterruptController(vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) -> (ArmGIC, Bool) {
        do {
            let gic = try ArmGIC.create(vm: vm, vcpus: vcpus)
            let pmu = try ArmPMU.setUp(vcpus)
            self.gic = gic
            return (gic, pmu)
        } catch {
            throw .kvm(error)
        }
    }

    /// booting.rst: x0 = the device tree's address, x1-x3 = 0, PC at the Image, PSTATE EL1h
    /// with D, A, I, F masked; the MMU and caches are off after KVM_ARM_VCPU_INIT.
    static func entryRegisters(kernel: UInt64, deviceTree: UInt64) -> [(UInt64, UInt64)] {
        [(AArch64Register.x(0), deviceTree), (AArch64Register.x(1), 0), (AArch64Register.x(2), 0),
         (AArch64Register.x(3), 0), (AArch64Register.pstate, AArch64SystemRegisters.pstate),
         (AArch64Register.pc, kernel)]
    }

    func start(vm: VirtualMachine, kick: @escaping @Sendable () -> Void) throws(VMMError) {
        let line = ArmIRQ.spi(ArmLinuxLayout.uartSPI)
        // The UART's output drives the SPI's level: KVM_IRQ_LINE on each change (under `lock`).
        uart = UART8250(sink: { self.console.out($0) }, interrupt: {}, level: { high in
            guard high != self.uartLevel else { return }
            self.uartLevel = high
            try? vm.setIRQLine(line, high: high)
        })
        if let saved = restoredGIC, let gic {
            try saved.restore(gic, path: snapshotPath)
        }
        // The UART's interrupt output after the vGIC's line levels: the UART decides its line.
        if let r = restoredUART { lock.withLock { uart?.restore(r) } }
        try virtio?.start()
    }

    func stop() {
        virtio?.stop()
        lock.withLock { uart = nil }
    }

    /// The ns16550a UART on MMIO: registers 0-7, one byte each; the rest of its page is empty.
    func attach(_ buses: inout DeviceBuses, memory: GuestMemory<P.Format>, ram: [RAMRegion]) throws(VMMError) {
        let uartDevice = UART8250.mmioDevice(lock: lock) { [self] in uart }
        try buses.mmio.register(uartDevice, name: "UART (ns16550a)", at: ArmLinuxLayout.uart, size: ArmLinuxLayout.uartSize)
        if let virtio {
            try virtio.attach(&buses, memory: memory.deviceAccess, release: { gpa, size throws(DeviceMemoryError) in
                try memory.returnToHost(gpa, size: size)
            }, vm: memory.vm)
        }
    }

    /// Nothing else is mapped outside RAM (the GIC is in the kernel): reads see an empty
    /// bus, writes are dropped.
    func unclaimedMMIO(gpa: GuestPhysAddr, isWrite: Bool, size: Int, pc: UInt64) -> ExitReason? { nil }

    /// `wfi` waits in KVM with the vGIC; a stray exit resumes.
    func halted(_ vcpu: VCPU) -> VCPUOutcome? { nil }

    func kicked(_ vcpu: VCPU, vm: VirtualMachine) -> ExitReason? { nil }

    func timeoutState(_ vcpu: VCPU, vm: VirtualMachine, exits: Int) -> String? {
        let uartState = lock.withLock { uart.map { "\($0.state), SPI \(uartLevel ? "high" : "low")" } ?? "not set up" }
        return "UART \(uartState); \(gic.map { "GIC\($0.layout.version)" } ?? "no GIC"); \(exits) exits"
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

    // A snapshot keeps the configuration the report names, the UART's registers, the vGIC's
    // state (`ArmGICState`: distributor, redistributors, CPU interfaces, ITS) and the virtio
    // devices'. The vCPUs' registers, timers and PSCI states are their own (`OneRegState`).
    func pauseDevices() { virtio?.pause() }
    func resumeDevices() { virtio?.resume() }
    func control(_ request: ControlRequest) -> ControlResponse? { virtio?.control(request, ramBytes: config.memorySize) }
    var snapshotKind: String { "linux" }
    func snapshotBytes() throws(VMMError) -> [UInt8] {
        guard let gic else { throw .host("snapshot: the arm64 Linux guest has no vGIC yet") }
        let gicState = try ArmGICState.save(gic)
        var w = ByteWriter()
        config.writeSnapshotFields(&w)
        w.blob(lock.withLock { uart?.registers ?? [] })
        w.blob(gicState.encoded())
        virtio?.save(into: &w)
        return w.bytes
    }

    /// The state file a restore read (for errors met when its device state is put back).
    private var snapshotPath = ""

    /// The loader of a restored arm64 Linux guest: the saved configuration and device state,
    /// with the restore's own settings (`base`) over it. The vGIC is made again in
    /// `restored`, its state put back in `start`.
    static func restoring(platform: P, bytes: [UInt8], path: String, ram: [GuestPhysRange], base: LinuxBootConfig,
                          t0: UInt64) throws(VMMError) -> ArmLinuxLoader {
        var r = ByteReader(bytes, path: path)
        var c = try LinuxBootConfig.readSnapshotFields(&r, base: base)
        let uart = try UART8250.readRegisters(&r)
        let gic = try ArmGICState(decoding: try r.blob("vGIC state", limit: ArmGICState.maxEntries * ArmGICState.entryBytes + 12), path: path)
        let virtio = try LinuxBootConfig.readSnapshotVirtio(&r, config: &c, base: ArmLinuxLayout.virtioBase,
                                                            firstGSI: ArmLinuxLayout.virtioFirstSPI, path: path)
        let loader = ArmLinuxLoader(platform: platform, config: c, plan: nil, ram: ram, initrd: nil, t0: t0)
        loader.virtio = virtio
        loader.restoredUART = uart
        loader.restoredGIC = gic
        loader.snapshotPath = path
        return loader
    }

    func restored(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        console.populated = { memory.regions.reduce(0) { $0 + memory.populatedBytes($1) } }
        _ = try makeInterruptController(vm: vm, vcpus: vcpus)
    }
}

extension ArmKernelImage {
    /// Largest kernel file accepted (as for a bzImage).
    static let maxFileSize = 256 << 20

    /// Reads and parses the kernel at `path`; an `Image.gz` is inflated up to `limit` bytes
    /// (the guest's RAM: a larger Image could not be loaded anyway). `raw`: a raw binary.
    init(path: String, limit: UInt64, raw: Bool = false, flavour: Flavour = .arm64) throws(LinuxBootError) {
        let bytes: [UInt8]
        do {
            bytes = try readRegularFile(path, limit: Self.maxFileSize) { "\($0) bytes, more than the \(Self.maxFileSize >> 20) MiB limit" }
        } catch { throw .kernel(path: path, reason: error.reason) }
        do {
            if raw { try self.init(raw: bytes) } else { try self.init(bytes: bytes, inflateLimit: Int(min(limit, UInt64(Int.max))), flavour: flavour) }
        } catch {
            throw .kernel(path: path, reason: error.reason)
        }
    }
}
