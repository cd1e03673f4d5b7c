/// axvm's subcommands.
public enum Subcommand: String, CaseIterable, Sendable {
    case check, run, boot, restore

    /// One line for `axvm --help`, the manual and the completions.
    public var abstract: String {
        switch self {
        case .check: "Tell whether KVM and userfaultfd are usable here."
        case .run: "Run a guest from guests/build."
        case .boot: "Boot a kernel (Linux: x86_64 bzImage, arm64 Image or Image.gz; a multiboot kernel; an arm64 raw binary) on lazily populated RAM."
        case .restore: "Resume a VM from a snapshot directory (axvm run/boot --snapshot)."
        }
    }

    /// The positional argument (`<guest>`, `<directory>`), nil if none, and its help.
    public var positional: (name: String, help: String)? {
        switch self {
        case .run: ("guest", "Guest image (e.g. guests/build/memtest.bin).")
        case .restore: ("directory", "Snapshot directory.")
        case .check, .boot: nil
        }
    }
}

/// One axvm command line, parsed (`CommandParser`): the subcommand and the configuration its
/// runner receives — `run` for `axvm run` (`Machine.run`), `boot` for `axvm boot`
/// (`LinuxMachine.boot`), `restore` for `axvm restore` (`Snapshots.restore`) — each starting
/// from its own defaults, and the output files. Every option of `CommandOptions.all` writes
/// here and nowhere else; `description` shows it (`--print-config`).
public struct Invocation: Sendable {
    public var subcommand: Subcommand
    /// `axvm run`'s configuration (`check`'s KVM device is in its settings too).
    public var run = VMConfig(guestPath: "")
    /// `axvm boot`'s.
    public var boot = LinuxBootConfig(kernelPath: "")
    /// `axvm restore`'s.
    public var restore = RestoreConfig(directory: "")
    /// `--stats`: print the statistics.
    public var stats = false
    /// `--stats-json FILE`, `--fault-map FILE`.
    public var statsJSON: String?
    public var faultMap: String?
    /// `--print-config` (hidden): print `description` instead of running.
    public var printConfig = false
    /// The snapshot options as given; `CommandParser` makes them the settings' `SnapshotPlan`.
    var snapshotDirectory: String?
    var snapshotOn: String?
    var snapshotAfter: Double?
    var snapshotAndExit = false
    var snapshotDiff = false

    /// A subcommand's defaults: what a command line with no options runs with.
    public init(_ subcommand: Subcommand) {
        self.subcommand = subcommand
        // The command line always ends runs cleanly on signals, and shows a guest's console
        // unless `--quiet`.
        run.handleInterrupt = true
        run.serialToStdout = true
        boot.handleInterrupt = true
        boot.serialToStdout = true
        restore.settings.handleInterrupt = true
        restore.settings.serialToStdout = true
        run.settings.sandbox = true
        boot.settings.sandbox = true
        restore.settings.sandbox = true
    }

    /// The run settings of this subcommand's configuration (`check`: the KVM device).
    public var settings: RunSettings {
        get {
            switch subcommand {
            case .check, .run: run.settings
            case .boot: boot.settings
            case .restore: restore.settings
            }
        }
        set {
            switch subcommand {
            case .check, .run: run.settings = newValue
            case .boot: boot.settings = newValue
            case .restore: restore.settings = newValue
            }
        }
    }

    /// The configuration the runner receives, one `key=value` a line (`--print-config`): the
    /// run settings, the guest's own, the output files. For `restore` the settings of both
    /// kinds of guest a snapshot may hold (`RestoreConfig.memtestConfig`, `.linuxConfig`),
    /// before the snapshot's own configuration (memory size, vCPUs, guest) is laid over them.
    public var description: String {
        var lines = ["subcommand=\(subcommand.rawValue)"]
        func add(_ prefix: String, _ s: RunSettings) {
            lines.append("\(prefix)memory_size=\(s.memorySize)")
            lines.append("\(prefix)lazy=\(s.lazy)")
            lines.append("\(prefix)fault_around=\(s.faultAround)")
            lines.append("\(prefix)timeout=\(s.timeout.map { "\($0)" } ?? "none")")
            lines.append("\(prefix)vcpus=\(s.vcpus)")
            lines.append("\(prefix)fault_threads=\(s.faultThreads.map { "\($0)" } ?? "default")")
            lines.append("\(prefix)max_resident=\(s.maxResident.map { "\($0)" } ?? "none")")
            lines.append("\(prefix)serial_to_stdout=\(s.serialToStdout)")
            lines.append("\(prefix)handle_interrupt=\(s.handleInterrupt)")
            lines.append("\(prefix)kvm_path=\(s.kvmPath)")
            lines.append("\(prefix)fault_map=\(s.faultMap)")
            lines.append("\(prefix)sandbox=\(s.sandbox)")
            lines.append("\(prefix)api_socket=\(s.apiSocket ?? "none")")
            if let p = s.snapshot {
                lines.append("\(prefix)snapshot.directory=\(p.directory)")
                lines.append("\(prefix)snapshot.on_text=\(p.onText ?? "none")")
                lines.append("\(prefix)snapshot.after_seconds=\(p.afterSeconds.map { "\($0)" } ?? "none")")
                lines.append("\(prefix)snapshot.on_signal=\(p.onSignal)")
                lines.append("\(prefix)snapshot.and_exit=\(p.andExit)")
                lines.append("\(prefix)snapshot.diff=\(p.diff)")
            } else {
                lines.append("\(prefix)snapshot=none")
            }
        }
        switch subcommand {
        case .check:
            lines.append("kvm_path=\(run.settings.kvmPath)")
        case .run:
            lines.append("guest=\(run.guestPath)")
            add("", run.settings)
            lines.append("order=\(run.testOrder.name)")
            lines.append("stride=\(run.stridePages.map { "\($0)" } ?? "default")")
            lines.append("seed=\(run.seed)")
            lines.append("test_size=\(run.testSize.map { "\($0)" } ?? "all")")
            lines.append("sparse=\(run.sparse)")
            lines.append("memtest_mode=\(run.memtestMode.name)")
        case .boot:
            lines.append("kernel=\(boot.kernelPath)")
            lines.append("raw_kernel=\(boot.rawKernel)")
            lines.append("initrd=\(boot.initrdPath ?? "none")")
            lines.append("cmdline=\(boot.cmdline)")
            lines.append("init_marker=\(boot.initMarker)")
            lines.append("allow_kvm_pvm=\(boot.allowKVMPVM)")
            lines.append("firmware=\(boot.firmware.rawValue)")
            for (i, d) in boot.disks.enumerated() { lines.append("disk\(i)=\(d.path)\(d.readOnly ? ",ro" : "")") }
            lines.append("rng=\(boot.rng)")
            lines.append("balloon=\(boot.balloon ? "\(boot.balloonSize)" : "none")")
            add("", boot.settings)
        case .restore:
            lines.append("directory=\(restore.directory)")
            let m = restore.memtestConfig, l = restore.linuxConfig
            add("memtest.", m.settings)
            add("linux.", l.settings)
            lines.append("linux.init_marker=\(l.initMarker.isEmpty ? "from the snapshot" : l.initMarker)")
        }
        if subcommand != .check {
            lines.append("stats=\(stats)")
            lines.append("stats_json=\(statsJSON ?? "none")")
            lines.append("fault_map_file=\(faultMap ?? "none")")
        }
        return lines.joined(separator: "\n")
    }
}
