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
    let text: String
    init?(argument: String) {
        guard let n = parseByteSize(argument) else { return nil }
        bytes = n
        text = argument
    }
    var defaultValueDescription: String { text }
    /// For `@Option(transform:)`: a refused value names the rule.
    static let parse = rule(Frontend.Rule.size) { ByteSize(argument: $0) }
}

/// `--timeout`: seconds (finite, above 0; `Machine.validate` bounds it), or `0` / `none`
/// for no limit.
struct Timeout: ExpressibleByArgument {
    let seconds: Double?
    let text: String
    init?(argument: String) {
        guard let v = Frontend.parseTimeout(argument) else { return nil }
        seconds = v
        text = argument
    }
    var defaultValueDescription: String { text }
    static let parse = rule(Frontend.Rule.timeout) { Timeout(argument: $0) }
}

/// A value parser for `@Option(transform:)` whose refusal says what the value must be:
/// "The value '-1' is invalid for '--stride <stride>': must be a whole number (no sign)".
func rule<T>(_ rule: String, _ parse: @escaping @Sendable (String) -> T?) -> @Sendable (String) throws -> T {
    { text in
        guard let v = parse(text) else { throw ValidationError(rule) }
        return v
    }
}
let wholeNumber = rule(Frontend.Rule.count) { UInt64($0) }
/// Counts that `validate` bounds: a sign is kept, so "-1" is refused naming the range.
let count = rule(Frontend.Rule.count) { Int($0) }

/// An option whose values have names (`--order`, `--memtest-mode`): help and errors list
/// the names. (Not the enums themselves: swift-argument-parser shows a RawRepresentable
/// enum's default by its raw value, a number the option then refuses.)
protocol NamedValue: CaseIterable, Sendable {
    var name: String { get }
    static func parse(_ text: String) -> Self?
    static var descriptions: [String: String] { get }
}

struct Choice<Value: NamedValue>: ExpressibleByArgument {
    let value: Value
    init(_ value: Value) { self.value = value }
    init?(argument: String) {
        guard let v = Value.parse(argument) else { return nil }
        value = v
    }
    static var allValueStrings: [String] { Value.allCases.map(\.name) }
    /// Shell completion offers the names.
    static var defaultCompletionKind: CompletionKind { .list(allValueStrings) }
    static var allValueDescriptions: [String: String] { Value.descriptions }
    var defaultValueDescription: String { value.name }
}

extension GuestParams.Order: NamedValue {
    static func parse(_ text: String) -> Self? { Frontend.parseOrder(text) }
    static var descriptions: [String: String] {
        ["sequential": "page after page", "random": "a permutation of the pages from --seed", "strided": "--stride pages apart"]
    }
}

extension GuestParams.Mode: NamedValue {
    static func parse(_ text: String) -> Self? { Frontend.parseMode(text) }
    static var descriptions: [String: String] {
        ["split": "each vCPU its share of the pages", "overlap": "every vCPU all the pages, each in its own order"]
    }
}

@main
struct AxvmCommand: ParsableCommand {
    /// Before anything else: the terminating signals go through `Termination` from the
    /// start of the process, and arguments must be UTF-8 (Swift's `String` would replace
    /// a bad byte, so a path or command line would silently change).
    static func main() {
        do { try Termination.install() } catch {
            Frontend.eprint("axvm: error: \(error)")
            Glibc.exit(2)
        }
        if let bad = Frontend.invalidUTF8Argument(CommandLine.unsafeArgv, count: Int(CommandLine.argc)) {
            Frontend.eprint("Error: \(bad)")
            Glibc.exit(Frontend.usageStatus)
        }
        main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "axvm",
        abstract: "A KVM hypervisor whose guest memory is an AxAddrSpace address space.",
        discussion: CommandHelp.exitStatuses,
        version: CommandHelp.version(commit: buildCommit, build: "SwiftPM build"),
        subcommands: subcommands)
    static let subcommands: [ParsableCommand.Type] = [Check.self, Run.self, Boot.self, Restore.self]
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Tell whether KVM and userfaultfd are usable here.", discussion: CommandHelp.checkExamples)
    @Option(help: "KVM device.") var kvm = "/dev/kvm"

    func run() throws {
        let ok = Frontend.check(kvmPath: kvm)
        do { try Frontend.finish(status: ok ? 0 : 1, json: nil, { _ in "" }, text: nil) } catch { throw ExitCode(error.status) }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a guest from guests/build.",
        discussion: CommandHelp.runExamples + "\n\n" + CommandHelp.seeExitStatuses)

    @Argument(help: "Guest image (e.g. guests/build/memtest.bin).") var guest: String
    @Option(parsing: .unconditional, help: "Guest RAM, e.g. 64M, 1G (4 KiB multiple).", transform: ByteSize.parse)
    var memory = ByteSize(argument: "64M")!
    @Flag(help: "Populate RAM on first touch (default) or all before start.") var paging: Paging = .lazy
    @Option(parsing: .unconditional, help: "Pages populated per fault: 4K … 2M.", transform: ByteSize.parse)
    var faultAround = ByteSize(argument: "4K")!
    @Option(parsing: .unconditional, help: "Stop the guest after this many seconds (at most 604800, a week; 0 or none: no limit).",
            transform: Timeout.parse)
    var timeout = Timeout(argument: "30")!
    @Option(parsing: .unconditional, help: "memtest order.") var order = Choice(GuestParams.Order.sequential)
    @Option(parsing: .unconditional, help: "memtest stride in pages, for --order strided (default: 16).", transform: wholeNumber)
    var stride: UInt64?
    @Option(parsing: .unconditional, help: "memtest seed.", transform: wholeNumber) var seed: UInt64 = 1
    @Option(parsing: .unconditional, help: "Bytes memtest touches (default: all RAM above 2 MiB).", transform: ByteSize.parse)
    var testSize: ByteSize?
    @Flag(help: "Spread memtest's pages evenly over all RAM above 2 MiB (with a small --test-size).") var sparse = false
    @Option(parsing: .unconditional, help: "vCPUs, each on its own thread (1 … 64).", transform: count) var vcpus = 1
    @Option(parsing: .unconditional, help: "How memtest's vCPUs share the pages.")
    var memtestMode = Choice(GuestParams.Mode.split)
    @Option(parsing: .unconditional, help: "Threads serving lazy faults (1 … 64; default: one per vCPU, at most the host's CPUs).",
            transform: count)
    var faultThreads: Int?
    @Option(parsing: .unconditional, help: "Most guest memory populated (lazy faults beyond it stop the VM).", transform: ByteSize.parse)
    var maxResident: ByteSize?
    @Flag(help: "Print statistics.") var stats = false
    @Option(help: "Write statistics as JSON to this file.") var statsJson: String?
    @Option(help: "Draw guest memory by first touch and faults over time to this SVG file.") var faultMap: String?
    @Option(help: "KVM device.") var kvm = "/dev/kvm"
    @OptionGroup var snapshot: SnapshotOptions

    enum Paging: EnumerableFlag { case lazy, populate }

    func config() -> VMConfig {
        var c = VMConfig(guestPath: guest)
        c.memorySize = memory.bytes
        c.lazy = paging == .lazy
        c.faultAround = faultAround.bytes
        c.timeout = timeout.seconds
        c.testOrder = order.value
        c.stridePages = stride
        c.seed = seed
        c.testSize = testSize?.bytes
        c.sparse = sparse
        c.vcpus = vcpus
        c.memtestMode = memtestMode.value
        c.faultThreads = faultThreads
        c.maxResident = maxResident?.bytes
        c.serialToStdout = true
        c.handleInterrupt = true
        c.kvmPath = kvm
        c.snapshot = snapshot.plan
        return c
    }

    /// Bad option values are usage errors (exit status 64, with the usage text), found
    /// before anything runs.
    func validate() throws {
        do { try Machine.validate(config()) } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        do { try Frontend.run(config(), stats: stats, statsJSON: statsJson, faultMap: faultMap) } catch { throw ExitCode(error.status) }
    }
}

func eprint(_ line: String) { Frontend.eprint(line) }

/// `axvm boot`: a Linux kernel with an optional initrd, on lazily populated RAM.
struct Boot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a Linux kernel (x86_64 bzImage; arm64 Image or Image.gz) on lazily populated RAM.",
        discussion: """
            x86_64 devices: an 8250 UART on COM1 (console=ttyS0, IRQ 4), the in-kernel PIC, IOAPIC, \
            LAPIC and PIT, an i8042 whose reset line ends the VM (reboot=k). arm64: a device \
            tree written by axvm, an in-kernel GICv3 (or GICv2), PSCI, an ns16550a UART \
            (console=ttyS0). The run ends normally (status 0) when the guest reboots or \
            powers off.
            Needs KVM with hardware virtualization (kvm_amd, kvm_intel): on kvm_pvm a stock \
            kernel cannot run, and axvm boot says so at once.

            """ + CommandHelp.bootExamples + "\n\n" + CommandHelp.seeExitStatuses)

    @Option(help: "Linux kernel (x86_64: bzImage, e.g. /boot/vmlinuz-*; arm64: Image or Image.gz).") var kernel: String
    @Option(help: "Initial ramdisk (cpio archive, may be compressed).") var initrd: String?
    @Option(parsing: .unconditional, help: "Kernel command line.") var cmdline = LinuxBootConfig.defaultCmdline
    @Option(parsing: .unconditional, help: "Guest RAM, e.g. 256M, 1G (4 KiB multiple).", transform: ByteSize.parse)
    var memory = ByteSize(argument: "256M")!
    @Flag(help: "Populate RAM on first touch (default) or all before start.") var paging: Run.Paging = .lazy
    @Option(parsing: .unconditional, help: "Pages populated per fault: 4K … 2M (64K: a Linux boot's fastest).", transform: ByteSize.parse)
    var faultAround = ByteSize(argument: "64K")!
    @Option(parsing: .unconditional, help: "Stop the guest after this many seconds (at most 604800; 0 or none: no limit).",
            transform: Timeout.parse)
    var timeout = Timeout(argument: "120")!
    @Option(parsing: .unconditional, help: "vCPUs (arm64: started through PSCI; x86_64: through INIT/SIPI, listed in the ACPI MADT).", transform: count)
    var vcpus = 1
    @Option(help: "Console text that marks the end of the boot (its time is reported).")
    var initMarker = LinuxBootConfig.defaultInitMarker
    @Flag(help: "Do not copy the guest's console to stdout.") var quiet = false
    @Flag(help: "Print statistics.") var stats = false
    @Option(help: "Write statistics as JSON to this file.") var statsJson: String?
    @Option(help: "Draw guest memory by first touch and faults over time to this SVG file.") var faultMap: String?
    @Option(help: "KVM device.") var kvm = "/dev/kvm"
    @Flag(help: .hidden) var forceKvmPvm = false
    @Flag(help: .hidden) var noMpTable = false
    @Flag(help: .hidden) var noAcpi = false
    @OptionGroup var snapshot: SnapshotOptions

    func config() -> LinuxBootConfig {
        var c = LinuxBootConfig(kernelPath: kernel)
        c.initrdPath = initrd
        c.cmdline = cmdline
        c.memorySize = memory.bytes
        c.lazy = paging == .lazy
        c.faultAround = faultAround.bytes
        c.timeout = timeout.seconds
        c.initMarker = initMarker
        c.vcpus = vcpus
        c.serialToStdout = !quiet
        c.handleInterrupt = true
        c.kvmPath = kvm
        c.allowKVMPVM = forceKvmPvm
        // Hidden, for experiments: the MP table instead of ACPI; no firmware tables at all.
        c.firmware = noMpTable ? .none : noAcpi ? .mpTable : .acpi
        c.snapshot = snapshot.plan
        return c
    }

    func validate() throws {
        do { try LinuxMachine.validate(config()) } catch { throw ValidationError("\(error)") }
    }

    func run() throws {
        do { try Frontend.boot(config(), stats: stats, statsJSON: statsJson, faultMap: faultMap) } catch { throw ExitCode(error.status) }
    }
}

/// Taking a snapshot of a running guest (`axvm run`, `axvm boot`, `axvm restore`).
struct SnapshotOptions: ParsableArguments {
    @Option(help: "Take a snapshot into this directory: on --snapshot-on, --snapshot-after or SIGUSR1, whichever comes first.")
    var snapshot: String?
    @Option(help: "Take it the first time the guest's console prints this text.") var snapshotOn: String?
    @Option(parsing: .unconditional, help: "Take it this many seconds after the guest starts.",
            transform: rule("must be a number of seconds", { Double($0) }))
    var snapshotAfter: Double?
    @Flag(help: "End the run once the snapshot is written (else the guest goes on).") var snapshotAndExit = false
    @Flag(help: "axvm restore: write only the pages the guest wrote since the restore, over the restored snapshot.")
    var snapshotDiff = false

    /// Checked in `validate`: a bad plan never reaches `run`.
    var plan: SnapshotPlan? {
        try? SnapshotPlan.commandLine(directory: snapshot, onText: snapshotOn, afterSeconds: snapshotAfter,
                                      andExit: snapshotAndExit, diff: snapshotDiff)
    }

    func validate() throws {
        do {
            _ = try SnapshotPlan.commandLine(directory: snapshot, onText: snapshotOn, afterSeconds: snapshotAfter,
                                             andExit: snapshotAndExit, diff: snapshotDiff)
        } catch { throw ValidationError("\(error)") }
    }
}

/// `axvm restore`: a VM from a snapshot directory, its memory filled on demand.
struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume a VM from a snapshot directory (axvm run/boot --snapshot).",
        discussion: """
            The vCPUs start at once; with --lazy (the default) each page the snapshot holds is \
            copied in on the guest's first touch of it, and pages it does not hold are fresh \
            zero pages. A damaged, truncated or foreign snapshot is refused before a VM is made.

            """ + CommandHelp.restoreExamples + "\n\n" + CommandHelp.seeExitStatuses)
    @Argument(help: "Snapshot directory.") var directory: String
    @Flag(help: "Copy pages in on first touch (default) or all before start.") var paging: Run.Paging = .lazy
    @Option(parsing: .unconditional, help: "Pages populated per fault: 4K … 2M (default: 4K memtest, 64K Linux).",
            transform: ByteSize.parse)
    var faultAround: ByteSize?
    @Option(parsing: .unconditional, help: "Stop the guest after this many seconds (0 or none: no limit).", transform: Timeout.parse)
    var timeout = Timeout(argument: "30")!
    @Option(parsing: .unconditional, help: "Threads serving lazy faults (1 … 64).", transform: count) var faultThreads: Int?
    @Option(help: "Linux: console text whose first appearance after the restore is timed.") var marker: String?
    @Flag(help: "Do not copy the guest's console to stdout.") var quiet = false
    @Flag(help: "Print statistics.") var stats = false
    @Option(help: "Write statistics as JSON to this file.") var statsJson: String?
    @Option(help: "KVM device.") var kvm = "/dev/kvm"
    @OptionGroup var snapshot: SnapshotOptions

    func config() -> RestoreConfig {
        var c = RestoreConfig(directory: directory)
        c.lazy = paging == .lazy
        c.faultAround = faultAround?.bytes
        c.timeout = timeout.seconds
        c.faultThreads = faultThreads
        c.serialToStdout = !quiet
        c.handleInterrupt = true
        c.kvmPath = kvm
        c.snapshot = snapshot.plan
        c.marker = marker
        return c
    }

    func run() throws {
        do { try Frontend.restore(config(), stats: stats, statsJSON: statsJson) } catch { throw ExitCode(error.status) }
    }
}
