#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// What both command-line front ends run — the SwiftPM one (Sources/axvm) and the Embedded
/// one (Embedded/axvm, scripts/build-static.sh), each a call of `main` (CommandLine/): the
/// parsing of option values, the `check` report, and running a guest with its statistics
/// and exit status.
public enum Frontend {
    /// A process exit status to leave with (0 included).
    public struct Exit: Error, Equatable {
        public let status: Int32
        public init(_ status: Int32) { self.status = status }
    }

    /// The exit status for bad option values (BSD sysexits EX_USAGE), as swift-argument-parser's.
    public static let usageStatus: Int32 = 64

    // --- option values ------------------------------------------------------------------

    /// `--timeout`: seconds (finite, ≥ 0; `Machine.validate` bounds them), `0` or `none`:
    /// no limit. The outer nil: not a number.
    public static func parseTimeout(_ s: String) -> Double?? {
        if s == "none" { return .some(nil) }
        guard let v = Double(s), v.isFinite, v >= 0 else { return nil }
        return .some(v == 0 ? nil : v)
    }

    /// What each kind of option value must look like: the second half of the message that
    /// refuses a value both front ends cannot parse ("The value '-1' is invalid for
    /// '--memory <memory>': …").
    public enum Rule {
        public static let size = "must be a size in bytes: a whole number with an optional K, M, G or T suffix (e.g. 4096, 512K, 64M, 1G)"
        public static let timeout = "must be a number of seconds above 0 and at most \(Int(VMConfig.maxTimeout)) (one week), or 0 or none for no limit"
        public static let count = "must be a whole number (no sign)"
    }

    /// The first argument that is not UTF-8, as a usage error naming it and the offending
    /// byte (nil if all are): Swift's `String` would replace the byte, so the path opened or
    /// the command line passed would not be the one given.
    public static func invalidUTF8Argument(_ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>, count: Int) -> String? {
        for i in 1..<max(count, 1) {
            guard let p = argv[i] else { continue }
            let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
            if let offset = firstInvalidUTF8(bytes) {
                return "argument \(i) has the byte 0x\(String(bytes[offset], radix: 16)) at offset \(offset), which is not UTF-8: axvm takes UTF-8 arguments"
            }
        }
        return nil
    }

    /// The offset of the first byte that does not belong to a valid UTF-8 sequence.
    static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
        var it = bytes.makeIterator()
        var decoder = UTF8()
        var offset = 0
        while true {
            switch decoder.decode(&it) {
            case let .scalarValue(v): offset += UTF8.width(v)
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    public static func parseOrder(_ s: String) -> GuestParams.Order? {
        s == "seq" ? .sequential : GuestParams.Order.allCases.first { $0.name == s }
    }

    public static func parseMode(_ s: String) -> GuestParams.Mode? {
        GuestParams.Mode.allCases.first { $0.name == s }
    }

    // --- check --------------------------------------------------------------------------

    /// Prints whether KVM and userfaultfd are usable and what this KVM is; false if either
    /// is not usable.
    public static func check(kvmPath: String) -> Bool {
        var ok = true
        var system: KVMSystem?
        do {
            let sys = try KVMSystem(path: kvmPath)
            system = sys
            say("KVM: \(kvmPath) usable, API version 12, vCPU mmap size \(try sys.vcpuMmapSize()) bytes")
            for (name, cap) in KVMSystem.interestingCapabilities {
                say("  \(name): \(sys.checkExtension(cap))")
            }
        } catch {
            say("KVM: \(error)")
            ok = false
        }
        let fd = ckvm_userfaultfd(O_CLOEXEC)
        if fd >= 0 {
            say("userfaultfd: usable (minor faults on shmem needed: Linux 5.13+)")
            close(fd)
        } else {
            say("userfaultfd: not usable: \(Errno.current)")
            ok = false
        }
        struct Describe: Platforms.Job {
            let system: KVMSystem?
            func run<P: Platform>(_ platform: P) -> [String] { platform.describeHost(system: system) }
        }
        do { for line in try Platforms.withHost(Describe(system: system)) { say(line) } } catch {
            say("host CPU: \(error)")
            ok = false
        }
        return ok
    }

    // --- run ----------------------------------------------------------------------------

    /// Exit status when the results could not be written (standard output, standard error
    /// or the statistics file): BSD sysexits EX_IOERR.
    public static let outputFailureStatus: Int32 = 74

    /// Runs a guest as `axvm run` does: the statistics file checked first, the end of the
    /// run on stderr unless it was a normal guest exit, the statistics if asked for.
    /// Returns normally for status 0; throws the status otherwise (64 usage, 2 set-up, the
    /// guest's code, 3, 124, 128 + a signal: `RunReport.exitStatus`; 74 if the results
    /// could not be written).
    public static func run(_ config: VMConfig, stats: Bool, statsJSON: String?, faultMap: String? = nil) throws(Exit) {
        let inputs = [("guest image", config.guestPath)] + Snapshots.files(restoring: nil, writing: config.snapshot?.directory)
        let json = try openOutputFile(statsJSON, inputs: inputs)
        let map = try openFaultMap(faultMap, statsJSON: statsJSON, inputs: inputs)
        var config = config
        config.faultMap = faultMap != nil
        let report: RunReport
        do {
            report = try Machine.run(config)
        } catch {
            json?.discard()
            map?.discard()
            eprint("axvm: error: \(error)")
            throw Exit(error.isUsageError ? usageStatus : 2)
        }
        let normal: Bool = switch report.exit {
        case .guestExit, .snapshotTaken: true
        default: false
        }
        if !stats && !normal { eprint("axvm: \(report.exitDescription)") }
        try finish(status: report.exitStatus, json: json, { StatsFormat.json(report, exitStatus: $0) },
                   text: stats ? StatsFormat.text(report) : nil, faultMap: map, { FaultMapSVG.render(report) })
    }

    /// Boots a Linux kernel as `axvm boot` does (both front ends): the statistics file
    /// checked first (and refused if it is the kernel or the initrd), the end of the run on
    /// stderr unless the guest rebooted or powered off, the statistics or a summary line.
    public static func boot(_ config: LinuxBootConfig, stats: Bool, statsJSON: String?, faultMap: String? = nil) throws(Exit) {
        let inputs = [("kernel", config.kernelPath)] + (config.initrdPath.map { [("initrd", $0)] } ?? [])
            + Snapshots.files(restoring: nil, writing: config.snapshot?.directory)
        let json = try openOutputFile(statsJSON, inputs: inputs)
        let map = try openFaultMap(faultMap, statsJSON: statsJSON, inputs: inputs)
        var config = config
        config.faultMap = faultMap != nil
        let report: RunReport
        do {
            report = try LinuxMachine.boot(config)
        } catch {
            json?.discard()
            map?.discard()
            eprint("axvm: error: \(error)")
            if case let .vmm(e) = error, e.isUsageError { throw Exit(usageStatus) }
            throw Exit(2)
        }
        guard let linux = report.linux else {  // every Linux run's report has it (`LinuxLoader`)
            eprint("axvm: error: the run's report has no Linux boot result")
            throw Exit(3)
        }
        if !report.exit.isMachineEnd && report.exit != .snapshotTaken(directory: config.snapshot?.directory ?? "") {
            eprint("axvm: \(report.exitDescription)")
        }
        let text = stats ? LinuxStatsFormat.text(report, linux) : LinuxStatsFormat.summary(report, linux) + "\n"
        try finish(status: report.exitStatus, json: json, { LinuxStatsFormat.json(report, linux, exitStatus: $0) }, text: text,
                   faultMap: map, { FaultMapSVG.render(report) })
    }

    /// Restores a snapshot as `axvm restore` does: the statistics file checked first, the
    /// end of the run on stderr unless the guest ended normally, the statistics if asked for.
    public static func restore(_ config: RestoreConfig, stats: Bool, statsJSON: String?) throws(Exit) {
        let inputs = Snapshots.files(restoring: config.directory, writing: config.snapshot?.directory)
        let json = try openOutputFile(statsJSON, inputs: inputs)
        let report: RunReport
        do {
            report = try Snapshots.restore(config)
        } catch {
            json?.discard()
            eprint("axvm: error: \(error)")
            throw Exit(error.isUsageError ? usageStatus : 2)
        }
        let normal: Bool = switch report.exit {
        case .guestExit, .snapshotTaken: true
        default: report.exit.isMachineEnd
        }
        if !stats && !normal { eprint("axvm: \(report.exitDescription)") }
        let text: String? = if stats { StatsFormat.text(report) } else if let l = report.linux {
            LinuxStatsFormat.summary(report, l) + "\n"
        } else { nil }
        try finish(status: report.exitStatus, json: json, { status in
            if let l = report.linux { return LinuxStatsFormat.json(report, l, exitStatus: status) }
            return StatsFormat.json(report, exitStatus: status)
        }, text: text)
    }

    /// The end of every run: the statistics file and the fault map written (before standard
    /// output, which may be a closed terminal), the text printed, then the exit status — 128 + the
    /// signal if a terminating signal arrived at any time (also while the results were
    /// written), else 74 if a write failed, else `status`. `jsonText` makes the JSON for
    /// the exit status it will report. Throws any status but 0.
    public static func finish(status: Int32, json: consuming OutputFile?, _ jsonText: (Int32) -> String,
                              text: String?, faultMap: consuming OutputFile? = nil,
                              _ faultMapText: () -> String = { "" }) throws(Exit) {
        func current() -> Int32 { Termination.signal.map { 128 + $0 } ?? status }
        var failed = false
        if let file = json.take() {
            do { try file.write(jsonText(current())) } catch {
                eprint("axvm: error: \(error)")
                failed = true
            }
        }
        if let file = faultMap.take() {
            do { try file.write(faultMapText()) } catch {
                eprint("axvm: error: \(error)")
                failed = true
            }
        }
        if let text { StandardStreams.out(text) }
        if let signal = Termination.signal { throw Exit(128 + signal) }
        if let f = StandardStreams.failure {
            eprint("axvm: error: \(f)")
            failed = true
        }
        if failed { throw Exit(outputFailureStatus) }
        if status != 0 { throw Exit(status) }
    }

    /// An output file (`--stats-json`, `--fault-map`), checked before the guest runs (a bad
    /// path costs no run; nothing is written to it until the results are complete): exit
    /// status 2 if it cannot be used or is one of `inputs` (what each is, its path).
    public static func openOutputFile(_ path: String?, inputs: [(String, String)]) throws(Exit) -> OutputFile? {
        guard let path else { return nil }
        do { return try OutputFile(path: path, inputs: inputs) } catch {
            eprint("axvm: error: \(error)")
            throw Exit(2)
        }
    }

    /// The `--fault-map` file: as `openOutputFile`, and not the statistics file either (by
    /// name, as a new file has no inode yet to compare).
    static func openFaultMap(_ path: String?, statsJSON: String?, inputs: [(String, String)]) throws(Exit) -> OutputFile? {
        if let path, let statsJSON, path == statsJSON {
            eprint("axvm: error: \(path): is also the statistics file (--stats-json)")
            throw Exit(2)
        }
        return try openOutputFile(path, inputs: inputs + (statsJSON.map { [("statistics file", $0)] } ?? []))
    }

    /// A line on standard error (fd 2; the C `stderr` global is not concurrency-safe).
    public static func eprint(_ line: String) { StandardStreams.err(line) }

    /// A line on standard output, checked (`StandardStreams`).
    public static func say(_ line: String) { StandardStreams.out(line + "\n") }
}
