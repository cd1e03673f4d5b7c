import AxAddrSpace
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// Guest-physical layout of a riscv64 Linux guest: devices below 2 GiB at QEMU virt's
/// addresses, RAM from 2 GiB (`RiscV64Layout.ramBase`).
public enum RiscVLinuxLayout {
    /// The ns16550a UART (registers one byte apart), as on QEMU's virt.
    public static let uart: UInt64 = 0x1000_0000
    public static let uartSize: UInt64 = 0x100
    /// Its input clock (the divisor the driver programs is not used).
    public static let uartClock: UInt32 = 3_686_400
    /// The PLIC (`RiscVPLIC`), where QEMU's virt has it, with 31 sources; the UART is
    /// source 10 (virt's UART0_IRQ).
    public static let plic: UInt64 = 0x0c00_0000
    public static let plicSources = 31
    public static let uartSource = 10
    /// riscv's COMMAND_LINE_SIZE (arch/riscv/include/uapi/asm/setup.h), with the NUL.
    public static let cmdlineLimit = 1024
    /// KVM_MP_STATE_STOPPED: a hart waiting for SBI HSM hart_start (served by KVM).
    static let mpStateStopped: UInt32 = 5
}

extension ArmKernelImage.Flavour {
    /// riscv64: "RSC\x05" at 0x38 (Documentation/arch/riscv/boot-image-header.rst, magic2).
    public static let riscv64 = ArmKernelImage.Flavour(magic: 0x0543_5352, name: "riscv", magicText: "RSC\\x05")
}

extension RiscV64Register {
    /// struct kvm_riscv_timer's frequency (type 4, u64 fields): the guest's `time` rate.
    public static let timerFrequency = id(type: 4, index: 0)
    /// struct kvm_riscv_config's satp_mode (Linux 6.3): the widest stage 1 mode the
    /// guest has, as satp.MODE (8 Sv39, 9 Sv48, 10 Sv57).
    public static let satpMode = id(type: 1, index: 6)
    /// An ISA extension's on/off register (type 7, enum kvm_riscv_isa_ext_id): Sstc is 8.
    public static func isaExtension(_ id: UInt64) -> UInt64 { Self.id(type: 7, index: id) }
    public static let sstc = isaExtension(8)
}

/// What the device tree says about the harts: ISA, stage 1 MMU and the time base.
public struct RiscVHarts: Sendable, Equatable {
    public var count: Int
    /// "rv64imafdc…", from config.isa.
    public var isa: String
    /// "riscv,sv39", "riscv,sv48" or "riscv,sv57".
    public var mmuType: String
    public var timebaseFrequency: UInt64

    /// Read from hart 0 (KVM gives every hart the same).
    static func read(_ vcpus: [VCPU]) throws(KVMError) -> RiscVHarts {
        guard let hart = vcpus.first else { return RiscVHarts(count: 0, isa: "rv64", mmuType: "riscv,sv39", timebaseFrequency: 10_000_000) }
        let isa = try hart.register(RiscV64Register.isa)
        let frequency = try hart.register(RiscV64Register.timerFrequency)
        // Kernels before 6.3 have no satp_mode register: Sv39 is the mode every hart has.
        let satp = (try? hart.register(RiscV64Register.satpMode)) ?? 8
        // Sstc (the supervisor's own timer compare register, which KVM gives the guest when
        // the host has it): the guest programs its timer without an SBI call each time.
        let sstc = (try? hart.register(RiscV64Register.sstc)) == 1
        return RiscVHarts(count: vcpus.count, isa: isaString(isa) + (sstc ? "_sstc" : ""), mmuType: mmuType(satpMode: satp),
                          timebaseFrequency: frequency)
    }

    /// "rv64" and the single-letter extensions of the bitmap (bit 0 = 'a') in the ISA
    /// manual's canonical order (Linux refuses a hart whose string does not start "rv64ima"),
    /// without 'h' (the guest runs in VS-mode: no hypervisor of its own).
    public static func isaString(_ bits: UInt64) -> String {
        let canonical = Array("imafdqlcbkjtpvn".utf8)
        let rest = (UInt8(ascii: "a")...UInt8(ascii: "z")).filter { !canonical.contains($0) && $0 != UInt8(ascii: "h") }
        let letters = (canonical + rest).filter { bits >> UInt64($0 - UInt8(ascii: "a")) & 1 == 1 }
        return "rv64" + String(decoding: letters, as: UTF8.self)
    }

    public static func mmuType(satpMode: UInt64) -> String {
        switch satpMode {
        case 10: "riscv,sv57"
        case 9: "riscv,sv48"
        default: "riscv,sv39"
        }
    }
}

/// The device tree a riscv64 Linux guest boots with (Devicetree Specification v0.4;
/// Documentation/devicetree/bindings/riscv/cpus.yaml; the nodes kvmtool writes): RAM, the
/// harts with their local interrupt controllers, the time base, the UART and `chosen`.
/// The PLIC has one context per hart (its supervisor external interrupt, cause 9).
enum RiscVDeviceTree {
    static func plicPhandle(harts: Int) -> UInt32 { UInt32(harts) + 1 }

    static func build(plan: ArmLinuxPlan, harts: RiscVHarts) throws(LinuxBootError) -> [UInt8] {
        var w = DeviceTreeWriter()
        func cells(_ pairs: [(UInt64, UInt64)]) -> DeviceTreeValue { .u64s(pairs.flatMap { [$0.0, $0.1] }) }
        func hexDigits(_ v: UInt64) -> String { String(v, radix: 16) }
        w.beginNode("")
        w.property("compatible", .string("linux,dummy-virt"))
        w.property("model", .string("axvm"))
        w.property("#address-cells", .u32s([2]))
        w.property("#size-cells", .u32s([2]))

        w.beginNode("chosen")
        w.property("bootargs", .string(plan.cmdline))
        w.property("stdout-path", .string("/soc/serial@\(hexDigits(RiscVLinuxLayout.uart))"))
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
        w.property("timebase-frequency", .u32s([UInt32(truncatingIfNeeded: harts.timebaseFrequency)]))
        for hart in 0..<harts.count {
            w.beginNode("cpu@\(String(hart, radix: 16))")
            w.property("device_type", .string("cpu"))
            w.property("compatible", .string("riscv"))
            w.property("reg", .u32s([UInt32(hart)]))
            w.property("status", .string("okay"))
            w.property("riscv,isa", .string(harts.isa))
            w.property("mmu-type", .string(harts.mmuType))
            w.beginNode("interrupt-controller")
            w.property("compatible", .string("riscv,cpu-intc"))
            w.property("#interrupt-cells", .u32s([1]))
            w.property("#address-cells", .u32s([0]))
            w.property("interrupt-controller", .empty)
            w.property("phandle", .u32s([UInt32(hart) + 1]))
            w.endNode()
            w.endNode()
        }
        w.endNode()

        w.beginNode("soc")
        w.property("compatible", .string("simple-bus"))
        w.property("#address-cells", .u32s([2]))
        w.property("#size-cells", .u32s([2]))
        w.property("ranges", .empty)
        let plic = plicPhandle(harts: harts.count)
        w.beginNode("interrupt-controller@\(hexDigits(RiscVLinuxLayout.plic))")
        w.property("compatible", .strings(["sifive,plic-1.0.0", "riscv,plic0"]))
        w.property("reg", cells([(RiscVLinuxLayout.plic, RiscVPLIC.size)]))
        w.property("interrupts-extended", .u32s((0..<harts.count).flatMap { [UInt32($0) + 1, 9] }))
        w.property("interrupt-controller", .empty)
        w.property("#interrupt-cells", .u32s([1]))
        w.property("#address-cells", .u32s([0]))
        w.property("riscv,ndev", .u32s([UInt32(RiscVLinuxLayout.plicSources)]))
        w.property("phandle", .u32s([plic]))
        w.endNode()
        w.beginNode("serial@\(hexDigits(RiscVLinuxLayout.uart))")
        w.property("compatible", .string("ns16550a"))
        w.property("reg", cells([(RiscVLinuxLayout.uart, RiscVLinuxLayout.uartSize)]))
        w.property("clock-frequency", .u32s([RiscVLinuxLayout.uartClock]))
        w.property("interrupt-parent", .u32s([plic]))
        w.property("interrupts", .u32s([UInt32(RiscVLinuxLayout.uartSource)]))
        w.endNode()
        w.endNode()

        w.endNode()
        let blob: [UInt8]
        do { blob = try w.finish() } catch { throw .deviceTree(reason: "\(error)") }
        guard UInt64(blob.count) <= ArmLinuxLayout.deviceTreeSlot else {
            throw .deviceTree(reason: "\(blob.count) bytes, more than the 2 MiB slot at the top of RAM")
        }
        return blob
    }
}

extension RiscV64Platform {
    /// A riscv64 `Image` (or `Image.gz`) with a device tree axvm writes (`RiscVLinuxLoader`).
    func bootLinux(_ c: LinuxBootConfig, t0: UInt64) throws(LinuxBootError) -> RunReport {
        let (plan, initrd) = try RiscVLinuxLoader<Self>.plan(c)
        let loader = RiscVLinuxLoader(platform: self, config: c, plan: plan, initrd: initrd, t0: t0)
        do {
            return try Runner(loader: loader).run()
        } catch {
            throw .vmm(error)
        }
    }
}

/// A riscv64 Linux guest's loader and its machine: the Image, initrd and device tree written
/// where the plan put them (the plan of an arm64 Image: the same header and layout rules),
/// hart 0 entered at the Image with a0 = its hart id and a1 = the device tree (S-mode,
/// satp 0; Documentation/arch/riscv/boot.rst), the others stopped until SBI HSM starts them
/// (in KVM); the SBI console calls KVM hands over, a PLIC emulated here (`RiscVPLIC`) driving
/// the harts' external interrupt lines, and an ns16550a UART on MMIO whose interrupt output
/// is one of its sources. SBI system reset (in KVM) ends the run (`Runner.systemEvent`).
final class RiscVLinuxLoader<P: Platform>: GuestLoader, @unchecked Sendable {  // device state behind `lock`
    let platform: P
    let config: LinuxBootConfig
    let plan: ArmLinuxPlan
    let initrd: LinuxInitrd?
    let settings: RunSettings
    private let lock = Lock()
    private let console: LinuxConsole
    private var uart: UART8250?
    private var plic: RiscVPLIC?
    /// The SBI console calls (under `lock`); its memory is set at `load`.
    private var sbiConsole = RiscVSBIConsole()

    /// Reads and checks the kernel (inflating an `Image.gz`), the initrd (its size), the
    /// command line and the devices asked for: every input error before KVM is opened.
    static func plan(_ c: LinuxBootConfig) throws(LinuxBootError) -> (ArmLinuxPlan, LinuxInitrd?) {
        if c.virtioDevices > 0 {
            throw .vmm(.badValue(what: "virtio devices", value: "\(c.virtioDevices)", reason: "are not built for riscv64 guests yet (they need the platform interrupt controller)"))
        }
        return try ArmLinuxPlan.read(c, ram: RiscV64Layout.ramRanges(size: c.memorySize), flavour: .riscv64,
                                     cmdlineLimit: RiscVLinuxLayout.cmdlineLimit, arch: "riscv64")
    }

    init(platform: P, config: LinuxBootConfig, plan: ArmLinuxPlan, initrd: LinuxInitrd?, t0: UInt64) {
        self.platform = platform
        self.config = config
        self.plan = plan
        self.initrd = initrd
        settings = config.settings
        console = LinuxConsole(config: config, placements: plan.placements, initrdAddress: plan.initrdAddress,
                               initrdSize: plan.initrdSize, t0: t0)
    }

    var ram: [GuestPhysRange] { plan.ram }
    /// A Linux guest: the harts but the first start stopped (`RiscV64Platform.createVM`).
    var interrupts: InterruptModel { .inKernel }
    var testRegionBase: GuestPhysAddr { GuestPhysAddr(0) }

    func load(memory: GuestMemory<P.Format>, vm: VirtualMachine, vcpus: [VCPU]) throws(VMMError) {
        console.populated = { memory.regions.reduce(0) { $0 + memory.populatedBytes($1) } }
        let harts: RiscVHarts
        do { harts = try RiscVHarts.read(vcpus) } catch { throw .kvm(error) }
        let blob: [UInt8]
        do { blob = try RiscVDeviceTree.build(plan: plan, harts: harts) } catch { throw .host("\(error)") }
        try plan.load(into: memory, initrd: initrd, deviceTree: blob)
        // Each context's output is its hart's line; KVM_INTERRUPT may come from any thread.
        let lines = vcpus
        plic = RiscVPLIC(sources: RiscVLinuxLayout.plicSources, contexts: vcpus.count) { context, high in
            guard context < lines.count else { return }
            try? lines[context].setExternalInterrupt(high)
        }
        lock.withLock { sbiConsole.memory = memory.deviceAccess }
        // The SBI debug console (DBCN, Linux 6.8) is off until the VMM turns it on; a KVM
        // without it refuses the register, and the guest then has the legacy console.
        for v in vcpus { try? v.setRegister(RiscV64Register.sbiExtension(RiscV64Register.sbiDebugConsole), 1) }
        guard let boot = vcpus.first else { return }
        do {
            for (id, value) in Self.entryRegisters(kernel: plan.kernelAddress, deviceTree: plan.deviceTreeAddress) {
                try boot.setRegister(id, value)
            }
        } catch {
            throw .kvm(error)
        }
    }

    /// boot.rst: a0 = the hart id, a1 = the device tree's address, pc at the Image; S-mode
    /// with satp 0 and interrupts off is KVM's reset state.
    static func entryRegisters(kernel: UInt64, deviceTree: UInt64) -> [(UInt64, UInt64)] {
        [(RiscV64Register.a0, 0), (RiscV64Register.a1, deviceTree), (RiscV64Register.pc, kernel)]
    }

    func start(vm: VirtualMachine, kick: @escaping @Sendable () -> Void) throws(VMMError) {
        // The UART's output is PLIC source 10's level (set under `lock`).
        let plic = self.plic
        uart = UART8250(sink: { self.console.out($0) }, interrupt: {}, level: { high in
            plic?.setLevel(source: RiscVLinuxLayout.uartSource, high: high)
        })
    }

    func stop() { lock.withLock { uart = nil } }

    /// The ns16550a UART on MMIO: registers 0-7, one byte each.
    func attach(_ buses: inout DeviceBuses, memory: GuestMemory<P.Format>, ram: [RAMRegion]) throws(VMMError) {
        let uartDevice = UART8250.mmioDevice(lock: lock) { [self] in uart }
        try buses.mmio.register(uartDevice, name: "UART (ns16550a)", at: RiscVLinuxLayout.uart, size: RiscVLinuxLayout.uartSize)
        if let plic { try buses.mmio.register(plic, name: "PLIC", at: RiscVLinuxLayout.plic, size: RiscVPLIC.size) }
    }

    /// SBI calls KVM leaves to the VMM: the console's (`RiscVSBIConsole`); anything else is
    /// not supported.
    func firmwareCall(_ call: SBICall, vcpu: Int) -> FirmwareAnswer {
        lock.withLock { sbiConsole.answer(call) { for b in $0 { console.out(b) } } } ?? .answer(error: SBI.notSupported, value: 0)
    }

    /// Nothing else is mapped outside RAM: reads see an empty bus, writes are dropped.
    func unclaimedMMIO(gpa: GuestPhysAddr, isWrite: Bool, size: Int, pc: UInt64) -> ExitReason? { nil }

    /// `wfi` waits in KVM; a stray exit resumes.
    func halted(_ vcpu: VCPU) -> VCPUOutcome? { nil }

    func kicked(_ vcpu: VCPU, vm: VirtualMachine) -> ExitReason? { nil }

    func timeoutState(_ vcpu: VCPU, vm: VirtualMachine, exits: Int) -> String? {
        let uartState = lock.withLock { uart.map { "\($0.state)" } ?? "not set up" }
        return "UART \(uartState); \(plic?.state ?? "no PLIC"); \(exits) exits"
    }

    func finish(_ report: inout RunReport, memory: GuestMemory<P.Format>, ram: [RAMRegion], outcomes: [VCPUOutcome]) {
        report.serialOutput = lock.withLock { console.text }
        finishEarly(&report)
    }

    func finishEarly(_ report: inout RunReport) {
        report.linux = lock.withLock { console.result }
    }

    func watchConsole(_ text: String, _ action: @escaping @Sendable () -> Void) { lock.withLock { console.watch(text, action) } }
    var snapshotKind: String { "linux" }
    func snapshotBytes() -> [UInt8] { [] }
}
