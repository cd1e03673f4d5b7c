/// Human and JSON renderings of a Linux boot's report (keys shared with `StatsFormat` where
/// the meaning is the same).
public enum LinuxStatsFormat {
    static func mib(_ b: UInt64) -> String { StatsFormat.fixed(Double(b) / 1048576, 1) + " MiB" }
    static func micros(_ ns: UInt64) -> String { StatsFormat.fixed(Double(ns) / 1000, 1) + " µs" }

    /// The demo line: how much of its RAM Linux touched.
    public static func summary(_ r: RunReport, _ l: LinuxBootResult) -> String {
        let s = r.statistics
        let kind = l.config.lazy ? "lazy" : "populated"
        if l.multiboot {
            return "multiboot kernel ran with \(s.memoryBytes >> 20) MiB of \(kind) RAM and touched \(mib(s.populatedBytes)) (\(s.populatedBytes / 4096) pages)"
        }
        let marker = l.initMarkerSeconds.map { ", reached init in \(StatsFormat.fixed($0, 2)) s" } ?? ", never reached init"
        return "Linux booted with \(s.memoryBytes >> 20) MiB of \(kind) RAM\(marker) and touched \(mib(s.populatedBytes)) (\(s.populatedBytes / 4096) pages)"
    }

    public static func text(_ r: RunReport, _ l: LinuxBootResult) -> String {
        let s = r.statistics
        let pct = s.memoryBytes == 0 ? 0 : Double(s.populatedBytes) * 100 / Double(s.memoryBytes)
        var out = ""
        out += "exit:            \(r.exitDescription)\n"
        if !l.multiboot { out += "init marker:     " + (l.initMarkerSeconds.map { "at \(StatsFormat.fixed($0, 3)) s after start" } ?? "not seen") + " (\"\(l.config.initMarker)\")\n" }
        if let m = r.memTotalKiB { out += "guest MemTotal:  \(m) kB\n" }
        out += "guest memory:    \(mib(s.memoryBytes)) \(l.config.lazy ? "lazy" : "populated"), populated \(mib(s.populatedBytes)) = \(s.populatedBytes / 4096) pages (\(StatsFormat.fixed(pct, 1))%)"
        if let p = l.populatedAtMarker { out += ", \(mib(p)) at the init marker" }
        out += "\n"
        out += "faults:          \(s.faults) (pages mapped \(s.pagesMappedByFaults), fault-around \(l.config.faultAround / 1024) KiB; minor \(s.minorFaults))\n"
        out += "fault latency:   p50 \(micros(s.faultP50Nanos)), p99 \(micros(s.faultP99Nanos)), mean \(micros(s.faultMeanNanos))\n"
        out += "nested tables:   \(s.tableFrames) frames\n"
        out += "VMM memory:      RSS \(mib(s.processRSSBytes)) = guest and tables (RssShmem) \(mib(s.shmemRSSBytes)) + VMM overhead \(mib(s.vmmOverheadBytes))\n"
        out += "vCPU exits:      \(s.exits) on \(l.config.vcpus) vCPU\(l.config.vcpus == 1 ? "" : "s")"
        // x86's edge-triggered UART interrupt needs help (`IRQResampler`); arm64's SPI is a level.
        out += r.arch.linux.resamplesSerialIRQ ? " (UART interrupt re-delivered \(l.serialIRQResamples) times, halted vCPU woken \(l.haltedWakeups) times)\n" : "\n"
        for w in l.interruptWaits { out += "interrupt wait:  \(w)\n" }
        if let b = l.balloon { out += balloonText(b, refaulted: s.refaultedPages) }
        out += "time:            setup \(StatsFormat.fixed(s.setupSeconds * 1000, 1)) ms, run \(StatsFormat.fixed(s.runSeconds * 1000, 1)) ms, wall \(StatsFormat.fixed(s.wallSeconds * 1000, 1)) ms\n"
        out += StatsFormat.snapshotText(s)
        out += StatsFormat.hostCheck(r.residencyMismatches)
        out += summary(r, l) + "\n"
        return out
    }

    /// `exitStatus`: the process's, when it differs from the run's (see `StatsFormat.json`).
    public static func json(_ r: RunReport, _ l: LinuxBootResult, exitStatus: Int32? = nil) -> String {
        let s = r.statistics
        let q = StatsFormat.jsonString
        var fields: [(String, String)] = [
            ("exit", q(r.exitDescription)),
            ("exit_status", "\(exitStatus ?? r.exitStatus)"),
            ("memory_bytes", "\(s.memoryBytes)"),
            ("lazy", "\(l.config.lazy)"),
            ("vcpus", "\(l.config.vcpus)"),
            ("populated_bytes", "\(s.populatedBytes)"),
            ("populated_pages", "\(s.populatedBytes / 4096)"),
            ("populated_at_marker_bytes", l.populatedAtMarker.map { "\($0)" } ?? "null"),
            ("init_marker_seconds", l.initMarkerSeconds.map { "\($0)" } ?? "null"),
            ("mem_total_kib", r.memTotalKiB.map { "\($0)" } ?? "null"),
            ("faults", "\(s.faults)"),
        ]
        fields += StatsFormat.faultFields(s, faultAround: l.config.faultAround)
        fields += StatsFormat.processFields(s)
        fields += [
            ("serial_irq_resamples", "\(l.serialIRQResamples)"),
            ("halted_wakeups", "\(l.haltedWakeups)"),
            ("interrupt_waits", "[" + l.interruptWaits.map(q).joined(separator: ", ") + "]"),
        ]
        fields += balloonFields(l.balloon, refaulted: s.refaultedPages)
        fields += StatsFormat.timeFields(s)
        fields += [
            ("residency_mismatches", "\(r.residencyMismatches)"),
            ("kernel_cmdline", q(l.config.cmdline)),
            ("initrd_address", "\(l.initrdAddress)"),
            ("initrd_bytes", "\(l.initrdSize)"),
        ]
        return StatsFormat.jsonObject(fields)
    }

    /// The balloon's lines: target and holding, what went back and came back, the guest's numbers.
    static func balloonText(_ b: BalloonCounters, refaulted: Int) -> String {
        var out = "balloon:         target \(b.targetPages) pages, the guest holds \(b.actualPages); inflated \(b.inflatedPages), deflated \(b.deflatedPages)\n"
        out += "free pages:      \(b.reports) reports of \(b.reportedPages) pages; \(mib(b.returnedBytes)) went back to the host; \(refaulted) pages faulted in again"
        out += b.refusedRanges > 0 ? "; \(b.refusedRanges) ranges refused (not guest RAM)\n" : "\n"
        if !b.guestStats.isEmpty {
            out += "guest balloon:   " + b.guestStats.map { "\($0.name) \($0.value)" }.joined(separator: ", ") + " (\(b.statsUpdates) updates)\n"
        }
        return out
    }

    /// Flat keys (null without a balloon), and the guest's statistics as an object.
    static func balloonFields(_ b: BalloonCounters?, refaulted: Int) -> [(String, String)] {
        func v(_ f: (BalloonCounters) -> String) -> String { b.map(f) ?? "null" }
        return [
            ("refaulted_pages", "\(refaulted)"),
            ("balloon_target_pages", v { "\($0.targetPages)" }),
            ("balloon_actual_pages", v { "\($0.actualPages)" }),
            ("balloon_inflated_pages", v { "\($0.inflatedPages)" }),
            ("balloon_deflated_pages", v { "\($0.deflatedPages)" }),
            ("balloon_reports", v { "\($0.reports)" }),
            ("balloon_reported_pages", v { "\($0.reportedPages)" }),
            ("balloon_returned_bytes", v { "\($0.returnedBytes)" }),
            ("balloon_refused_ranges", v { "\($0.refusedRanges)" }),
            ("balloon_stats_updates", v { "\($0.statsUpdates)" }),
            ("balloon_guest_stats", v { "{" + $0.guestStats.map { "\(StatsFormat.jsonString($0.name)): \($0.value)" }.joined(separator: ", ") + "}" }),
        ]
    }
}
