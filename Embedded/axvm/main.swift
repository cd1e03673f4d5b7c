import AxVMM

// The Embedded Swift front end of axvm (scripts/build-static.sh): `check` and `run` with the
// options, values and exit statuses of the SwiftPM front end (Sources/axvm, which uses
// swift-argument-parser; Embedded Swift cannot build it). Values are parsed and validated by
// the shared code (parseByteSize, Frontend, Machine.validate); this file only maps names.

let usage = """
    USAGE: axvm --version | --help | help [<subcommand>]
           axvm check [--kvm <kvm>]
           axvm run <guest> [--memory <memory>] [--lazy|--populate] [--fault-around <size>]
                    [--timeout <seconds>] [--order sequential|random|strided] [--stride <pages>]
                    [--seed <n>] [--test-size <size>] [--sparse] [--vcpus <n>]
                    [--memtest-mode split|overlap] [--fault-threads <n>] [--max-resident <size>]
                    [--stats] [--stats-json <file>] [--fault-map <file.svg>] [--kvm <kvm>]
           axvm boot --kernel <kernel> [--initrd <file>] [--cmdline <text>] [--memory <memory>]
                    [--lazy|--populate] [--fault-around <size>] [--timeout <seconds>] [--vcpus <n>]
                    [--init-marker <text>] [--quiet] [--stats] [--stats-json <file>]
                    [--fault-map <file.svg>] [--kvm <kvm>]
           axvm restore <directory> [--lazy|--populate] [--fault-around <size>] [--timeout <seconds>]
                    [--fault-threads <n>] [--marker <text>] [--quiet] [--stats] [--stats-json <file>]
                    [--kvm <kvm>]
    run, boot and restore also take [--snapshot <dir>] [--snapshot-on <text>]
                    [--snapshot-after <seconds>] [--snapshot-and-exit] [--snapshot-diff]
    (axvm boot: a bzImage on x86_64 hosts, an arm64 Image or Image.gz on arm64 hosts.)
    """

/// `axvm --help`, `axvm help SUBCOMMAND`, `axvm SUBCOMMAND --help`: the usage, the
/// subcommand's examples (all of them for no subcommand) and the exit statuses.
func help(_ subcommand: String?) -> String {
    let examples: String
    switch subcommand {
    case "check": examples = CommandHelp.checkExamples
    case "run": examples = CommandHelp.runExamples
    case "boot": examples = CommandHelp.bootExamples
    case "restore": examples = CommandHelp.restoreExamples
    default:
        examples = CommandHelp.checkExamples + "\n" + CommandHelp.runExamples + "\n" + CommandHelp.bootExamples + "\n"
            + CommandHelp.restoreExamples
    }
    return usage + "\n\n" + examples + "\n\n" + CommandHelp.exitStatuses
}

/// A usage error: the message, the usage text, exit status 64 (as swift-argument-parser).
struct UsageError: Error { let message: String }

@_cdecl("axvm_main")
func axvmMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    // First: the terminating signals go through `Termination` from the start of the process,
    // and arguments must be UTF-8 (as the SwiftPM front end).
    do { try Termination.install() } catch {
        Frontend.eprint("axvm: error: \(error)")
        return 2
    }
    if let bad = Frontend.invalidUTF8Argument(argv, count: Int(argc)) {
        Frontend.eprint("Error: \(bad)")
        return Frontend.usageStatus
    }
    var args: [String] = []
    for i in 1..<Int(max(argc, 1)) {
        if let p = argv[i] { args.append(String(cString: p)) }
    }
    do {
        return try command(args)
    } catch {
        Frontend.eprint("Error: \(error.message)")
        Frontend.eprint(usage)
        return Frontend.usageStatus
    }
}

func command(_ args: [String]) throws(UsageError) -> Int32 {
    guard let verb = args.first else { print(help(nil)); return 0 }
    var options = try Options(Array(args.dropFirst()))
    if options.flag("--help") { print(help(verb)); return 0 }
    switch verb {
    case "-h", "--help", "help":
        print(help(args.dropFirst().first))
        return 0
    case "--version":
        print(CommandHelp.version(commit: buildCommit, build: "Embedded static build"))
        return 0
    case "check":
        try options.expectNoPositionals()
        let kvm = try options.take("--kvm") ?? "/dev/kvm"
        try options.expectEmpty()
        let ok = Frontend.check(kvmPath: kvm)
        do { try Frontend.finish(status: ok ? 0 : 1, json: nil, { _ in "" }, text: nil) } catch { return error.status }
        return 0
    case "run":
        let (config, stats, statsJSON, faultMap) = try runConfig(&options)
        do { try Machine.validate(config) } catch { throw UsageError(message: "\(error)") }
        do { try Frontend.run(config, stats: stats, statsJSON: statsJSON, faultMap: faultMap) } catch { return error.status }
        return 0
    case "boot":
        let (config, stats, statsJSON, faultMap) = try bootConfig(&options)
        do { try LinuxMachine.validate(config) } catch { throw UsageError(message: "\(error)") }
        do { try Frontend.boot(config, stats: stats, statsJSON: statsJSON, faultMap: faultMap) } catch { return error.status }
        return 0
    case "restore":
        let (config, stats, statsJSON) = try restoreConfig(&options)
        do { try config.snapshot?.validate() } catch { throw UsageError(message: "\(error)") }
        do { try Frontend.restore(config, stats: stats, statsJSON: statsJSON) } catch { return error.status }
        return 0
    default:
        throw UsageError(message: "unknown subcommand '\(verb)' (check, run, boot or restore)")
    }
}

/// `axvm restore`'s options into a configuration.
func restoreConfig(_ o: inout Options) throws(UsageError) -> (RestoreConfig, Bool, String?) {
    guard o.positionals.count == 1 else {
        throw UsageError(message: o.positionals.isEmpty ? "Missing expected argument '<directory>'" : "Unexpected argument '\(o.positionals[1])'")
    }
    var c = RestoreConfig(directory: o.positionals[0])
    c.handleInterrupt = true
    let m = try o.memoryOptions()
    if m.memory != nil { throw UsageError(message: "Unknown option '--memory'") }
    c.lazy = m.lazy
    c.faultAround = m.faultAround
    c.timeout = m.timeout ?? c.timeout
    if let v = try o.signedCount("--fault-threads") { c.faultThreads = v }
    c.marker = try o.take("--marker")
    c.serialToStdout = !o.flag("--quiet")
    c.snapshot = try o.snapshotPlan()
    let stats = o.flag("--stats")
    let json = try o.take("--stats-json")
    if let v = try o.take("--kvm") { c.kvmPath = v }
    try o.expectEmpty()
    return (c, stats, json)
}

/// `axvm run`'s options into a configuration (values checked by `Machine.validate` later).
func runConfig(_ o: inout Options) throws(UsageError) -> (VMConfig, Bool, String?, String?) {
    guard o.positionals.count == 1 else {
        throw UsageError(message: o.positionals.isEmpty ? "Missing expected argument '<guest>'" : "Unexpected argument '\(o.positionals[1])'")
    }
    var c = VMConfig(guestPath: o.positionals[0])
    c.serialToStdout = true
    c.handleInterrupt = true
    let m = try o.memoryOptions()
    c.memorySize = m.memory ?? c.memorySize
    c.lazy = m.lazy
    c.faultAround = m.faultAround ?? c.faultAround
    c.timeout = m.timeout ?? c.timeout
    if let s = try o.take("--order") {
        guard let v = Frontend.parseOrder(s) else { throw o.invalidChoice(s, "--order", GuestParams.Order.allCases.map { $0.name }) }
        c.testOrder = v
    }
    if let v = try o.integer("--stride") { c.stridePages = v }
    if let v = try o.integer("--seed") { c.seed = v }
    if let v = try o.size("--test-size") { c.testSize = v }
    c.sparse = o.flag("--sparse")
    if let v = try o.signedCount("--vcpus") { c.vcpus = v }
    if let s = try o.take("--memtest-mode") {
        guard let v = Frontend.parseMode(s) else { throw o.invalidChoice(s, "--memtest-mode", GuestParams.Mode.allCases.map { $0.name }) }
        c.memtestMode = v
    }
    if let v = try o.signedCount("--fault-threads") { c.faultThreads = v }
    if let v = try o.size("--max-resident") { c.maxResident = v }
    let stats = o.flag("--stats")
    let json = try o.take("--stats-json")
    let faultMap = try o.take("--fault-map")
    if let v = try o.take("--kvm") { c.kvmPath = v }
    c.snapshot = try o.snapshotPlan()
    try o.expectEmpty()
    return (c, stats, json, faultMap)
}

/// `axvm boot`'s options into a configuration (values checked by `LinuxMachine.validate`).
func bootConfig(_ o: inout Options) throws(UsageError) -> (LinuxBootConfig, Bool, String?, String?) {
    try o.expectNoPositionals()
    guard let kernel = try o.take("--kernel") else { throw UsageError(message: "Missing expected argument '--kernel <kernel>'") }
    var c = LinuxBootConfig(kernelPath: kernel)
    c.handleInterrupt = true
    c.initrdPath = try o.take("--initrd")
    if let v = try o.take("--cmdline") { c.cmdline = v }
    let m = try o.memoryOptions()
    c.memorySize = m.memory ?? c.memorySize
    c.lazy = m.lazy
    c.faultAround = m.faultAround ?? c.faultAround
    c.timeout = m.timeout ?? c.timeout
    if let v = try o.take("--init-marker") { c.initMarker = v }
    if let v = try o.signedCount("--vcpus") { c.vcpus = v }
    c.serialToStdout = !o.flag("--quiet")
    c.allowKVMPVM = o.flag("--force-kvm-pvm")
    // Hidden, for experiments: the MP table instead of ACPI; no firmware tables at all.
    if o.flag("--no-acpi") { c.firmware = .mpTable }
    if o.flag("--no-mp-table") { c.firmware = .none }
    let stats = o.flag("--stats")
    let json = try o.take("--stats-json")
    let faultMap = try o.take("--fault-map")
    if let v = try o.take("--kvm") { c.kvmPath = v }
    c.snapshot = try o.snapshotPlan()
    try o.expectEmpty()
    return (c, stats, json, faultMap)
}

/// The arguments after the subcommand: `--name value`, `--name=value`, flags, positionals.
/// (No `String?` inside the stored arguments: Optional<String> in an array of tuples was
/// miscompiled at -Osize for aarch64 by Swift 6.3.1 in Embedded mode — the small-string
/// flags of the value came out cleared and reading it crashed.)
struct Options {
    struct Named {
        var name: String
        var value: String
        var hasValue: Bool
    }
    var named: [Named] = []
    var positionals: [String] = []

    init(_ args: [String]) throws(UsageError) {
        var i = 0
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--") {
                if let eq = a.firstIndex(of: "=") {
                    named.append(Named(name: String(a[..<eq]), value: String(a[a.index(after: eq)...]), hasValue: true))
                } else if !Self.flags.contains(a) && i + 1 < args.count {
                    // The value of a non-flag option is the next argument.
                    named.append(Named(name: a, value: args[i + 1], hasValue: true))
                    i += 1
                } else {
                    named.append(Named(name: a, value: "", hasValue: false))
                }
            } else {
                positionals.append(a)
            }
            i += 1
        }
    }

    static let flags: Set<String> = ["--lazy", "--populate", "--sparse", "--stats", "--help", "--quiet", "--force-kvm-pvm", "--no-mp-table", "--no-acpi",
                                     "--snapshot-and-exit", "--snapshot-diff"]

    /// --snapshot DIR and its triggers (SIGUSR1 always, as the SwiftPM front end).
    mutating func snapshotPlan() throws(UsageError) -> SnapshotPlan? {
        let dir = try take("--snapshot"), on = try take("--snapshot-on")
        var after: Double?
        if let s = try take("--snapshot-after") {
            guard let v = Double(s) else { throw invalid(s, "--snapshot-after", "must be a number of seconds") }
            after = v
        }
        let andExit = flag("--snapshot-and-exit"), diff = flag("--snapshot-diff")
        do {
            return try SnapshotPlan.commandLine(directory: dir, onText: on, afterSeconds: after, andExit: andExit, diff: diff)
        } catch {
            throw UsageError(message: "\(error)")
        }
    }

    /// The value of option `name` (the last one given), removed from the list.
    mutating func take(_ name: String) throws(UsageError) -> String? {
        var found = false, hasValue = false
        var value = ""
        var kept: [Named] = []
        for entry in named {
            if entry.name == name {
                found = true
                hasValue = entry.hasValue
                value = entry.value
            } else {
                kept.append(entry)
            }
        }
        named = kept
        guard found else { return nil }
        guard hasValue else { throw UsageError(message: "Missing value for '\(name) <\(name.dropFirst(2))>'") }
        return value
    }

    mutating func flag(_ name: String) -> Bool {
        let before = named.count
        named.removeAll { $0.name == name }
        return named.count != before
    }

    mutating func size(_ name: String) throws(UsageError) -> UInt64? {
        guard let s = try take(name) else { return nil }
        guard let v = parseByteSize(s) else { throw invalid(s, name, Frontend.Rule.size) }
        return v
    }

    mutating func integer(_ name: String) throws(UsageError) -> UInt64? {
        guard let s = try take(name) else { return nil }
        guard let v = UInt64(s) else { throw invalid(s, name, Frontend.Rule.count) }
        return v
    }

    /// A count that validation bounds: a sign is kept, so "-1" is refused naming the range.
    mutating func signedCount(_ name: String) throws(UsageError) -> Int? {
        guard let s = try take(name) else { return nil }
        guard let v = Int(s) else { throw invalid(s, name, Frontend.Rule.count) }
        return v
    }

    func invalid(_ value: String, _ name: String, _ rule: String) -> UsageError {
        // swift-argument-parser's wording, with its <metavariable> from the option's name.
        UsageError(message: "The value '\(value)' is invalid for '\(name) <\(name.dropFirst(2))>': \(rule)")
    }

    /// swift-argument-parser's wording for a value that is none of the names `choices`.
    func invalidChoice(_ value: String, _ name: String, _ choices: [String]) -> UsageError {
        let quoted = choices.map { "'" + $0 + "'" }
        let list = quoted.count > 1 ? quoted.dropLast().joined(separator: ", ") + " or " + (quoted.last ?? "") : quoted.joined()
        return UsageError(message: "The value '\(value)' is invalid for '\(name) <\(name.dropFirst(2))>'. Please provide one of \(list).")
    }

    /// The options `run` and `boot` share: --memory, --lazy/--populate, --fault-around,
    /// --timeout (nil: not given; the timeout's inner nil: no limit).
    mutating func memoryOptions() throws(UsageError) -> (memory: UInt64?, lazy: Bool, faultAround: UInt64?, timeout: Double??) {
        let memory = try size("--memory")
        let lazy = flag("--lazy"), populate = flag("--populate")
        if lazy && populate { throw UsageError(message: "--lazy and --populate cannot be combined") }
        let faultAround = try size("--fault-around")
        var timeout: Double?? = nil
        if let s = try take("--timeout") {
            guard let t = Frontend.parseTimeout(s) else { throw invalid(s, "--timeout", Frontend.Rule.timeout) }
            timeout = .some(t)
        }
        return (memory, !populate, faultAround, timeout)
    }

    func expectEmpty() throws(UsageError) {
        if let first = named.first { throw UsageError(message: "Unknown option '\(first.name)'") }
    }

    func expectNoPositionals() throws(UsageError) {
        if let p = positionals.first { throw UsageError(message: "Unexpected argument '\(p)'") }
    }
}
