/// One option of axvm's command line: its name, which subcommands take it, what its value
/// is, its help, and how it changes the configuration (`Invocation`). The table
/// (`CommandOptions.all`) is the only place an option is described: both front ends parse
/// with it (`CommandParser`), and the help, the manual and the shell completions are written
/// from it (`CommandDocs`). Defaults are not spelled here: an option shows the default of the
/// configuration it writes (`Invocation(subcommand)`).
public struct CommandOption: Sendable {
    /// What the option's value is, how it is parsed (a refusal names the rule:
    /// `Frontend.Rule`), and where it goes.
    public enum Value: Sendable {
        case flag(@Sendable (inout Invocation) -> Void)
        /// A byte count: `parseByteSize`.
        case size(@Sendable (inout Invocation, UInt64) -> Void)
        /// A count that validation bounds: a sign is kept, so "-1" is refused naming the range.
        case count(@Sendable (inout Invocation, Int) -> Void)
        /// A whole number without a sign.
        case whole(@Sendable (inout Invocation, UInt64) -> Void)
        /// `Frontend.parseTimeout`: seconds, or nil for no limit.
        case timeout(@Sendable (inout Invocation, Double?) -> Void)
        /// Any number of seconds (validation bounds it).
        case seconds(@Sendable (inout Invocation, Double) -> Void)
        case text(@Sendable (inout Invocation, String) -> Void)
        /// One of `names` (each with a description); the closure is false for a value it
        /// does not take.
        case choice(names: [(String, String)], @Sendable (inout Invocation, String) -> Bool)
    }

    /// What a shell completes for the value.
    public enum Completion: Sendable { case none, file, directory }

    /// `--memory`.
    public let name: String
    public let subcommands: [Subcommand]
    public let value: Value
    public let help: String
    public let completion: Completion
    /// Flags of one group exclude each other (`--lazy`, `--populate`).
    public let group: String?
    /// Not in the help, the manual or the completions (experiments, tests).
    public let hidden: Bool
    /// The default shown in the help, read off the subcommand's default configuration; nil:
    /// none shown.
    public let shownDefault: @Sendable (Invocation) -> String?

    init(_ name: String, _ subcommands: [Subcommand], _ value: Value, help: String, completion: Completion = .none,
         group: String? = nil, hidden: Bool = false, default shownDefault: @escaping @Sendable (Invocation) -> String? = { _ in nil }) {
        self.name = name
        self.subcommands = subcommands
        self.value = value
        self.help = help
        self.completion = completion
        self.group = group
        self.hidden = hidden
        self.shownDefault = shownDefault
    }

    public var isFlag: Bool {
        if case .flag = value { return true }
        return false
    }

    /// `<memory>`: the option's name without its dashes (swift-argument-parser's metavariable).
    public var metavariable: String { "<" + String(name.dropFirst(2)) + ">" }

    /// `--memory <memory>`, or `--stats` for a flag.
    public var synopsis: String { isFlag ? name : name + " " + metavariable }

    /// The value names of a choice (`--order`), else none.
    public var choices: [(String, String)] {
        if case let .choice(names, _) = value { return names }
        return []
    }

    /// The help with the subcommand's default.
    public func help(for subcommand: Subcommand) -> String {
        guard let d = shownDefault(Invocation(subcommand)) else { return help }
        return help + " (default: " + d + ")"
    }
}

/// Every option of every subcommand.
public enum CommandOptions {
    static let allRunning: [Subcommand] = [.run, .boot, .restore]

    public static let all: [CommandOption] = [
        // Guest RAM and paging.
        CommandOption("--kernel", [.boot], .text { $0.boot.kernelPath = $1 },
                      help: "Kernel: Linux (x86_64: bzImage, e.g. /boot/vmlinuz-*; arm64: Image or Image.gz), or a multiboot kernel (x86_64; kvm-unit-tests).",
                      completion: .file),
        CommandOption("--raw", [.boot], .flag { $0.boot.rawKernel = true },
                      help: "arm64: the kernel is a raw binary (kvm-unit-tests), loaded at RAM + 512 KiB and entered at its start."),
        CommandOption("--initrd", [.boot], .text { $0.boot.initrdPath = $1 },
                      help: "Initial ramdisk (cpio archive, may be compressed); a multiboot kernel's module.", completion: .file),
        CommandOption("--cmdline", [.boot], .text { $0.boot.cmdline = $1 }, help: "Kernel command line.",
                      default: { "\"" + $0.boot.cmdline + "\"" }),
        CommandOption("--memory", [.run, .boot], .size { $0.settings.memorySize = $1 },
                      help: "Guest RAM, a 4 KiB multiple: digits and a K, M, G or T suffix (e.g. 512M, 1G).",
                      default: { formatSize($0.settings.memorySize) }),
        CommandOption("--lazy", allRunning, .flag { $0.settings.lazy = true },
                      help: "Populate RAM on first touch (restore: copy each saved page in on first touch).", group: "paging",
                      default: { $0.settings.lazy ? "yes" : nil }),
        CommandOption("--populate", allRunning, .flag { $0.settings.lazy = false }, help: "Populate all of RAM before the start.",
                      group: "paging", default: { $0.settings.lazy ? nil : "yes" }),
        CommandOption("--fault-around", allRunning, .size { inv, v in
                          inv.settings.faultAround = v
                          inv.restore.faultAround = v
                      },
                      help: "Pages populated per lazy fault: a power of two, 4K … 2M.",
                      default: { inv in
                          inv.subcommand == .restore
                              ? formatSize(RunSettings.memtest.faultAround) + " memtest, " + formatSize(RunSettings.linux.faultAround) + " Linux"
                              : formatSize(inv.settings.faultAround)
                      }),
        CommandOption("--timeout", allRunning, .timeout { $0.settings.timeout = $1 },
                      help: "Stop the guest after this many seconds (at most 604800, a week; 0 or none: no limit).",
                      default: { $0.settings.timeout.map { formatSeconds($0) } ?? "none" }),
        // memtest.
        CommandOption("--order", [.run], .choice(names: [
                          ("sequential", "page after page"), ("random", "a permutation of the pages from --seed"),
                          ("strided", "--stride pages apart"),
                      ]) { inv, text in
                          guard let o = Frontend.parseOrder(text) else { return false }
                          inv.run.testOrder = o
                          return true
                      }, help: "memtest's order.", default: { $0.run.testOrder.name }),
        CommandOption("--stride", [.run], .whole { $0.run.stridePages = $1 },
                      help: "memtest's stride in pages, for --order strided (1 … the test pages; a given stride is checked whatever the order).",
                      default: { _ in "\(VMConfig.defaultStride)" }),
        CommandOption("--seed", [.run], .whole { $0.run.seed = $1 }, help: "memtest's seed.", default: { "\($0.run.seed)" }),
        CommandOption("--test-size", [.run], .size { $0.run.testSize = $1 },
                      help: "Bytes memtest touches, a 4 KiB multiple.", default: { $0.run.testSize.map { formatSize($0) } ?? "all RAM above 2 MiB" }),
        CommandOption("--sparse", [.run], .flag { $0.run.sparse = true },
                      help: "Spread memtest's pages evenly over all RAM above 2 MiB (with a small --test-size)."),
        // vCPUs and threads.
        CommandOption("--vcpus", [.run, .boot], .count { $0.settings.vcpus = $1 },
                      help: "vCPUs, 1 … 64, each on its own thread.",
                      default: { "\($0.settings.vcpus)" }),
        CommandOption("--memtest-mode", [.run], .choice(names: [
                          ("split", "each vCPU its share of the pages"), ("overlap", "every vCPU all the pages, each in its own order"),
                      ]) { inv, text in
                          guard let m = Frontend.parseMode(text) else { return false }
                          inv.run.memtestMode = m
                          return true
                      }, help: "How memtest's vCPUs share the pages.", default: { $0.run.memtestMode.name }),
        CommandOption("--fault-threads", [.run, .restore], .count { $0.settings.faultThreads = $1 },
                      help: "Threads serving lazy faults, 1 … 64.",
                      default: { $0.settings.faultThreads.map { "\($0)" } ?? "one per vCPU, at most the host's CPUs" }),
        CommandOption("--max-resident", [.run], .size { $0.settings.maxResident = $1 },
                      help: "Most guest memory populated, ROM included: the lazy fault past it stops the VM (status 3)."),
        // Linux.
        CommandOption("--init-marker", [.boot], .text { $0.boot.initMarker = $1 },
                      help: "Console text whose first appearance is reported as the boot time.",
                      default: { "\"" + $0.boot.initMarker + "\"" }),
        CommandOption("--disk", [.boot], .text { $0.boot.disks.append(DiskSpec.parse($1) ?? DiskSpec(path: "")) },
                      help: "A raw disk image as a virtio-blk disk (repeatable: /dev/vda, /dev/vdb, …); FILE,ro for a read-only one.",
                      completion: .file),
        CommandOption("--rng", [.boot], .flag { $0.boot.rng = true }, help: "A virtio-rng entropy source fed by the host's getrandom."),
        CommandOption("--balloon", [.boot], .flag { $0.boot.balloon = true },
                      help: "A virtio-balloon with free page reporting: memory the guest frees or inflates goes back to the host."),
        CommandOption("--balloon-size", [.boot], .size { $0.boot.balloonSize = $1 },
                      help: "With --balloon: the balloon's target at start (memory the guest is asked to give up), e.g. 128M.",
                      default: { _ in "0" }),
        CommandOption("--marker", [.restore], .text { $0.restore.marker = $1 },
                      help: "Linux: console text whose first appearance after the restore is timed."),
        CommandOption("--quiet", [.boot, .restore], .flag { $0.settings.serialToStdout = false },
                      help: "Do not copy the guest's console to stdout."),
        // Results.
        CommandOption("--stats", allRunning, .flag { $0.stats = true }, help: "Print statistics."),
        CommandOption("--stats-json", allRunning, .text { $0.statsJSON = $1 }, help: "Write statistics as JSON to this file.",
                      completion: .file),
        CommandOption("--fault-map", [.run, .boot], .text { inv, path in
                          inv.faultMap = path
                          inv.settings.faultMap = true
                      }, help: "Draw guest memory by first touch and faults over time to this SVG file.", completion: .file),
        CommandOption("--no-sandbox", allRunning, .flag { $0.settings.sandbox = false },
                      help: "Run without the seccomp filters and with the capabilities axvm was started with (for debugging)."),
        CommandOption("--api-socket", allRunning, .text { $0.settings.apiSocket = $1 },
                      help: "Answer HTTP requests on a Unix socket made at this path (GET /vm; GET, PATCH /balloon {\"amount_mib\": N}); removed at the end.",
                      completion: .file),
        CommandOption("--kvm", [.check, .run, .boot, .restore], .text { $0.settings.kvmPath = $1 }, help: "KVM device.",
                      completion: .file, default: { $0.settings.kvmPath }),
        // Snapshots.
        CommandOption("--snapshot", allRunning, .text { $0.snapshotDirectory = $1 },
                      help: "Take a snapshot into this directory: on --snapshot-on, --snapshot-after or SIGUSR1, whichever comes first.",
                      completion: .directory),
        CommandOption("--snapshot-on", allRunning, .text { $0.snapshotOn = $1 },
                      help: "Take it the first time the guest's console prints this text."),
        CommandOption("--snapshot-after", allRunning, .seconds { $0.snapshotAfter = $1 },
                      help: "Take it this many seconds after the guest starts."),
        CommandOption("--snapshot-and-exit", allRunning, .flag { $0.snapshotAndExit = true },
                      help: "End the run once the snapshot is written (else the guest goes on)."),
        CommandOption("--snapshot-diff", allRunning, .flag { $0.snapshotDiff = true },
                      help: "axvm restore: write only the pages the guest wrote since the restore, over the restored snapshot."),
        // Hidden: experiments and tests.
        CommandOption("--force-kvm-pvm", [.boot], .flag { $0.boot.allowKVMPVM = true },
                      help: "Try even on kvm_pvm (which cannot run a stock kernel).", hidden: true),
        CommandOption("--no-acpi", [.boot], .flag { inv in
                          if inv.boot.firmware == .acpi { inv.boot.firmware = .mpTable }
                      }, help: "x86_64: an MP table instead of ACPI.", hidden: true),
        CommandOption("--no-mp-table", [.boot], .flag { $0.boot.firmware = .none },
                      help: "x86_64: no firmware tables at all.", hidden: true),
        CommandOption("--print-config", [.check, .run, .boot, .restore], .flag { $0.printConfig = true },
                      help: "Print the configuration the run would get, and do not run.", hidden: true),
    ]

    /// The options `subcommand` takes, in the table's order.
    public static func of(_ subcommand: Subcommand) -> [CommandOption] {
        all.filter { $0.subcommands.contains(subcommand) }
    }

    /// The option called `name` that `subcommand` takes.
    public static func named(_ name: String, for subcommand: Subcommand) -> CommandOption? {
        all.first { $0.name == name && $0.subcommands.contains(subcommand) }
    }
}

/// A byte count as the command line writes it: "64M", "4K", "4096".
func formatSize(_ bytes: UInt64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] where bytes != 0 && bytes & ((1 << UInt64(shift)) - 1) == 0 {
        return "\(bytes >> UInt64(shift))\(suffix)"
    }
    return "\(bytes)"
}

/// Seconds as the command line writes them: "30", "0.5".
func formatSeconds(_ s: Double) -> String {
    if s == s.rounded(), s < 1e15 { return "\(Int64(s))" }
    return "\(s)"
}
