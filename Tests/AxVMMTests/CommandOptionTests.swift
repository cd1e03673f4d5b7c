@testable import AxVMM
import Foundation
import Testing

/// The command line (`CommandOptions`, `CommandParser`): every option of every subcommand
/// reaches the configuration its runner receives, in the shared parser and in the Embedded
/// build (which runs the same parser; `--print-config` shows what it resolved).
@Suite struct CommandOptionTests {
    /// For each option: arguments giving it a value no default has, and the lines of
    /// `Invocation.description` (what the runner receives) it must set, by subcommand (a
    /// subcommand not listed: the lines of `.run`). Snapshot options come with `--snapshot`.
    static let samples: [String: (args: [String], lines: [Subcommand: [String]])] = [
        "--kernel": (["--kernel", "vmlinuz-test"], [.boot: ["kernel=vmlinuz-test"]]),
        "--initrd": (["--initrd", "initrd-test"], [.boot: ["initrd=initrd-test"]]),
        "--cmdline": (["--cmdline", "console=hvc0"], [.boot: ["cmdline=console=hvc0"]]),
        "--memory": (["--memory", "512M"], [.run: ["memory_size=536870912"]]),
        "--lazy": (["--lazy"], [:]),  // the default: checked below
        "--populate": (["--populate"], [.run: ["lazy=false"], .restore: ["memtest.lazy=false", "linux.lazy=false"]]),
        "--fault-around": (["--fault-around", "2M"], [.run: ["fault_around=2097152"],
                                                     .restore: ["memtest.fault_around=2097152", "linux.fault_around=2097152"]]),
        "--timeout": (["--timeout", "7.5"], [.run: ["timeout=7.5"], .restore: ["memtest.timeout=7.5", "linux.timeout=7.5"]]),
        "--order": (["--order", "random"], [.run: ["order=random"]]),
        "--stride": (["--stride", "3"], [.run: ["stride=3"]]),
        "--seed": (["--seed", "99"], [.run: ["seed=99"]]),
        "--test-size": (["--test-size", "8M"], [.run: ["test_size=8388608"]]),
        "--sparse": (["--sparse"], [.run: ["sparse=true"]]),
        "--vcpus": (["--vcpus", "3"], [.run: ["vcpus=3"]]),
        "--memtest-mode": (["--memtest-mode", "overlap"], [.run: ["memtest_mode=overlap"]]),
        "--fault-threads": (["--fault-threads", "5"], [.run: ["fault_threads=5"],
                                                       .restore: ["memtest.fault_threads=5", "linux.fault_threads=5"]]),
        "--max-resident": (["--max-resident", "32M"], [.run: ["max_resident=33554432"]]),
        "--init-marker": (["--init-marker", "booted!"], [.boot: ["init_marker=booted!"]]),
        "--marker": (["--marker", "resumed!"], [.restore: ["linux.init_marker=resumed!"]]),
        "--disk": (["--disk", "a.img,ro", "--disk", "b.img"], [.boot: ["disk0=a.img,ro", "disk1=b.img"]]),
        "--rng": (["--rng"], [.boot: ["rng=true"]]),
        "--raw": (["--raw"], [.boot: ["raw_kernel=true"]]),
        "--balloon": (["--balloon"], [.boot: ["balloon=0"]]),
        "--balloon-size": (["--balloon", "--balloon-size", "64M"], [.boot: ["balloon=67108864"]]),
        "--quiet": (["--quiet"], [.boot: ["serial_to_stdout=false"],
                                  .restore: ["memtest.serial_to_stdout=false", "linux.serial_to_stdout=false"]]),
        "--no-sandbox": (["--no-sandbox"], [.run: ["sandbox=false"], .boot: ["sandbox=false"],
                                            .restore: ["memtest.sandbox=false", "linux.sandbox=false"]]),
        "--api-socket": (["--api-socket", "/tmp/a.sock"], [.run: ["api_socket=/tmp/a.sock"], .boot: ["api_socket=/tmp/a.sock"],
                                                           .restore: ["memtest.api_socket=/tmp/a.sock", "linux.api_socket=/tmp/a.sock"]]),
        "--stats": (["--stats"], [.run: ["stats=true"]]),
        "--stats-json": (["--stats-json", "out.json"], [.run: ["stats_json=out.json"]]),
        "--fault-map": (["--fault-map", "map.svg"], [.run: ["fault_map=true", "fault_map_file=map.svg"]]),
        "--kvm": (["--kvm", "/dev/kvm-test"], [.run: ["kvm_path=/dev/kvm-test"],
                                               .restore: ["memtest.kvm_path=/dev/kvm-test", "linux.kvm_path=/dev/kvm-test"]]),
        "--snapshot": (["--snapshot", "snapdir"], [.run: ["snapshot.directory=snapdir", "snapshot.on_signal=true"],
                                                   .restore: ["memtest.snapshot.directory=snapdir", "linux.snapshot.directory=snapdir"]]),
        "--snapshot-on": (["--snapshot", "s", "--snapshot-on", "half"], [.run: ["snapshot.on_text=half"],
                                                                         .restore: ["memtest.snapshot.on_text=half", "linux.snapshot.on_text=half"]]),
        "--snapshot-after": (["--snapshot", "s", "--snapshot-after", "2.5"], [.run: ["snapshot.after_seconds=2.5"],
                                                                              .restore: ["memtest.snapshot.after_seconds=2.5", "linux.snapshot.after_seconds=2.5"]]),
        "--snapshot-and-exit": (["--snapshot", "s", "--snapshot-and-exit"], [.run: ["snapshot.and_exit=true"],
                                                                             .restore: ["memtest.snapshot.and_exit=true", "linux.snapshot.and_exit=true"]]),
        "--snapshot-diff": (["--snapshot", "s", "--snapshot-diff"], [.run: ["snapshot.diff=true"],
                                                                     .restore: ["memtest.snapshot.diff=true", "linux.snapshot.diff=true"]]),
        "--force-kvm-pvm": (["--force-kvm-pvm"], [.boot: ["allow_kvm_pvm=true"]]),
        "--no-acpi": (["--no-acpi"], [.boot: ["firmware=mpTable"]]),
        "--no-mp-table": (["--no-mp-table"], [.boot: ["firmware=none"]]),
        "--print-config": (["--print-config"], [:]),  // checked below: it prints this very description
    ]

    /// The arguments every command line of a subcommand needs.
    static func base(_ s: Subcommand) -> [String] {
        switch s {
        case .check: ["check"]
        case .run: ["run", "guest.bin"]
        case .boot: ["boot", "--kernel", "bzImage"]
        case .restore: ["restore", "snap"]
        }
    }

    /// Every (subcommand, option) pair with its command line and the lines it must set.
    static var cases: [(subcommand: Subcommand, option: String, args: [String], lines: [String])] {
        var out: [(Subcommand, String, [String], [String])] = []
        for o in CommandOptions.all {
            for s in o.subcommands {
                guard let sample = samples[o.name] else { continue }
                var args = base(s)
                // --kernel replaces the base's kernel.
                if o.name == "--kernel" { args = ["boot"] }
                args += sample.args
                out.append((s, o.name, args, sample.lines[s] ?? sample.lines[.run] ?? []))
            }
        }
        return out
    }

    static func invocation(_ args: [String]) throws -> Invocation {
        guard case let .invocation(inv) = try CommandParser.parse(args) else { throw UsageError("not a run", subcommand: nil) }
        return inv
    }

    static func lines(_ inv: Invocation) -> Set<String> { Set(inv.description.split(separator: "\n").map(String.init)) }

    @Test func everyOptionHasASample() {
        for o in CommandOptions.all { #expect(Self.samples[o.name] != nil, "\(o.name) has no sample: add one") }
    }

    /// The heart of it: for every subcommand and every option it takes, a non-default value
    /// shows up in the configuration the runner gets, and not without the option.
    @Test func everyOptionReachesTheRunner() throws {
        for c in Self.cases where c.option == "--print-config" { #expect(try Self.invocation(c.args).printConfig) }
        for c in Self.cases where !["--lazy", "--print-config"].contains(c.option) {
            #expect(!c.lines.isEmpty, "\(c.subcommand) \(c.option): no lines to check")
            let given = Self.lines(try Self.invocation(c.args))
            let defaults = Self.lines(try Self.invocation(Self.base(c.subcommand)
                                                            + (c.args.contains("--snapshot") && c.option != "--snapshot" ? ["--snapshot", "s"] : [])))
            for line in c.lines {
                #expect(given.contains(line), "axvm \(c.args.joined(separator: " ")): no \(line) in\n\(given.sorted().joined(separator: "\n"))")
                #expect(!defaults.contains(line), "\(c.subcommand) \(c.option): \(line) is already the default")
            }
        }
    }

    /// `--lazy` is the default; after `--populate` it is refused (one of the two), alone it
    /// leaves RAM lazy.
    @Test func lazyIsTheDefaultAndExcludesPopulate() throws {
        for s in [Subcommand.run, .boot, .restore] {
            #expect(try Self.invocation(Self.base(s) + ["--lazy"]).settings.lazy)
            #expect(throws: UsageError.self) { try CommandParser.parse(Self.base(s) + ["--populate", "--lazy"]) }
        }
    }

    /// The runner's settings are the configuration's own (no copy to lose a field on the way):
    /// a loader's `settings` is `config.settings`, and a restore's are the command line's for
    /// either kind of guest. The bug this replaced: `axvm restore --fault-threads` was dropped
    /// for Linux snapshots.
    @Test func restoreSettingsReachBothKindsOfGuest() throws {
        let inv = try Self.invocation(["restore", "snap", "--fault-threads", "3", "--timeout", "9", "--populate", "--quiet",
                                       "--kvm", "/dev/k", "--marker", "m", "--snapshot", "s", "--snapshot-diff"])
        for s in [inv.restore.memtestConfig.settings, inv.restore.linuxConfig.settings] {
            #expect(s.faultThreads == 3 && s.timeout == 9 && !s.lazy && !s.serialToStdout && s.kvmPath == "/dev/k")
            #expect(s.snapshot?.diff == true && s.snapshot?.directory == "s" && s.handleInterrupt)
        }
        #expect(inv.restore.memtestConfig.faultAround == RunSettings.memtest.faultAround)
        #expect(inv.restore.linuxConfig.faultAround == RunSettings.linux.faultAround)
        #expect(inv.restore.linuxConfig.initMarker == "m")
        let given = try Self.invocation(["restore", "snap", "--fault-around", "16K"])
        #expect(given.restore.memtestConfig.faultAround == 16 << 10 && given.restore.linuxConfig.faultAround == 16 << 10)
    }

    /// Defaults come from the core (`RunSettings.memtest`, `.linux`), and the help shows them.
    @Test func defaultsAreTheCoresAndTheHelpShowsThem() throws {
        let run = try Self.invocation(Self.base(.run)), boot = try Self.invocation(Self.base(.boot))
        #expect(run.run.memorySize == RunSettings.memtest.memorySize && run.run.faultAround == RunSettings.memtest.faultAround)
        #expect(boot.boot.memorySize == RunSettings.linux.memorySize && boot.boot.faultAround == RunSettings.linux.faultAround)
        #expect(run.run.timeout == RunSettings.memtest.timeout && boot.boot.timeout == RunSettings.linux.timeout)
        #expect(CommandDocs.help(.run).contains("(default: 64M)") && CommandDocs.help(.boot).contains("(default: 256M)"))
        #expect(CommandDocs.help(.boot).contains("(default: 64K)") && CommandDocs.help(.restore).contains("(default: 4K memtest, 64K Linux)"))
        #expect(CommandDocs.help(.run).contains("--lazy/--populate") && CommandDocs.help(.run).contains("(default: --lazy)"))
    }

    /// Help, manual and completions list every visible option of every subcommand, and no
    /// hidden one.
    @Test func documentsComeFromTheTable() throws {
        let manual = CommandDocs.manual()
        let scripts = try ["bash", "zsh", "fish"].map { try #require(CommandDocs.completionScript($0)) }
        for s in Subcommand.allCases {
            let help = CommandDocs.help(s)
            for o in CommandOptions.of(s) {
                #expect(help.contains(o.name) != o.hidden, "\(s) --help and \(o.name)")
                #expect(manual.contains("Fl \(o.name.dropFirst())") != o.hidden, "manual and \(o.name)")
                #expect(scripts[0].contains(o.name) != o.hidden, "bash and \(o.name)")
                #expect(scripts[2].contains("-l \(o.name.dropFirst(2))") != o.hidden, "fish and \(o.name)")
            }
        }
        #expect(manual.contains(".Sh \"EXIT STATUS\"\n.Bd -literal\n") && manual.contains("\n  124    timeout\n"))
        #expect(CommandDocs.completionScript("tcsh") == nil)
    }

    /// swift-argument-parser's wording, which scripts/test-static.sh and users' scripts know.
    @Test func usageErrorsKeepTheirWording() {
        func message(_ args: [String]) -> String {
            do {
                guard case let .invocation(inv) = try CommandParser.parse(args) else { return "" }
                try CommandParser.validate(inv)
                return ""
            } catch { return error.text.split(separator: "\n").first.map(String.init) ?? "" }
        }
        #expect(message(["run", "g", "--memory", "5M1"]).hasPrefix("Error: The value '5M1' is invalid for '--memory <memory>': must be a size in bytes"))
        #expect(message(["run", "g", "--bogus"]) == "Error: Unknown option '--bogus'. Did you mean '--vcpus'?")
        #expect(message(["run"]) == "Error: Missing expected argument '<guest>'")
        #expect(message(["run", "a", "b"]) == "Error: Unexpected argument 'b'")
        #expect(message(["run", "g", "--order", "up"]) == "Error: The value 'up' is invalid for '--order <order>'. Please provide one of 'sequential', 'random' or 'strided'.")
        #expect(message(["run", "g", "--memtest-mode", "x"]) == "Error: The value 'x' is invalid for '--memtest-mode <memtest-mode>'. Please provide one of 'split' and 'overlap'.")
        #expect(message(["run", "g", "--memory"]) == "Error: Missing value for '--memory <memory>'")
        #expect(message(["run", "g", "--stats=1"]) == "Error: The option '--stats' does not take any value, but '1' was specified.")
        #expect(message(["run", "g", "--lazy", "--populate"]) == "Error: Value to be set with flag '--populate' had already been set with flag '--lazy'")
        #expect(message(["run", "g", "--vcpus", "100"]) == "Error: vCPUs 100: must be from 1 to 64")
        #expect(message(["boot", "x"]) == "Error: Missing expected argument '--kernel <kernel>'")
        #expect(message(["boot", "--kernel", "k", "--order", "random"]) == "Error: Unknown option '--order'")
        #expect(message(["restore", "d", "--fault-threads", "0"]) == "Error: fault threads 0: must be from 1 to 64")
        #expect(message(["bogus"]) == "Error: Unexpected argument 'bogus'")
        #expect(message(["run", "g", "--memory=64M", "--", "--x"]) == "Error: Unexpected argument '--x'")
    }

    /// The Embedded build resolves every sample command line as the shared parser does: its
    /// `--print-config` against `Invocation.description`. AXVM_STATIC_AXVM names the static
    /// axvm (scripts/test-static.sh sets it); without it, the one scripts/build-static.sh
    /// leaves for this host, if there is one.
    @Test func embeddedBuildResolvesTheSameConfiguration() throws {
        let root = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let path = ProcessInfo.processInfo.environment["AXVM_STATIC_AXVM"] ?? "\(root)/.build-static/\(GuestArch.host == .aarch64 ? "aarch64" : "x86_64")/axvm"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            #expect(ProcessInfo.processInfo.environment["AXVM_STATIC_AXVM"] == nil, "\(path) is not executable")
            return
        }
        var lines = Self.cases.map { $0.args }
        for s in Subcommand.allCases { lines.append(Self.base(s)) }
        for args in lines {
            let expected = try Self.invocation(args).description + "\n"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: path)
            p.arguments = args + (args.contains("--print-config") ? [] : ["--print-config"])
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            let errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            // A command line that does not validate (e.g. --snapshot-diff outside a restore)
            // must be refused the same way.
            var validates = true
            do { try CommandParser.validate(try Self.invocation(args)) } catch { validates = false }
            if validates {
                #expect(p.terminationStatus == 0 && String(decoding: data, as: UTF8.self) == expected,
                        "static axvm \(args.joined(separator: " ")): status \(p.terminationStatus) \(errors)")
            } else {
                #expect(p.terminationStatus == Frontend.usageStatus, "static axvm \(args.joined(separator: " ")) accepted")
            }
        }
    }
}
