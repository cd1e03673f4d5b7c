import ArgumentParser
import AxVMM
import CKVM
import Glibc
import KVM

/// A byte count on the command line ("64M", "1G", "512K", "4096", "2MiB"): `parseByteSize`.
struct ByteSize: ExpressibleByArgument {
    let bytes: UInt64
    init?(argument: String) {
        guard let n = parseByteSize(argument) else { return nil }
        bytes = n
    }
}

/// `--timeout`: seconds (finite, above 0; `Machine.validate` bounds it), or `0` / `none`
/// for no limit.
struct Timeout: ExpressibleByArgument {
    let seconds: Double?
    init?(argument: String) {
        if argument == "none" { seconds = nil; return }
        guard let v = Double(argument), v.isFinite, v >= 0 else { return nil }
        seconds = v == 0 ? nil : v
    }
}

extension GuestParams.Mode: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "split": self = .split
        case "overlap": self = .overlap
        default: return nil
        }
    }
}

extension GuestParams.Order: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "sequential", "seq": self = .sequential
        case "random": self = .random
        case "strided": self = .strided
        default: return nil
        }
    }
}

@main
struct AxvmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "axvm",
        abstract: "A KVM hypervisor whose guest memory is an AxAddrSpace address space.",
        subcommands: [Check.self, Run.self, Boot.self])
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tell whether KVM and userfaultfd are usable here.")
    @Option(help: "KVM device.") var kvm = "/dev/kvm"

    func run() throws {
        var ok = true
        do {
            let sys = try KVMSystem(path: kvm)
            print("KVM: \(kvm) usable, API version 12, vCPU mmap size \(try sys.vcpuMmapSize()) bytes")
            for (name, cap) in KVMSystem.interestingCapabilities {
                print("  \(name): \(sys.checkExtension(cap))")
            }
        } catch {
            print("KVM: \(error)")
            ok = false
        }
        let fd = ckvm_userfaultfd(O_CLOEXEC)
        if fd >= 0 {
            print("userfaultfd: usable (minor faults on shmem needed: Linux 5.13+)")
            close(fd)
        } else {
            print("userfaultfd: not usable: \(String(cString: strerror(errno)))")
            ok = false
        }
        print("KVM flavour: \(KVMFlavour.detect())")
        print("host CPU: \(HostCPU.detect() == .amd ? "AMD (nested faults decoded as #NPF)" : "Intel (nested faults decoded as EPT violations)")")
        if !ok { throw ExitCode(1) }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a guest from guests/build.")

    @Argument(help: "Guest image (e.g. guests/build/memtest.bin).") var guest: String
    @Option(help: "Guest RAM, e.g. 64M, 1G (4 KiB multiple).") var memory = ByteSize(argument: "64M")!
    @Flag(help: "Populate RAM on first touch (default) or all before start.") var paging: Paging = .lazy
    @Option(help: "Pages populated per fault: 4K … 2M.") var faultAround = ByteSize(argument: "4K")!
    @Option(help: "Stop the guest after this many seconds (at most 604800, a week; 0 or none: no limit).")
    var timeout = Timeout(argument: "30")!
    @Option(help: "memtest order: sequential, random, strided.") var order: GuestParams.Order = .sequential
    @Option(help: "memtest stride in pages.") var stride: UInt64 = 16
    @Option(help: "memtest seed.") var seed: UInt64 = 1
    @Option(help: "Bytes memtest touches (default: all RAM above 2 MiB).") var testSize: ByteSize?
    @Flag(help: "Spread memtest's pages evenly over all RAM above 2 MiB (with a small --test-size).") var sparse = false
    @Option(help: "vCPUs, each on its own thread (1 … 64).") var vcpus = 1
    @Option(help: "How memtest's vCPUs share the pages: split (each its share) or overlap (all of them, each in its own order).")
    var memtestMode: GuestParams.Mode = .split
    @Option(help: "Threads serving lazy faults (1 … 64; default: one per vCPU, at most the host's CPUs).") var faultThreads: Int?
    @Option(help: "Most guest memory populated (lazy faults beyond it stop the VM).") var maxResident: ByteSize?
    @Flag(help: "Print statistics.") var stats = false
    @Option(help: "Write statistics as JSON to this file.") var statsJson: String?
    @Option(help: "KVM device.") var kvm = "/dev/kvm"

    enum Paging: EnumerableFlag { case lazy, populate }

    func config() -> VMConfig {
        var c = VMConfig(guestPath: guest)
        c.memorySize = memory.bytes
        c.lazy = paging == .lazy
        c.faultAround = faultAround.bytes
        c.timeout = timeout.seconds
        c.testOrder = order
        c.stridePages = stride
        c.seed = seed
        c.testSize = testSize?.bytes ?? 0
        c.sparse = sparse
        c.vcpus = vcpus
        c.memtestMode = memtestMode
        c.faultThreads = faultThreads
        c.maxResident = maxResident?.bytes
        c.serialToStdout = true
        c.handleInterrupt = true
        c.kvmPath = kvm
        return c
    }

    /// Bad option values are usage errors (exit status 64, with the usage text), found
    /// before anything runs.
    func validate() throws {
        do { try Machine.validate(config()) } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        // The statistics file is opened (and checked: a regular file we can write) before
        // the guest runs, so a bad path costs no run.
        var json = try openStatsFile(statsJson)
        let report: RunReport
        do {
            report = try Machine.run(config())
        } catch {
            json?.discard()
            eprint("axvm: error: \(error)")
            throw ExitCode(error.isUsageError ? 64 : 2)
        }
        let normal: Bool = if case .guestExit = report.exit { true } else { false }
        if !stats && !normal { eprint("axvm: \(report.exit)") }
        if stats { print(StatsFormat.text(report), terminator: "") }
        try writeStats(json.take(), StatsFormat.json(report))
        if report.exitStatus != 0 { throw ExitCode(report.exitStatus) }
    }
}

/// The `--stats-json` file, opened and checked before the guest runs (a bad path costs no
/// run): exit status 2 if it cannot be used.
func openStatsFile(_ path: String?) throws -> OutputFile? {
    guard let path else { return nil }
    do { return try OutputFile(path: path) } catch {
        eprint("axvm: error: \(error)")
        throw ExitCode(2)
    }
}

/// Writes the statistics into the file from `openStatsFile` (nothing without one); a failed
/// write or close is exit status 2.
func writeStats(_ file: consuming OutputFile?, _ json: String) throws {
    guard let file else { return }
    do { try file.write(json) } catch {
        eprint("axvm: error: \(error)")
        throw ExitCode(2)
    }
}

/// A line on standard error (fd 2; the C `stderr` global is not concurrency-safe).
func eprint(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}


/// `axvm boot`: a Linux bzImage with an optional initrd, on lazily populated RAM.
struct Boot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a Linux kernel (x86_64 bzImage, 64-bit boot protocol) on lazily populated RAM.",
        discussion: """
            Devices: an 8250 UART on COM1 (console=ttyS0, IRQ 4), the in-kernel PIC, IOAPIC, \
            LAPIC and PIT, an i8042 whose reset line ends the VM (reboot=k). The run ends \
            normally (status 0) when the guest reboots or powers off through it. Exit status: \
            2 for a bad kernel, initrd or command line (the message says what is wrong), \
            64 for bad option values, 3 if the guest crashes, 124 on timeout.
            Needs KVM with hardware virtualization (kvm_amd, kvm_intel): on kvm_pvm a stock \
            kernel cannot run, and axvm boot says so at once.
            """)

    @Option(help: "Linux kernel (bzImage, e.g. /boot/vmlinuz-*).") var kernel: String
    @Option(help: "Initial ramdisk (cpio archive, may be compressed).") var initrd: String?
    @Option(help: "Kernel command line.") var cmdline = LinuxBootConfig.defaultCmdline
    @Option(help: "Guest RAM, e.g. 256M, 1G (4 KiB multiple).") var memory = ByteSize(argument: "256M")!
    @Flag(help: "Populate RAM on first touch (default) or all before start.") var paging: Run.Paging = .lazy
    @Option(help: "Pages populated per fault: 4K … 2M.") var faultAround = ByteSize(argument: "4K")!
    @Option(help: "Stop the guest after this many seconds (at most 604800; 0 or none: no limit).")
    var timeout = Timeout(argument: "120")!
    @Option(help: "Console text that marks the end of the boot (its time is reported).")
    var initMarker = LinuxBootConfig.defaultInitMarker
    @Flag(help: "Do not copy the guest's console to stdout.") var quiet = false
    @Flag(help: "Print statistics.") var stats = false
    @Option(help: "Write statistics as JSON to this file.") var statsJson: String?
    @Option(help: "KVM device.") var kvm = "/dev/kvm"
    @Flag(help: .hidden) var forceKvmPvm = false

    func config() -> LinuxBootConfig {
        var c = LinuxBootConfig(kernelPath: kernel)
        c.initrdPath = initrd
        c.cmdline = cmdline
        c.memorySize = memory.bytes
        c.lazy = paging == .lazy
        c.faultAround = faultAround.bytes
        c.timeout = timeout.seconds
        c.initMarker = initMarker
        c.serialToStdout = !quiet
        c.handleInterrupt = true
        c.kvmPath = kvm
        c.allowKVMPVM = forceKvmPvm
        return c
    }

    func validate() throws {
        do { try LinuxMachine.validate(config()) } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        var json = try openStatsFile(statsJson)
        let report: LinuxBootReport
        do {
            report = try LinuxMachine.boot(config())
        } catch {
            json?.discard()
            eprint("axvm: error: \(error)")
            if case let .vmm(e) = error, e.isUsageError { throw ExitCode(64) }
            throw ExitCode(2)
        }
        if report.exit != .reset { eprint("axvm: \(report.exit)") }
        if stats { print(LinuxStatsFormat.text(report), terminator: "") } else { print(LinuxStatsFormat.summary(report)) }
        try writeStats(json.take(), LinuxStatsFormat.json(report))
        if report.exit.exitStatus != 0 { throw ExitCode(report.exit.exitStatus) }
    }
}
