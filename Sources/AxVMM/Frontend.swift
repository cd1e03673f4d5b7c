#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// What both command-line front ends share — the SwiftPM one (swift-argument-parser,
/// Sources/axvm) and the Embedded one (Embedded/axvm, scripts/build-static.sh): the parsing
/// of option values, the `check` report, and running a guest with its statistics and exit
/// status. The front ends only map option names to `VMConfig` fields.
public enum Frontend {
    /// A process exit status to leave with (0 included).
    public struct Exit: Error, Equatable {
        public let status: Int32
        public init(_ status: Int32) { self.status = status }
    }

    /// The exit status for bad option values (BSD sysexits EX_USAGE), as swift-argument-parser uses.
    public static let usageStatus: Int32 = 64

    // --- option values ------------------------------------------------------------------

    /// `--timeout`: seconds (finite, ≥ 0; `Machine.validate` bounds them), `0` or `none`:
    /// no limit. The outer nil: not a number.
    public static func parseTimeout(_ s: String) -> Double?? {
        if s == "none" { return .some(nil) }
        guard let v = Double(s), v.isFinite, v >= 0 else { return nil }
        return .some(v == 0 ? nil : v)
    }

    public static func parseOrder(_ s: String) -> GuestParams.Order? {
        switch s {
        case "sequential", "seq": .sequential
        case "random": .random
        case "strided": .strided
        default: nil
        }
    }

    public static func parseMode(_ s: String) -> GuestParams.Mode? {
        switch s {
        case "split": .split
        case "overlap": .overlap
        default: nil
        }
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
            print("KVM: \(kvmPath) usable, API version 12, vCPU mmap size \(try sys.vcpuMmapSize()) bytes")
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
            print("userfaultfd: not usable: \(Errno.current)")
            ok = false
        }
        switch HostCPU.detect() {
        case .arm64:
            let ipa = system.map { AArch64Host(system: $0).ipaBits } ?? 0
            let target = system.flatMap { AArch64Host.preferredTarget(system: $0) }
            print("KVM flavour: arm64 KVM at EL2, \(AArch64Host.hypMode() ?? "VHE or nVHE unknown (kernel log not readable)")")
            print("  IPA size: \(ipa == 0 ? "40 bits (KVM_CAP_ARM_VM_IPA_SIZE absent)" : "\(ipa) bits"), preferred target: \(target.map { "\($0)" } ?? "unknown")")
            print("host CPU: arm64 (nested faults decoded as stage 2 aborts: ESR_EL2, HPFAR_EL2, FAR_EL2)")
        case .amd:
            print("KVM flavour: \(KVMFlavour.detect())")
            print("host CPU: AMD (nested faults decoded as #NPF)")
        case .intel:
            print("KVM flavour: \(KVMFlavour.detect())")
            print("host CPU: Intel (nested faults decoded as EPT violations)")
        }
        return ok
    }

    // --- run ----------------------------------------------------------------------------

    /// Runs a guest as `axvm run` does: the statistics file checked first, the end of the
    /// run on stderr unless it was a normal guest exit, the statistics if asked for.
    /// Returns normally for status 0; throws the status otherwise (64 usage, 2 set-up, the
    /// guest's code, 3, 124, 130: `RunReport.exitStatus`).
    public static func run(_ config: VMConfig, stats: Bool, statsJSON: String?) throws(Exit) {
        var json = try openStatsFile(statsJSON)
        let report: RunReport
        do {
            report = try Machine.run(config)
        } catch {
            json?.discard()
            eprint("axvm: error: \(error)")
            throw Exit(error.isUsageError ? usageStatus : 2)
        }
        let normal: Bool = if case .guestExit = report.exit { true } else { false }
        if !stats && !normal { eprint("axvm: \(report.exitDescription)") }
        if stats { print(StatsFormat.text(report), terminator: "") }
        try writeStats(json.take(), StatsFormat.json(report))
        if report.exitStatus != 0 { throw Exit(report.exitStatus) }
    }

    /// The `--stats-json` file, opened and checked before the guest runs (a bad path costs
    /// no run): exit status 2 if it cannot be used.
    public static func openStatsFile(_ path: String?) throws(Exit) -> OutputFile? {
        guard let path else { return nil }
        do { return try OutputFile(path: path) } catch {
            eprint("axvm: error: \(error)")
            throw Exit(2)
        }
    }

    /// Writes the statistics into the file from `openStatsFile` (nothing without one); a
    /// failed write or close is exit status 2.
    public static func writeStats(_ file: consuming OutputFile?, _ json: String) throws(Exit) {
        guard let file else { return }
        do { try file.write(json) } catch {
            eprint("axvm: error: \(error)")
            throw Exit(2)
        }
    }

    /// A line on standard error (fd 2; the C `stderr` global is not concurrency-safe).
    public static func eprint(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}
