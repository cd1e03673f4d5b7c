import AxAddrSpace
import KVM

/// What `axvm restore` needs: the snapshot and how to run it.
public struct RestoreConfig: Sendable {
    public var directory: String
    /// Fill pages from the snapshot on first touch (true) or all before the vCPUs start.
    public var lazy = true
    /// Pages populated per fault (nil: the guest kind's default: 4 KiB memtest, 64 KiB Linux).
    public var faultAround: UInt64?
    public var timeout: Double? = 30
    public var faultThreads: Int?
    public var serialToStdout = false
    public var handleInterrupt = false
    public var kvmPath = "/dev/kvm"
    /// Take a snapshot of the restored VM too.
    public var snapshot: SnapshotPlan?
    /// Linux: console text whose first appearance after the restore is timed (as a boot's
    /// init marker).
    public var marker: String?
    public init(directory: String) { self.directory = directory }
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
                if let fa = c.faultAround { try Machine.validateMemory(4 << 20, faultAround: fa) }
                let source = try RestoreSource(directory: c.directory, platform: platform)
                let path = c.directory + "/" + SnapshotState.stateFile
                switch source.state.kind {
                case "memtest":
                    var base = VMConfig(guestPath: "")
                    base.lazy = c.lazy
                    base.faultAround = c.faultAround ?? 4096
                    base.timeout = c.timeout
                    base.faultThreads = c.faultThreads
                    base.serialToStdout = c.serialToStdout
                    base.handleInterrupt = c.handleInterrupt
                    base.kvmPath = c.kvmPath
                    base.snapshot = c.snapshot
                    let loader = try MemtestLoader.restoring(platform: platform, bytes: source.state.loader, path: path, base: base)
                    guard loader.config.vcpus == source.state.vcpus.count, loader.config.memorySize == source.state.memorySize else {
                        throw .snapshot(path: path, field: "loader", reason: "its vCPUs or memory size differ from the snapshot's")
                    }
                    return try Runner(loader: loader, restore: source).run(start: t0)
                case "linux":
                    #if arch(x86_64)
                    var base = LinuxBootConfig(kernelPath: "")
                    base.lazy = c.lazy
                    base.faultAround = c.faultAround ?? base.faultAround
                    base.timeout = c.timeout
                    base.serialToStdout = c.serialToStdout
                    base.handleInterrupt = c.handleInterrupt
                    base.kvmPath = c.kvmPath
                    base.snapshot = c.snapshot
                    base.initMarker = c.marker ?? ""
                    let ram = source.state.regions.filter { !$0.readOnly }.map { $0.range }
                    let loader = try LinuxLoader.restoring(platform: platform, bytes: source.state.loader, path: path, ram: ram,
                                                           base: base, t0: t0)
                    guard loader.config.vcpus == source.state.vcpus.count else {
                        throw .snapshot(path: path, field: "loader", reason: "its vCPUs differ from the snapshot's")
                    }
                    return try Runner(loader: loader, restore: source).run(start: t0)
                    #else
                    throw .snapshot(path: path, field: "arch", reason: "a Linux snapshot restores on x86_64 only so far")
                    #endif
                default:
                    throw .snapshot(path: path, field: "guest kind", reason: "\(source.state.kind): this axvm restores memtest and Linux guests")
                }
            }
        }
        return try Platforms.withHost(Job(c: c, t0: nowNanos()))
    }
}
