import ArgumentParser
import AxVMM
import CKVM
#if canImport(Glibc)
import Glibc
#endif
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
        guard let v = Frontend.parseTimeout(argument) else { return nil }
        seconds = v
    }
}

extension GuestParams.Mode: ExpressibleByArgument {
    public init?(argument: String) {
        guard let m = Frontend.parseMode(argument) else { return nil }
        self = m
    }
}

extension GuestParams.Order: ExpressibleByArgument {
    public init?(argument: String) {
        guard let o = Frontend.parseOrder(argument) else { return nil }
        self = o
    }
}

@main
struct AxvmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "axvm",
        abstract: "A KVM hypervisor whose guest memory is an AxAddrSpace address space.",
        subcommands: subcommands)
    #if arch(x86_64)
    static let subcommands: [ParsableCommand.Type] = [Check.self, Run.self, Boot.self]
    #else
    static let subcommands: [ParsableCommand.Type] = [Check.self, Run.self]  // axvm boot: x86 Linux only
    #endif
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tell whether KVM and userfaultfd are usable here.")
    @Option(help: "KVM device.") var kvm = "/dev/kvm"

    func run() throws {
        if !Frontend.check(kvmPath: kvm) { throw ExitCode(1) }
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
        do { try Frontend.run(config(), stats: stats, statsJSON: statsJson) } catch { throw ExitCode(error.status) }
    }
}

func eprint(_ line: String) { Frontend.eprint(line) }

#if arch(x86_64)
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
    @Flag(help: .hidden) var noMpTable = false

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
        c.mpTable = !noMpTable
        return c
    }

    func validate() throws {
        do { try LinuxMachine.validate(config()) } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        var json: OutputFile?
        do { json = try Frontend.openStatsFile(statsJson) } catch { throw ExitCode(error.status) }
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
        do { try Frontend.writeStats(json.take(), LinuxStatsFormat.json(report)) } catch { throw ExitCode(error.status) }
        if report.exit.exitStatus != 0 { throw ExitCode(report.exit.exitStatus) }
    }
}
#endif
