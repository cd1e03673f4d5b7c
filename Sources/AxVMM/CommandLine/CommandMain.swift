extension Frontend {
    /// The whole of `axvm`, for both front ends (Sources/axvm for SwiftPM, Embedded/axvm for
    /// the static build): signals first, arguments checked for UTF-8, parsed with the option
    /// table, validated, and run. Returns the exit status. `version`: what `--version` prints.
    public static func main(argc: Int32, argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>, version: String) -> Int32 {
        // Arguments must be UTF-8 (Swift's `String` would replace a bad byte, so a path or
        // command line would silently change).
        if let bad = invalidUTF8Argument(argv, count: Int(argc)) {
            eprint("Error: \(bad)")
            return usageStatus
        }
        var args: [String] = []
        for i in 1..<Int(max(argc, 1)) {
            if let p = argv[i] { args.append(String(cString: p)) }
        }
        return main(args, version: version)
    }

    /// `main` for arguments already read (after the program name).
    public static func main(_ args: [String], version: String) -> Int32 {
        let command: Command
        do {
            command = try CommandParser.parse(args)
            if case let .invocation(inv) = command { try CommandParser.validate(inv) }
        } catch {
            eprint(error.text)
            return usageStatus
        }
        switch command {
        case let .help(subcommand):
            return printed(CommandDocs.help(subcommand) + "\n")
        case .version:
            return printed(version + "\n")
        case .manual:
            return printed(CommandDocs.manual())
        case let .completionScript(shell):
            return printed(CommandDocs.completionScript(shell) ?? "")
        case let .invocation(inv):
            if inv.printConfig { return printed(inv.description + "\n") }
            // Before any thread: the sandbox's filters (each thread confines itself as it
            // starts), then the terminating signals, which go through `Termination` from here on.
            do throws(VMMError) {
                if inv.subcommand != .check && inv.settings.sandbox {
                    try Sandbox.enable(SandboxPolicy(snapshots: inv.settings.snapshot != nil,
                                                     outputs: inv.statsJSON != nil || inv.faultMap != nil,
                                                     controlSocket: inv.settings.apiSocket != nil))
                }
                try Termination.install()
            } catch {
                eprint("axvm: error: \(error)")
                return 2
            }
            do { try execute(inv) } catch { return error.status }
            return 0
        }
    }

    /// Runs a parsed and validated command line: its configuration goes to the runner as it is.
    public static func execute(_ inv: Invocation) throws(Exit) {
        switch inv.subcommand {
        case .check:
            let ok = check(kvmPath: inv.run.kvmPath)
            try finish(status: ok ? 0 : 1, json: nil, { _ in "" }, text: nil)
        case .run: try run(inv.run, stats: inv.stats, statsJSON: inv.statsJSON, faultMap: inv.faultMap)
        case .boot: try boot(inv.boot, stats: inv.stats, statsJSON: inv.statsJSON, faultMap: inv.faultMap)
        case .restore: try restore(inv.restore, stats: inv.stats, statsJSON: inv.statsJSON)
        }
    }

    /// Text on standard output, then the exit status (`finish`: 0, 74 if it could not be
    /// written, 141 if the reader went away).
    static func printed(_ text: String) -> Int32 {
        do { try finish(status: 0, json: nil, { _ in "" }, text: text) } catch { return error.status }
        return 0
    }
}
