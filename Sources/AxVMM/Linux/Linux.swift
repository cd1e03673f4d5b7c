import AxAddrSpace
import KVM

// What every Linux boot shares, whichever platform boots it: the configuration, the
// errors, the report's part, and the entry point that hands the boot to the host's platform
// (`Platform.bootLinux`: X86Platform a bzImage, AArch64Platform an arm64 Image).

/// Why a Linux boot cannot start: each case names the input and what is wrong with it.
public enum LinuxBootError: Error, CustomStringConvertible {
    /// The kernel file is missing, unreadable, not a kernel this platform boots (a bzImage,
    /// an arm64 Image), truncated or unsupported.
    case kernel(path: String, reason: String)
    /// The initrd file is missing or unreadable, or does not fit in RAM.
    case initrd(path: String, reason: String)
    /// The command line does not fit the kernel's limit or contains a NUL.
    case cmdline(reason: String)
    /// Guest RAM too small (or too large) for this kernel.
    case memory(reason: String)
    /// This KVM cannot run a stock Linux kernel (kvm_pvm).
    case unsupportedKVM(String)
    /// The device tree axvm writes for the guest (arm64) could not be made.
    case deviceTree(reason: String)
    /// Two things the boot would put in guest memory overlap (`LinuxBootPlan.placements`).
    case overlap(BootPlacement, BootPlacement)
    /// Something the boot would put in guest memory is not inside one RAM area.
    case outsideRAM(BootPlacement, ram: [GuestPhysRange])
    case vmm(VMMError)

    public var description: String {
        switch self {
        case let .kernel(path, reason): "kernel \(path): \(reason)"
        case let .initrd(path, reason): "initrd \(path): \(reason)"
        case let .cmdline(reason): "kernel command line: \(reason)"
        case let .memory(reason): "guest memory: \(reason)"
        case let .unsupportedKVM(m): m
        case let .deviceTree(reason): "device tree: \(reason)"
        case let .overlap(a, b): "\(a) overlaps the \(b)"
        case let .outsideRAM(p, ram):
            "\(p) is not inside guest RAM (\(ram.map { "[\(hex($0.start.raw)), \(hex($0.end.raw)))" }.joined(separator: ", ")))"
        case let .vmm(e): "\(e)"
        }
    }
}

/// One range a boot puts in guest memory, named as a refusal names it.
public struct BootPlacement: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var range: GuestPhysRange
    /// `[start, end)`: `end` is at least `start` (the callers' arithmetic is checked).
    public init(_ name: String, _ start: UInt64, end: UInt64) {
        self.name = name
        range = GuestPhysRange(start: GuestPhysAddr(start), end: GuestPhysAddr(end))
    }
    public var description: String { "\(name) [\(hex(range.start.raw)), \(hex(range.end.raw)))" }

    /// Throws unless every placement lies inside one RAM area and no two overlap; a refusal
    /// names the range (and the other one of an overlap, the later in the list).
    static func validate(_ places: [BootPlacement], ram: [GuestPhysRange]) throws(LinuxBootError) {
        for (i, p) in places.enumerated() {
            guard ram.contains(where: { $0.contains(p.range) }) else { throw .outsideRAM(p, ram: ram) }
            for q in places[(i + 1)...] where p.range.overlaps(q.range) { throw .overlap(p, q) }
        }
    }
}

/// What Linux kernel to boot and how (`axvm boot`).
public struct LinuxBootConfig: Sendable, RunConfiguration {
    public var kernelPath: String
    public var initrdPath: String?
    public var cmdline = LinuxBootConfig.defaultCmdline
    /// How it runs (RAM, paging, vCPUs, …): what the runner gets (`LinuxLoader.settings`).
    /// vCPUs: arm64 starts them by PSCI CPU_ON; x86 by INIT/SIPI, listed in the ACPI MADT or
    /// the MP table.
    public var settings = RunSettings.linux
    /// The run's boot time is when this text first appears on the serial console.
    public var initMarker = LinuxBootConfig.defaultInitMarker
    /// The most vCPUs a Linux guest gets.
    public static let maxVCPUs = 64
    /// Try even on kvm_pvm (which cannot run a stock kernel): for experiments.
    public var allowKVMPVM = false
    /// x86: how the guest learns its CPUs, interrupt routing and devices (`FirmwareTables`).
    public var firmware = FirmwareTables.acpi
    /// virtio-blk disks, in order (/dev/vda, /dev/vdb, …): `--disk FILE[,ro]`.
    public var disks: [DiskSpec] = []
    /// A virtio-rng fed from the host's getrandom: `--rng`.
    public var rng = false
    /// A virtio-balloon with free page reporting: `--balloon`.
    public var balloon = false
    /// arm64: the kernel is a raw binary, not an Image (`--raw`; `ArmKernelImage.init(raw:)`).
    public var rawKernel = false
    /// The balloon's target at start, bytes (`--balloon-size`; whole 4 KiB pages).
    public var balloonSize: UInt64 = 0
    /// The balloon's target in 4 KiB pages, nil without a balloon.
    var balloonTargetPages: UInt32? { balloon ? UInt32(truncatingIfNeeded: balloonSize / 4096) : nil }
    /// How many virtio devices the guest gets.
    public var virtioDevices: Int { disks.count + (rng ? 1 : 0) + (balloon ? 1 : 0) }

    public init(kernelPath: String) { self.kernelPath = kernelPath }

    /// The host's default (a guest runs the host's architecture): `x86Cmdline`, `arm64Cmdline`, …
    public static var defaultCmdline: String { GuestArch.host.linux.defaultCmdline }
    /// x86: serial console; `reboot=k`: reboot through the i8042 (axvm's way out);
    /// `pci=conf1,noearly`: PCI configuration type 1 without the sanity scan (`EmptyPCIBus`:
    /// an empty bus) and without the early scans — the AGP aperture search alone reads all
    /// 256 buses × 32 slots, 16,600 port exits (docs/performance.md, "Where the time goes");
    /// the i8042 without keyboard and mouse ports; quiet.
    public static let x86Cmdline = "console=ttyS0 reboot=k panic=-1 pci=conf1,noearly i8042.noaux i8042.nokbd quiet"
    /// arm64: the ns16550a console; PSCI ends the VM on reboot and power-off.
    public static let arm64Cmdline = "console=ttyS0 panic=-1 quiet"
    /// What scripts/linux-guest-initramfs.sh's init prints first.
    public static let defaultInitMarker = "axvm-linux: init reached"
}

extension RunSettings {
    /// A Linux boot's defaults (`axvm boot`; a restored Linux guest's fault-around). 64 KiB
    /// fault-around: of 4 KiB, 64 KiB and 2 MiB, the fastest boot in the kvm_amd rig (median
    /// of interleaved rounds) and the fastest of the three on a tmpfs-filling workload after
    /// the boot, where 2 MiB was slowest (docs/performance.md, "Linux boot").
    public static let linux = RunSettings(memorySize: 256 << 20, faultAround: 64 << 10, timeout: 120)
}

/// x86: the tables a Linux guest finds its machine in.
public enum FirmwareTables: String, Sendable {
    /// ACPI (`ACPITables`): CPUs, IOAPIC, the UART, and `poweroff` through the sleep
    /// control register. The default.
    case acpi
    /// An Intel MP table (`MPTable`): CPUs and IOAPIC; no power-off (`--no-acpi`).
    case mpTable
    /// None: Linux runs the APIC in virtual-wire mode on the 8259 PIC and finds one CPU
    /// (docs/linux.md, "Interrupts and stalls"; `--no-mp-table`). For experiments.
    case none
}

/// Boots a Linux kernel on KVM with its RAM in an `AddrSpace`, lazily populated: the
/// checks common to every platform, then the host's platform (`Platform.bootLinux`).
public enum LinuxMachine {
    /// The checks made before anything runs: sizes bounded (usage errors).
    public static func validate(_ c: LinuxBootConfig) throws(VMMError) {
        try Machine.validateMemory(c.memorySize, faultAround: c.faultAround)
        try c.snapshot?.validate()
        if let bad = c.disks.first(where: { $0.path.isEmpty }) {
            throw .badValue(what: "disk", value: "\"\(bad.path)\"", reason: DiskSpec.rule)
        }
        if c.virtioDevices > VirtioSet.maxDevices {
            throw .badValue(what: "virtio devices", value: "\(c.virtioDevices)", reason: "at most \(VirtioSet.maxDevices) (--disk, --rng and --balloon together)")
        }
        if c.balloonSize > 0 && !c.balloon {
            throw .badValue(what: "balloon size", value: "\(c.balloonSize)", reason: "needs --balloon")
        }
        if c.balloonSize >= c.memorySize && c.balloonSize > 0 {
            throw .badValue(what: "balloon size", value: "\(c.balloonSize)", reason: "must be below the guest's memory (\(c.memorySize) bytes)")
        }
        if c.virtioDevices > 0 && c.firmware != .acpi && GuestArch.host.linux.virtioNeedsACPI {
            throw .badValue(what: "virtio devices", value: "\(c.virtioDevices)", reason: "are described in the ACPI tables: not with --no-acpi or --no-mp-table")
        }
        if let plan = c.snapshot, plan.diff {
            throw .badValue(what: "diff snapshot", value: plan.directory, reason: "needs a restored VM (axvm restore … --snapshot-diff): a diff is over the snapshot restored")
        }
        if c.rawKernel && !GuestArch.host.linux.bootsRawBinaries {
            throw .badValue(what: "--raw", value: c.kernelPath, reason: "raw binaries are booted on arm64 hosts (this \(GuestArch.host) host boots kernels known by their headers)")
        }
        if let t = c.timeout, !(t > 0 && t <= VMConfig.maxTimeout) {
            throw .badValue(what: "timeout", value: "\(t)",
                            reason: "must be a number of seconds above 0 and at most \(Int(VMConfig.maxTimeout)) (one week); 0 or none: no limit")
        }
        if c.initMarker.isEmpty || c.initMarker.utf8.count > 256 {
            throw .badValue(what: "init marker", value: c.initMarker, reason: "must be 1 to 256 bytes")
        }
        if c.vcpus < 1 || c.vcpus > LinuxBootConfig.maxVCPUs {
            throw .badValue(what: "vCPUs", value: "\(c.vcpus)", reason: "must be from 1 to \(LinuxBootConfig.maxVCPUs)")
        }
    }

    /// Reads and checks every input (before KVM is opened: a bad kernel costs no VM), then
    /// boots it on this host's platform.
    public static func boot(_ c: LinuxBootConfig) throws(LinuxBootError) -> RunReport {
        let t0 = nowNanos()
        do { try validate(c) } catch { throw .vmm(error) }
        struct Job: Platforms.Job {
            let config: LinuxBootConfig, t0: UInt64
            func run<P: Platform>(_ platform: P) throws(VMMError) -> Result<RunReport, LinuxBootError> {
                do { return .success(try platform.bootLinux(config, t0: t0)) } catch { return .failure(error) }
            }
        }
        let result: Result<RunReport, LinuxBootError>
        do { result = try Platforms.withHost(Job(config: c, t0: t0)) } catch { throw .vmm(error) }
        return try result.get()
    }
}

/// What a Linux boot adds to the report.
public struct LinuxBootResult: Sendable {
    public var config: LinuxBootConfig
    /// What the boot put in guest memory (kernel, initrd, boot data), in the plan's order.
    public var placements: [BootPlacement]
    /// Where the initrd is in guest memory and its size (0, 0: none).
    public var initrdAddress: UInt64 = 0
    public var initrdSize: UInt64 = 0
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
    /// What the virtio-balloon did (nil: no balloon).
    public var balloon: BalloonCounters?
    /// The kernel was a multiboot kernel (x86; `MultibootLoader`), not Linux: no init marker.
    public var multiboot = false
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

