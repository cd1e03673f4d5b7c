import AxAddrSpace
import KVM

/// What `axvm restore` needs: the snapshot and how to run it.
public struct RestoreConfig: Sendable {
    public var directory: String
    /// How the restored guest runs: paging, timeout, fault threads, console, KVM device, a
    /// snapshot of its own. Its memory size and vCPUs come from the snapshot, its fault-around
    /// from `faultAround` or the guest kind's (`memtestConfig`, `linuxConfig`).
    public var settings = RunSettings.memtest
    /// Pages populated per fault (nil: the guest kind's default: `RunSettings.memtest`'s,
    /// `RunSettings.linux`'s).
    public var faultAround: UInt64?
    /// Linux: console text whose first appearance after the restore is timed (as a boot's
    /// init marker).
    public var marker: String?
    public init(directory: String) { self.directory = directory }

    // The run settings a restore takes, by their own names.
    public var lazy: Bool { get { settings.lazy } set { settings.lazy = newValue } }
    public var timeout: Double? { get { settings.timeout } set { settings.timeout = newValue } }
    public var faultThreads: Int? { get { settings.faultThreads } set { settings.faultThreads = newValue } }
    public var serialToStdout: Bool { get { settings.serialToStdout } set { settings.serialToStdout = newValue } }
    public var handleInterrupt: Bool { get { settings.handleInterrupt } set { settings.handleInterrupt = newValue } }
    public var kvmPath: String { get { settings.kvmPath } set { settings.kvmPath = newValue } }
    public var snapshot: SnapshotPlan? { get { settings.snapshot } set { settings.snapshot = newValue } }

    /// The checks made before the snapshot is read (usage errors): the fault-around window,
    /// the timeout, the fault threads and the snapshot plan (a diff is allowed: the VM is a
    /// restored one).
    public func validate() throws(VMMError) {
        if let fa = faultAround { try Machine.validateMemory(4 << 20, faultAround: fa) }
        if let t = timeout, !(t > 0 && t <= VMConfig.maxTimeout) {
            throw .badValue(what: "timeout", value: "\(t)",
                            reason: "must be a number of seconds above 0 and at most \(Int(VMConfig.maxTimeout)) (one week); 0 or none: no limit")
        }
        if let t = faultThreads, t < 1 || t > 64 {
            throw .badValue(what: "fault threads", value: "\(t)", reason: "must be from 1 to 64")
        }
        try snapshot?.validate()
    }

    /// What a restored memtest guest runs with before its snapshot's configuration is laid
    /// over it (`MemtestLoader.restoring`): these settings, the memtest fault-around unless
    /// one was given.
    public var memtestConfig: VMConfig {
        var c = VMConfig(guestPath: "")
        c.settings = settings
        c.faultAround = faultAround ?? RunSettings.memtest.faultAround
        return c
    }

    /// The same for a Linux guest (`LinuxLoader.restoring`); an empty init marker takes the
    /// snapshot's.
    public var linuxConfig: LinuxBootConfig {
        var c = LinuxBootConfig(kernelPath: "")
        c.settings = settings
        c.faultAround = faultAround ?? RunSettings.linux.faultAround
        c.initMarker = marker ?? ""
        return c
    }
}

/// Runs a restored guest from where its snapshot left it.
struct StartRestored: RestoredLoaderBody {
    let t0: UInt64
    func run<L: GuestLoader>(_ loader: L, _ source: RestoreSource) throws(VMMError) -> RunReport {
        try Runner(loader: loader, restore: source).run(start: t0)
    }
}

/// Restoring snapshots (`axvm restore`).
public enum Snapshots {
    /// Reads and checks the snapshot (before any VM exists), makes the loader of the guest
    /// it holds, and runs it from where it was.
    public static func restore(_ c: RestoreConfig) throws(VMMError) -> RunReport {
        struct Job: Platforms.Job {
            let c: RestoreConfig
            let t0: UInt64
            func run<P: Platform>(_ platform: P) throws(VMMError) -> RunReport {
                try c.validate()
                let source = try RestoreSource(directory: c.directory, platform: platform)
                return try source.withLoader(platform: platform, config: c, t0: t0, StartRestored(t0: t0))
            }
        }
        return try Platforms.withHost(Job(c: c, t0: nowNanos()))
    }
}
