import AxAddrSpace
/// Human and JSON renderings of a run's statistics.
public enum StatsFormat {
    static func mib(_ b: UInt64) -> String { fixed(Double(b) / 1048576, 1) + " MiB" }
    static func fixed(_ v: Double, _ digits: Int) -> String {
        var p = 1.0
        for _ in 0..<digits { p *= 10 }
        let r = (v * p).rounded() / p
        var s = String(r)
        if let dot = s.firstIndex(of: "."), s.distance(from: dot, to: s.endIndex) - 1 > digits {
            s = String(s[..<s.index(dot, offsetBy: digits + 1)])
        }
        return s
    }
    /// A JSON string literal: quotes, backslashes and newlines escaped, other control
    /// characters replaced by "?".
    static func jsonString(_ x: String) -> String {
        var o = "\""
        for c in x.unicodeScalars {
            switch c {
            case "\"": o += "\\\""
            case "\\": o += "\\\\"
            case "\n": o += "\\n"
            default: if c.value < 0x20 { o += "?" } else { o.unicodeScalars.append(c) }
            }
        }
        return o + "\""
    }
    /// One field a line (the rig's scripts read them with sed), values already JSON.
    static func jsonObject(_ fields: [(String, String)]) -> String {
        "{\n" + fields.map { "  \(jsonString($0.0)): \($0.1)" }.joined(separator: ",\n") + "\n}\n"
    }
    /// The "host check" line: whether AddrSpace and mincore agreed on every RAM page.
    static func hostCheck(_ mismatches: Int) -> String {
        "host check:      " + (mismatches == 0 ? "AddrSpace and mincore agree on every RAM page"
                                                : "\(mismatches) pages disagree between AddrSpace and mincore") + "\n"
    }
    static func micros(_ ns: UInt64) -> String { fixed(Double(ns) / 1000, 1) + " µs" }

    public static func text(_ r: RunReport) -> String {
        let s = r.statistics
        let pct = s.memoryBytes == 0 ? 0 : Double(s.populatedBytes) * 100 / Double(s.memoryBytes)
        var out = ""
        out += "exit:            \(r.exitDescription)\n"
        out += "guest memory:    \(mib(s.memoryBytes)) \(r.lazy ? "lazy" : "populated"), populated \(mib(s.populatedBytes)) (\(fixed(pct, 1))%)\n"
        out += "faults:          \(s.faults), \(s.faultsInTestRegion) in the test region (pages mapped \(s.pagesMappedByFaults), fault-around \(r.faultAround / 1024) KiB; minor \(s.minorFaults))\n"
        out += "fault latency:   p50 \(micros(s.faultP50Nanos)), p99 \(micros(s.faultP99Nanos)), mean \(micros(s.faultMeanNanos))\n"
        if s.faults + s.minorFaults > 0 {
            let total = max(1, s.faultLibraryNanos + s.faultResolveNanos)
            out += "fault split:     handlePageFault \(fixed(Double(s.faultLibraryNanos) * 100 / Double(total), 1))%, fallocate + UFFDIO_CONTINUE + wake \(fixed(Double(s.faultResolveNanos) * 100 / Double(total), 1))%\n"
        }
        out += "nested tables:   \(s.tableFrames) frames\n"
        out += "VMM memory:      RSS \(mib(s.processRSSBytes)) = guest and tables (RssShmem) \(mib(s.shmemRSSBytes)) + VMM overhead \(mib(s.vmmOverheadBytes))\n"
        out += "vCPU exits:      \(s.exits)\n"
        if s.vcpus.count > 1 {
            for (i, v) in s.vcpus.enumerated() {
                out += "  vCPU \(i):        \(v.exits) exits, \(fixed(Double(v.runNanos) / 1e6, 1)) ms\n"
            }
        }
        if s.faultThreads.count > 1 {
            for (i, t) in s.faultThreads.enumerated() {
                out += "  fault thread \(i): \(t.faults) faults, \(t.minorFaults) minor, \(t.pagesMapped) pages, busy \(fixed(Double(t.busyNanos) / 1e6, 1)) ms\n"
            }
        }
        out += "time:            setup \(fixed(s.setupSeconds * 1000, 1)) ms, run \(fixed(s.runSeconds * 1000, 1)) ms, wall \(fixed(s.wallSeconds * 1000, 1)) ms\n"
        if let m = r.memtest {
            if let touched = m.pagesTouched, touched > 0 {
                out += "memtest:         \(touched) pages, checksum 0x\(String(m.checksum, radix: 16)), mismatches \(m.mismatches)\n"
            } else if m.pagesPlanned > 0 {
                out += "memtest:         did not finish (\(m.pagesPlanned) pages planned; no checksum)\n"
            }
        }
        out += snapshotText(s)
        out += StatsFormat.hostCheck(r.residencyMismatches)
        return out
    }

    /// The JSON fields of `axvm run` and `axvm boot` that come from `RunStatistics` alike, in
    /// their order: fault service, the process's memory and exits, the timings.
    static func faultFields(_ s: RunStatistics, faultAround: UInt64) -> [(String, String)] {
        [("minor_faults", "\(s.minorFaults)"),
         ("pages_mapped_by_faults", "\(s.pagesMappedByFaults)"),
         ("fault_around_bytes", "\(faultAround)"),
         ("fault_p50_ns", "\(s.faultP50Nanos)"),
         ("fault_p99_ns", "\(s.faultP99Nanos)"),
         ("fault_mean_ns", "\(s.faultMeanNanos)")]
    }

    static func processFields(_ s: RunStatistics) -> [(String, String)] {
        [("table_frames", "\(s.tableFrames)"),
         ("process_rss_bytes", "\(s.processRSSBytes)"),
         ("shmem_rss_bytes", "\(s.shmemRSSBytes)"),
         ("vmm_overhead_bytes", "\(s.vmmOverheadBytes)"),
         ("exits", "\(s.exits)")]
    }

    static func timeFields(_ s: RunStatistics) -> [(String, String)] {
        [("setup_seconds", "\(s.setupSeconds)"),
         ("run_seconds", "\(s.runSeconds)"),
         ("wall_seconds", "\(s.wallSeconds)")] + snapshotFields(s)
    }

    /// The snapshot taken and the restore, when there were (null otherwise).
    static func snapshotFields(_ s: RunStatistics) -> [(String, String)] {
        let sn = s.snapshot, r = s.restore
        // BinaryInteger, not any T: Embedded Swift prints no value of an unconstrained type.
        func n<T: BinaryInteger>(_ v: T?) -> String { v.map { String($0) } ?? "null" }
        return [("snapshot_directory", sn.map { jsonString($0.directory) } ?? "null"),
                ("snapshot_trigger", sn.map { jsonString($0.trigger) } ?? "null"),
                ("snapshot_pages", n(sn?.pages)),
                ("snapshot_memory_file_bytes", n(sn?.memoryFileBytes)),
                ("snapshot_disk_bytes", n(sn?.diskBytes)),
                ("snapshot_state_bytes", n(sn?.stateBytes)),
                ("snapshot_pause_ns", n(sn?.pauseNanos)),
                ("snapshot_total_ns", n(sn?.totalNanos)),
                ("snapshot_at_ns", n(sn?.atNanos)),
                ("restore_snapshot_pages", n(r?.snapshotPages)),
                ("restore_pages_copied", n(r?.pagesCopied))]
    }

    /// The snapshot and restore lines of the text statistics ("" when neither happened).
    static func snapshotText(_ s: RunStatistics) -> String {
        var out = ""
        if let sn = s.snapshot {
            out += "snapshot:        \(sn.directory) (on \(sn.trigger) at \(fixed(Double(sn.atNanos) / 1e6, 1)) ms): \(sn.pages) pages, memory file \(mib(sn.memoryFileBytes)) (\(mib(sn.diskBytes)) on disk), state \(sn.stateBytes) bytes; vCPUs paused after \(micros(sn.pauseNanos)), written after \(fixed(Double(sn.totalNanos) / 1e6, 1)) ms\n"
        }
        if let r = s.restore {
            out += "restore:         \(r.directory): \(r.pagesCopied) of the snapshot's \(r.snapshotPages) pages copied in\n"
        }
        return out
    }

    /// `exitStatus`: the process's, when it differs from the run's (a signal that came
    /// after the guest ended).
    public static func json(_ r: RunReport, exitStatus: Int32? = nil) -> String {
        let s = r.statistics
        let q = StatsFormat.jsonString
        let m = r.memtest ?? MemtestResult(config: VMConfig(guestPath: ""))
        let vcpuFields: [(String, String)] = [
            ("vcpus", "[" + s.vcpus.map { "{\"exits\": \($0.exits), \"run_ns\": \($0.runNanos)}" }.joined(separator: ", ") + "]"),
            ("fault_threads", "[" + s.faultThreads.map {
                "{\"faults\": \($0.faults), \"minor_faults\": \($0.minorFaults), \"pages_mapped\": \($0.pagesMapped), \"busy_ns\": \($0.busyNanos)}"
            }.joined(separator: ", ") + "]"),
            ("library_populated_frames", "\(s.addrSpace.populatedFrames)"),
            ("library_pages_mapped_by_faults", "\(s.addrSpace.pagesMappedByFaults)"),
            ("vcpu_checksums", "[" + m.vcpuChecksums.map { "\($0)" }.joined(separator: ", ") + "]"),
        ]
        let memtestFields: [(String, String)] = [
            ("checksum", "\(m.checksum)"),
            ("mismatches", "\(m.mismatches)"),
            ("pages_planned", "\(m.pagesPlanned)"),
            ("pages_touched", m.pagesTouched.map { "\($0)" } ?? "null"),
            ("residency_mismatches", "\(r.residencyMismatches)"),
        ]
        var fields: [(String, String)] = [
            ("exit", q(r.exitDescription)),
            ("exit_status", "\(exitStatus ?? r.exitStatus)"),
            ("memory_bytes", "\(s.memoryBytes)"),
            ("lazy", "\(r.lazy)"),
            ("populated_bytes", "\(s.populatedBytes)"),
            ("faults", "\(s.faults)"),
            ("faults_in_test_region", "\(s.faultsInTestRegion)"),
        ]
        fields += faultFields(s, faultAround: r.faultAround) + [
            ("fault_library_ns_total", "\(s.faultLibraryNanos)"),
            ("fault_resolve_ns_total", "\(s.faultResolveNanos)"),
        ]
        fields += processFields(s) + vcpuFields + timeFields(s) + memtestFields
        return StatsFormat.jsonObject(fields)
    }
}
