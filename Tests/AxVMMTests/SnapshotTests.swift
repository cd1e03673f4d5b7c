import AxVMM
import Glibc
import Testing

/// Snapshots on real KVM: a memtest guest paused half-way through writing its pattern
/// (vCPU 0 prints "memtest: halfway"), saved, and restored in a new VM whose pages come
/// from the snapshot on first touch; it must finish with the checksum worked out here, as
/// an uninterrupted run does. Then every kind of damaged snapshot is refused, naming the
/// file and the field.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here (set AXVM_REQUIRE_KVM=1 to fail instead)"), .serialized)
struct SnapshotTests {
    static let memory: UInt64 = 32 << 20

    /// The memtest configuration of these tests.
    static func config(vcpus: Int = 1, faultAround: UInt64 = 4096) -> VMConfig {
        var c = VMConfig(guestPath: guestPath("memtest"))
        c.memorySize = memory
        c.vcpus = vcpus
        c.faultAround = faultAround
        c.testOrder = .random
        c.seed = 11
        c.timeout = 60
        return c
    }

    /// Runs memtest to its half-way mark and snapshots it into `dir`; returns the report.
    static func snapshotHalfway(_ c: VMConfig, into dir: String) throws -> RunReport {
        var c = c
        var plan = SnapshotPlan(directory: dir)
        plan.onText = "memtest: halfway"
        plan.andExit = true
        c.snapshot = plan
        return try Machine.run(c)
    }

    static func restore(_ dir: String, lazy: Bool = true, faultAround: UInt64? = nil) throws -> RunReport {
        var r = RestoreConfig(directory: dir)
        r.lazy = lazy
        r.faultAround = faultAround
        r.timeout = 60
        return try Snapshots.restore(r)
    }

    @Test(arguments: [(1, UInt64(4096), true), (4, UInt64(4096), true), (1, UInt64(2 << 20), true), (2, UInt64(64 << 10), false)])
    func restoredGuestFinishesWithTheChecksumOfAnUninterruptedRun(vcpus: Int, faultAround: UInt64, lazy: Bool) throws {
        let dir = temporaryPath("snap-\(vcpus)-\(faultAround)-\(lazy)")
        defer { removeSnapshot(dir) }
        let c = Self.config(vcpus: vcpus, faultAround: faultAround)
        let params = Machine.guestParamsForTests(c)
        let expected = expectedChecksum(params)

        let taken = try Self.snapshotHalfway(c, into: dir)
        #expect(taken.exit == .snapshotTaken(directory: dir))
        #expect(taken.exitStatus == 0)
        let snap = try #require(taken.statistics.snapshot)
        #expect(snap.trigger == "console text")
        // Half-way: about half the test pages written (vCPU 0's half; the others near
        // theirs). Populated RAM, or 2 MiB windows in random order, hold them all by then.
        let fraction = Double(snap.pages) / Double(params.testPages)
        if lazy && faultAround == 4096 {
            #expect(fraction > 0.25 && fraction < 0.85, "snapshot holds \(snap.pages) of \(params.testPages) test pages")
        }
        #expect(snap.pages <= Int(Self.memory + VMConfig.romSize) / 4096)
        // The memory file holds the populated pages only: its blocks on disk, not its size.
        #expect(snap.memoryFileBytes == Self.memory + VMConfig.romSize)
        #expect(snap.diskBytes <= UInt64(snap.pages) * 4096 + (1 << 20), "\(snap.diskBytes) bytes on disk for \(snap.pages) pages")
        #expect(taken.memtest?.pagesTouched == nil)

        let r = try Self.restore(dir, lazy: lazy)
        #expect(r.exit == .guestExit(code: 0), "\(r.exitDescription)")
        #expect(r.memtest?.checksum == expected)
        #expect(r.memtest?.mismatches == 0)
        #expect(r.residencyMismatches == 0)
        let restored = try #require(r.statistics.restore)
        #expect(restored.snapshotPages == snap.pages)
        if lazy {
            // Lazily, only what the guest touched again came in, and each page once.
            #expect(restored.pagesCopied <= snap.pages)
            #expect(r.statistics.faults > 0)
        } else {
            #expect(restored.pagesCopied == snap.pages)
        }
    }

    /// A snapshot of a restored VM, taken at a timer: a full one, or a diff over the
    /// snapshot restored (KVM's dirty log: only the pages written since), and a diff of that
    /// diff. Each restores to the checksum of an uninterrupted run.
    @Test(arguments: [false, true])
    func snapshotOfARestoredGuest(diff: Bool) throws {
        let dirs = (1...3).map { temporaryPath("snap-gen\($0)-\(diff)") }
        defer { dirs.forEach(removeSnapshot) }
        var c = Self.config()
        c.memorySize = 128 << 20
        let expected = expectedChecksum(Machine.guestParamsForTests(c))
        let base = try Self.snapshotHalfway(c, into: dirs[0])
        var last = dirs[0]
        for (parent, child) in zip(dirs, dirs.dropFirst()) {
            var r = RestoreConfig(directory: parent)
            var plan = SnapshotPlan(directory: child)
            plan.afterSeconds = 0.1
            plan.andExit = true
            plan.diff = diff
            r.snapshot = plan
            r.timeout = 60
            let middle = try Snapshots.restore(r)
            // The timer may lose the race with a fast guest: then the guest simply finished.
            guard middle.exit == .snapshotTaken(directory: child) else {
                #expect(middle.exit == .guestExit(code: 0))
                #expect(middle.memtest?.checksum == expected)
                break
            }
            let snap = try #require(middle.statistics.snapshot)
            #expect(snap.trigger == "timer")
            if diff {
                // Only what the guest wrote in its 0.1 s: far less than the parent's pages.
                #expect(snap.pages < (base.statistics.snapshot?.pages ?? 0), "diff of \(snap.pages) pages")
                #expect(snap.diskBytes <= UInt64(snap.pages) * 4096 + (1 << 20))
            }
            last = child
        }
        let end = try Self.restore(last)
        #expect(end.exit == .guestExit(code: 0), "\(end.exitDescription)")
        #expect(end.memtest?.checksum == expected)
        #expect(end.memtest?.mismatches == 0)
        if diff && last != dirs[0] {
            // A diff names its parent: without it, the diff is refused, naming the parent.
            removeSnapshot(dirs[0])
            #expect(throws: VMMError.self) { try Self.restore(last) }
            do { _ = try Self.restore(last) } catch { #expect("\(error)".contains(dirs[0]), "\(error)") }
        }
    }

    /// A vCPU that had already exited when the snapshot was taken is saved as ended and does
    /// not run after the restore: vCPU 1 has no test pages (one page, split between two
    /// vCPUs) and exits at once; vCPU 0 is snapshotted as it prints its checksum.
    @Test func vcpuThatHadEndedStaysEnded() throws {
        let dir = temporaryPath("snap-ended")
        defer { removeSnapshot(dir) }
        var c = Self.config(vcpus: 2)
        c.testSize = 4096
        let expected = expectedChecksum(Machine.guestParamsForTests(c))
        var ended = 0
        // vCPU 1 ends first in practice, but on a loaded machine its thread may start after
        // vCPU 0 has finished (then it is saved as running): the race is retried.
        for _ in 0..<20 where ended == 0 {
            var plan = SnapshotPlan(directory: dir)
            plan.onText = "memtest: checksum"
            plan.andExit = true
            c.snapshot = plan
            let taken = try Machine.run(c)
            #expect(taken.exit == .snapshotTaken(directory: dir), "\(taken.exitDescription)")
            ended = taken.statistics.snapshot?.vcpusEnded ?? 0
        }
        try #require(ended == 1, "vCPU 1 never ended before the snapshot")
        let r = try Self.restore(dir)
        #expect(r.exit == .guestExit(code: 0), "\(r.exitDescription)")
        #expect(r.memtest?.checksum == expected)
        #expect(r.statistics.vcpus.count == 2)
        #expect(r.statistics.vcpus[1].exits == 0, "vCPU 1 ran after the restore")
        #expect(r.serialOutput.hasPrefix(" 0x"), "\(r.serialOutput.debugDescription): the checksum line goes on where it stopped")
    }

    /// A diff snapshot needs a snapshot to be a diff of.
    @Test func diffSnapshotOfABootedGuestIsRefused() throws {
        var c = Self.config()
        var plan = SnapshotPlan(directory: temporaryPath("snap-nodiff"))
        plan.onText = "memtest: halfway"
        plan.diff = true
        c.snapshot = plan
        #expect(throws: VMMError.self) { try Machine.run(c) }
    }

    /// Damaged snapshots of every kind are refused before the guest runs, with an error
    /// that names the file and the field; no descriptor on their files is left open.
    @Test func damagedSnapshotsAreRefusedNamingFileAndField() throws {
        let good = temporaryPath("snap-good")
        let bad = temporaryPath("snap-bad")
        defer { removeSnapshot(good); removeSnapshot(bad) }
        _ = try Self.snapshotHalfway(Self.config(), into: good)
        let state = try #require(fileBytes(good + "/state"))
        let memory = try #require(fileBytes(good + "/memory"))

        func refused(_ what: String, field: String, state s: [UInt8]? = nil, memory m: [UInt8]? = nil,
                     prepare: () -> Void = {}) {
            removeSnapshot(bad)
            mkdir(bad, 0o755)
            _ = writeFile(bad + "/state", s ?? state)
            _ = writeFile(bad + "/memory", m ?? memory)
            prepare()
            do {
                let r = try Self.restore(bad)
                Issue.record("\(what): restored (\(r.exitDescription)) instead of refused")
            } catch {
                let text = "\(error)"
                #expect(text.contains(bad), "\(what): \(text)")
                #expect(text.contains(field), "\(what): \(text)")
            }
        }
        /// The state with `edit` applied and its CRC-32 trailer recomputed (a well-formed
        /// file whose contents are wrong).
        func resealed(_ edit: (inout [UInt8]) -> Void) -> [UInt8] {
            var s = Array(state.dropLast(4))
            edit(&s)
            let crc = crc32(s)
            return s + [UInt8(crc & 0xff), UInt8(crc >> 8 & 0xff), UInt8(crc >> 16 & 0xff), UInt8(crc >> 24)]
        }

        refused("state truncated", field: "checksum", state: Array(state.prefix(state.count / 2)))
        refused("state cut to 6 bytes", field: "magic", state: Array(state.prefix(6)))
        var flipped = state
        flipped[state.count / 3] ^= 0x40
        refused("a flipped bit", field: "checksum", state: flipped)
        refused("not a snapshot", field: "magic", state: Array("#!/bin/sh\necho hello\n".utf8))
        refused("another version", field: "version", state: resealed { $0[8] = 9 })
        // "x86_64" at offset 20 (magic 8, version 4, length 8).
        refused("another architecture", field: "arch", state: resealed { $0.replaceSubrange(20..<26, with: Array("arm_64".utf8)) })
        refused("another KVM", field: "kvm flavour", state: resealed { s in
            // The flavour string follows the arch: length at 26, text at 34.
            for i in 34..<(34 + Int(s[26])) { s[i] = UInt8(ascii: "x") }
        })
        refused("memory file truncated", field: "memory file size", memory: Array(memory.prefix(memory.count - 4096)))
        refused("no memory file", field: "memory file", prepare: { unlink(bad + "/memory") })
        refused("no state file", field: "state file", prepare: { unlink(bad + "/state") })
        refused("a FIFO for the state", field: "state file", prepare: { unlink(bad + "/state"); mkfifo(bad + "/state", 0o644) })
        refused("a directory for the memory", field: "memory file", prepare: { unlink(bad + "/memory"); mkdir(bad + "/memory", 0o755) })
        // Descriptors on the snapshots' files only: other suites run alongside.
        #expect(openFDs(under: bad) == 0 && openFDs(under: good) == 0)
    }

    /// A page of the memory file that no longer matches its checksum: a populated restore
    /// refuses the snapshot before the guest runs; a lazy one stops the guest at the first
    /// touch of that page, naming it, instead of handing the guest bad data.
    @Test func damagedMemoryPageIsNeverHandedToTheGuest() throws {
        let dir = temporaryPath("snap-page")
        defer { removeSnapshot(dir) }
        let c = Self.config()
        _ = try Self.snapshotHalfway(c, into: dir)
        // The first test page the snapshot holds (RAM starts the file at GPA 0): the guest
        // reads every test page back at its end.
        var memory = try #require(fileBytes(dir + "/memory"))
        let first = stride(from: Int(VMConfig.testBase), to: Int(Self.memory), by: 4096).first { p in
            memory[p..<p + 4096].contains { $0 != 0 }
        }
        let victim = try #require(first, "no test page in the snapshot")
        memory[victim + 100] ^= 0xff
        #expect(writeFile(dir + "/memory", memory))

        #expect(throws: VMMError.self) { try Self.restore(dir, lazy: false) }
        let r = try Self.restore(dir, lazy: true)
        guard case let .pagerFailure(message) = r.exit else {
            Issue.record("lazy restore of a damaged page ended with \(r.exitDescription)")
            return
        }
        #expect(message.contains("does not match its checksum"), "\(message)")
        #expect(message.contains("0x\(String(victim, radix: 16))"), "\(message)")
    }

    /// Unusable snapshot targets fail the run with the path, before the guest runs or when
    /// the snapshot is written: a regular file, a path under a missing directory.
    @Test func unusableSnapshotDirectoriesAreReported() throws {
        let file = temporaryPath("snap-file")
        #expect(writeFile(file, [1, 2, 3]))
        defer { unlink(file) }
        for target in [file, temporaryPath("missing") + "/below"] {
            do {
                let r = try Self.snapshotHalfway(Self.config(), into: target)
                Issue.record("snapshot into \(target): \(r.exitDescription)")
            } catch {
                #expect("\(error)".contains(target.split(separator: "/").dropLast().joined(separator: "/")), "\(error)")
            }
        }
        // A trigger that never comes: the guest runs to its end, no snapshot.
        var c = Self.config()
        var plan = SnapshotPlan(directory: temporaryPath("never"))
        plan.onText = "no guest prints this"
        c.snapshot = plan
        let r = try Machine.run(c)
        #expect(r.exit == .guestExit(code: 0))
        #expect(r.statistics.snapshot == nil)
        #expect(access(temporaryPath("never"), F_OK) != 0)
    }

    /// SIGUSR1 to a real axvm process snapshots the guest it runs; the CLI's restore
    /// finishes it with the right checksum.
    @Test func sigusr1TakesASnapshotFromTheCommandLine() throws {
        let dir = temporaryPath("snap-usr1"), out = temporaryPath("snap-usr1.out"), json = temporaryPath("snap-usr1.json")
        defer { removeSnapshot(dir); unlink(out); unlink(json) }
        var c = Self.config()
        c.memorySize = 128 << 20  // long enough to be caught writing
        var p = try AxvmProcess(["run", guestPath("memtest"), "--memory", "128M", "--order", "random", "--seed", "11",
                                 "--snapshot", dir, "--snapshot-and-exit", "--stats-json", json], stdoutPath: out)
        let t0 = monotonicSeconds()
        while !(readFile(out) ?? "").contains("writing pattern") && monotonicSeconds() - t0 < 30 { usleep(2000) }
        kill(p.pid, SIGUSR1)
        #expect(p.wait() == 0, "\(p.errText)")
        let text = readFile(json) ?? ""
        #expect(text.contains("\"snapshot_trigger\": \"SIGUSR1\""), "\(text)")
        var q = try AxvmProcess(["restore", dir, "--stats-json", json], stdoutPath: out)
        #expect(q.wait(seconds: 120) == 0, "\(q.errText)")
        let expected = expectedChecksum(Machine.guestParamsForTests(c))
        #expect((readFile(json) ?? "").contains("\"checksum\": \(expected),"), "\(readFile(json) ?? "")")
    }
}

func removeSnapshot(_ dir: String) {
    for f in ["state", "memory", "state.tmp", "memory.tmp"] { unlink(dir + "/" + f); rmdir(dir + "/" + f) }
    rmdir(dir)
}

/// CRC-32 (IEEE), bit by bit: the tests' own, to reseal an edited state file.
func crc32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    }
    return c ^ 0xFFFF_FFFF
}
