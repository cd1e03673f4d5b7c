/// A command line that cannot run: the message (swift-argument-parser's wording, which axvm
/// kept when it stopped using it), what the help says of the argument at fault, and the
/// subcommand whose usage to show. Exit status 64 (`Frontend.usageStatus`).
public struct UsageError: Error, Sendable {
    public let message: String
    /// "--memory <memory>  Guest RAM, …": the option or argument the message is about.
    public let help: String?
    public let subcommand: Subcommand?
    init(_ message: String, help: String? = nil, subcommand: Subcommand?) {
        self.message = message
        self.help = help
        self.subcommand = subcommand
    }

    /// What goes to standard error: the message, the help of the argument at fault, the
    /// usage and where the help is.
    public var text: String {
        var lines = ["Error: " + message]
        if let help { lines.append("Help:  " + help) }
        lines.append("Usage: " + CommandDocs.usage(subcommand))
        lines.append("  See 'axvm " + (subcommand.map { $0.rawValue + " " } ?? "") + "--help' for more information.")
        return lines.joined(separator: "\n")
    }
}

/// What a command line asks for.
public enum Command: Sendable {
    /// Help on axvm (nil) or on a subcommand.
    case help(Subcommand?)
    case version
    /// `--generate-completion-script bash|zsh|fish`.
    case completionScript(String)
    /// `--generate-manual`: the manual page (roff).
    case manual
    case invocation(Invocation)
}

/// Parses axvm's command line with the option table (`CommandOptions`), in both front ends.
public enum CommandParser {
    /// The arguments after the program name. Option values are parsed and the snapshot plan
    /// made; the configuration is not validated yet (`validate`).
    public static func parse(_ args: [String]) throws(UsageError) -> Command {
        guard let first = args.first else { return .help(nil) }
        let rest = Array(args.dropFirst())
        switch first {
        case "-h", "--help": return .help(nil)
        case "help":
            guard let name = rest.first else { return .help(nil) }
            return .help(Subcommand(rawValue: name))
        case "--version": return .version
        case "--generate-manual": return .manual
        case "--generate-completion-script":
            guard let shell = rest.first else {
                throw UsageError("Missing value for '--generate-completion-script <shell>'", subcommand: nil)
            }
            guard ["bash", "zsh", "fish"].contains(shell) else {
                throw UsageError("The value '\(shell)' is invalid for '--generate-completion-script <shell>'. Please provide one of 'bash', 'zsh' or 'fish'.",
                                 subcommand: nil)
            }
            return .completionScript(shell)
        default: break
        }
        guard let subcommand = Subcommand(rawValue: first) else {
            if first.hasPrefix("-") { throw UsageError("Unknown option '\(first)'", subcommand: nil) }
            throw UsageError("Unexpected argument '\(first)'", subcommand: nil)
        }
        if rest.contains(where: { $0 == "--help" || $0 == "-h" }) { return .help(subcommand) }
        return .invocation(try parse(subcommand, rest))
    }

    /// A subcommand's arguments into its configuration.
    public static func parse(_ subcommand: Subcommand, _ args: [String]) throws(UsageError) -> Invocation {
        var inv = Invocation(subcommand)
        var positionals: [String] = []
        var groups: [(group: String, flag: String)] = []
        var given: [String] = []
        var i = 0
        var optionsEnded = false
        while i < args.count {
            let arg = args[i]
            i += 1
            if optionsEnded || !arg.hasPrefix("-") || arg == "-" {
                positionals.append(arg)
                continue
            }
            if arg == "--" {
                optionsEnded = true
                continue
            }
            var name = arg
            var inline: String?
            if let eq = arg.firstIndex(of: "=") {
                name = String(arg[..<eq])
                inline = String(arg[arg.index(after: eq)...])
            }
            guard let option = CommandOptions.named(name, for: subcommand) else {
                throw UsageError("Unknown option '\(name)'" + suggestion(name, subcommand), subcommand: subcommand)
            }
            given.append(option.name)
            if case let .flag(apply) = option.value {
                if let inline {
                    throw UsageError("The option '\(name)' does not take any value, but '\(inline)' was specified.", subcommand: subcommand)
                }
                if let g = option.group {
                    if let other = groups.first(where: { $0.group == g && $0.flag != name }) {
                        throw UsageError("Value to be set with flag '\(name)' had already been set with flag '\(other.flag)'",
                                         subcommand: subcommand)
                    }
                    groups.append((g, name))
                }
                apply(&inv)
                continue
            }
            // The value: after `=`, or the next argument whatever it looks like (so "-1" is
            // a value, refused naming the rule).
            let text: String
            if let inline {
                text = inline
            } else if i < args.count {
                text = args[i]
                i += 1
            } else {
                throw UsageError("Missing value for '\(option.synopsis)'", help: helpLine(option, subcommand), subcommand: subcommand)
            }
            try apply(option, text, to: &inv)
        }
        if subcommand == .boot && !given.contains("--kernel") {
            let kernel = CommandOptions.named("--kernel", for: .boot)
            throw UsageError("Missing expected argument '--kernel <kernel>'", help: kernel.map { helpLine($0, .boot) },
                             subcommand: subcommand)
        }
        if let p = subcommand.positional {
            guard let path = positionals.first else {
                throw UsageError("Missing expected argument '<\(p.name)>'", help: "<\(p.name)>  \(p.help)", subcommand: subcommand)
            }
            if subcommand == .run { inv.run.guestPath = path } else { inv.restore.directory = path }
            positionals.removeFirst()
        }
        if let extra = positionals.first { throw UsageError("Unexpected argument '\(extra)'", subcommand: subcommand) }
        if subcommand != .check {
            do {
                inv.settings.snapshot = try SnapshotPlan.commandLine(directory: inv.snapshotDirectory, onText: inv.snapshotOn,
                                                                     afterSeconds: inv.snapshotAfter, andExit: inv.snapshotAndExit,
                                                                     diff: inv.snapshotDiff)
            } catch {
                throw UsageError("\(error)", subcommand: subcommand)
            }
        }
        return inv
    }

    /// The checks made before anything runs (`Machine.validate`, `LinuxMachine.validate`,
    /// `RestoreConfig.validate`): a value out of range is a usage error.
    public static func validate(_ inv: Invocation) throws(UsageError) {
        do {
            switch inv.subcommand {
            case .check: break
            case .run: try Machine.validate(inv.run)
            case .boot: try LinuxMachine.validate(inv.boot)
            case .restore: try inv.restore.validate()
            }
        } catch {
            throw UsageError("\(error)", subcommand: inv.subcommand)
        }
    }

    /// An option's value parsed by its kind, into the configuration.
    static func apply(_ option: CommandOption, _ text: String, to inv: inout Invocation) throws(UsageError) {
        func invalid(_ rule: String) -> UsageError {
            UsageError("The value '\(text)' is invalid for '\(option.synopsis)': \(rule)", help: helpLine(option, inv.subcommand),
                       subcommand: inv.subcommand)
        }
        switch option.value {
        case let .flag(apply): apply(&inv)
        case let .size(apply):
            guard let v = parseByteSize(text) else { throw invalid(Frontend.Rule.size) }
            apply(&inv, v)
        case let .count(apply):
            guard let v = Int(text) else { throw invalid(Frontend.Rule.count) }
            apply(&inv, v)
        case let .whole(apply):
            guard let v = UInt64(text) else { throw invalid(Frontend.Rule.count) }
            apply(&inv, v)
        case let .timeout(apply):
            guard let v = Frontend.parseTimeout(text) else { throw invalid(Frontend.Rule.timeout) }
            apply(&inv, v)
        case let .seconds(apply):
            guard let v = Double(text) else { throw invalid("must be a number of seconds") }
            apply(&inv, v)
        case let .text(apply): apply(&inv, text)
        case let .choice(names, apply):
            guard apply(&inv, text) else {
                let quoted = names.map { "'" + $0.0 + "'" }
                let list = quoted.count > 2 ? quoted.dropLast().joined(separator: ", ") + " or " + (quoted.last ?? "")
                    : quoted.joined(separator: " and ")
                throw UsageError("The value '\(text)' is invalid for '\(option.synopsis)'. Please provide one of \(list).",
                                 help: helpLine(option, inv.subcommand), subcommand: inv.subcommand)
            }
        }
    }

    static func helpLine(_ option: CommandOption, _ subcommand: Subcommand) -> String {
        option.synopsis + "  " + option.help(for: subcommand)
    }

    /// ". Did you mean '--vcpus'?" for a name close to one the subcommand takes.
    static func suggestion(_ name: String, _ subcommand: Subcommand) -> String {
        var best: (String, Int)?
        for o in CommandOptions.of(subcommand) where !o.hidden {
            let d = editDistance(Array(name.utf8), Array(o.name.utf8))
            if d <= 3 && d < (best?.1 ?? Int.max) { best = (o.name, d) }
        }
        return best.map { ". Did you mean '\($0.0)'?" } ?? ""
    }

    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return row[b.count]
    }
}
