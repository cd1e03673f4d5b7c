import AxAddrSpace
@testable import AxVMM
import CKVM
import Glibc
import Testing

/// Snapshots that never lose data, tried as a hostile user would: files that change under a
/// running restore, chains whose members are overwritten or replaced, output files aimed at
/// snapshot files, and state files whose CRC is right but whose contents lie. Each case
/// failed (a crash, a lost snapshot, a wrong guest result or a usage error naming nothing)
/// before the fix it tests; `AXVM_TEST_BINARY` runs the process cases against another build.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here (set AXVM_REQUIRE_KVM=1 to fail instead)"), .serialized)
struct SnapshotIntegrityTests {
    /// A memtest snapshot taken half-way (`SnapshotTests.snapshotHalfway`), of `memory` bytes.
    static func snapshot(_ name: String, memory: UInt64 = SnapshotTests.memory) throws -> String {
        let dir = temporaryPath(name)
        SnapshotDirectory.remove(dir)
        var c = SnapshotTests.config()
        c.memorySize = memory
        let r = try SnapshotTests.snapshotHalfway(c, into: dir)
        try #require(r.exit == .snapshotTaken(directory: dir), "\(r.exitDescription)")
        return dir
    }

    /// A diff snapshot of `base` restored, taken into `dir` 0.2 s into the run.
    static func diff(of base: String, into dir: String) throws {
        var r = RestoreConfig(directory: base)
        var plan = SnapshotPlan(directory: dir)
        plan.afterSeconds = 0.2
        plan.andExit = true
        plan.diff = true
        r.snapshot = plan
        r.timeout = 60
        let report = try Snapshots.restore(r)
        try #require(report.exit == .snapshotTaken(directory: dir), "\(report.exitDescription)")
    }

    /// What a directory holds: each file's name and bytes (to see it untouched).
    static func contents(_ dir: String) -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        for name in SnapshotDirectory.entries(dir) ?? [] { out[name] = fileBytes(dir + "/" + name) }
        return out
    }

    /// Whether two `contents` are the same (a failed expectation prints names, not bytes).
    static func same(_ a: [String: [UInt8]], _ b: [String: [UInt8]]) -> Bool { a == b }

    /// Entries a snapshot write left beside `dir` (its temporary directories).
    static func leftovers(_ dir: String) -> [String] {
        let name = String(dir.split(separator: "/").last ?? "")
        return (SnapshotDirectory.entries(SnapshotDirectory.parentDirectory(of: dir)) ?? []).filter { $0.hasPrefix("." + name + ".axvm-") }
    }

    /// Waits until process `pid` holds `path` open (so the restore checked and opened it).
    static func awaitOpen(_ pid: pid_t, _ path: String, seconds: Double = 30) -> Bool {
        let t0 = monotonicSeconds()
        while monotonicSeconds() - t0 < seconds {
            for fd in SnapshotDirectory.entries("/proc/\(pid)/fd") ?? [] {
                var buf = [CChar](repeating: 0, count: 4096)
                let n = readlink("/proc/\(pid)/fd/\(fd)", &buf, buf.count - 1)
                if n > 0 && String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == path { return true }
            }
            usleep(500)
        }
        return false
    }

    // --- 1. files that change under a restore ---------------------------------------------

    /// The memory file truncated while a lazy restore runs: the run ends through its normal
    /// path (status 3 naming the file and the page, statistics written), not with SIGBUS;
    /// while a populated restore copies: refused (status 2) naming the file and the page.
    @Test(arguments: [true, false])
    func memoryFileTruncatedUnderARestore(lazy: Bool) throws {
        let dir = try Self.snapshot("trunc-\(lazy)", memory: 128 << 20)
        let json = temporaryPath("trunc-\(lazy).json")
        defer { SnapshotDirectory.remove(dir); unlink(json) }
        var p = try AxvmProcess(["restore", dir, "--stats-json", json] + (lazy ? [] : ["--populate"]))
        try #require(Self.awaitOpen(p.pid, dir + "/memory"), "the restore never opened the memory file")
        // Lazy: once the guest runs (a restore reaches KVM_RUN in milliseconds; the guest
        // then runs for seconds, reading back every page it wrote before the snapshot).
        // Populated: while the pages are copied in.
        usleep(lazy ? 300_000 : 20_000)
        #expect(truncate(dir + "/memory", lazy ? 0 : 1 << 20) == 0)
        let status = p.wait(seconds: 120)
        #expect(status == (lazy ? 3 : 2), "\(p.errText)")
        #expect(p.errText.contains(dir + "/memory"), "\(p.errText)")
        if lazy {
            #expect(p.errText.contains("is gone: the file is now 0 bytes"), "\(p.errText)")
        }
        if lazy {
            let text = readFile(json) ?? ""
            #expect(text.contains("\"exit_status\": 3"), "\(text)")
        }
    }

    /// A memory file renamed over (a new snapshot written there by another axvm) or deleted
    /// while a restore runs changes nothing: the restore reads the file it checked and
    /// finishes with the checksum of an uninterrupted run.
    @Test func memoryFileReplacedUnderARestoreIsNotSeen() throws {
        let dir = try Self.snapshot("replaced", memory: 128 << 20)
        let out = temporaryPath("replaced.out")
        defer { SnapshotDirectory.remove(dir); unlink(out) }
        var p = try AxvmProcess(["restore", dir], stdoutPath: out)
        try #require(Self.awaitOpen(p.pid, dir + "/memory"))
        #expect(writeFile(dir + "/memory.new", [UInt8](repeating: 0x5a, count: 1 << 20)))
        #expect(rename(dir + "/memory.new", dir + "/memory") == 0)
        #expect(p.wait(seconds: 120) == 0, "\(p.errText)")
        var c = SnapshotTests.config()
        c.memorySize = 128 << 20
        let expected = expectedChecksum(Machine.guestParamsForTests(c))
        #expect((readFile(out) ?? "").contains("checksum 0x" + hex64(expected)), "\(readFile(out) ?? "")")
    }

    /// A new snapshot of a restored VM copies the pages the guest has not touched from the
    /// restored snapshot: its file truncated meanwhile fails that snapshot naming the file,
    /// and the VMM does not crash.
    @Test func parentTruncatedWhileANewSnapshotCopiesFromIt() throws {
        let dir = try Self.snapshot("copyfrom", memory: 128 << 20)
        let next = temporaryPath("copyfrom-next")
        defer { SnapshotDirectory.remove(dir); SnapshotDirectory.remove(next) }
        var p = try AxvmProcess(["restore", dir, "--snapshot", next, "--snapshot-after", "0.3", "--snapshot-and-exit"])
        try #require(Self.awaitOpen(p.pid, dir + "/memory"))
        #expect(truncate(dir + "/memory", 0) == 0)
        let status = p.wait(seconds: 120)
        #expect(status != nil && status! > 0, "status \(String(describing: status)): \(p.errText)")
        #expect(p.errText.contains(dir + "/memory"), "\(p.errText)")
        #expect(access(next, F_OK) != 0, "a snapshot was written from a truncated parent")
        #expect(Self.leftovers(next).isEmpty)
    }

    // --- 2. chains ----------------------------------------------------------------------

    /// `--snapshot DIR` that is the restored snapshot, a link to it, or an ancestor of the
    /// restored diff is refused before anything runs, naming both; the snapshot stays whole.
    @Test func snapshotIntoTheRestoredChainIsRefused() throws {
        let base = try Self.snapshot("chain-base")
        let diff = temporaryPath("chain-diff"), link = temporaryPath("chain-link")
        defer { SnapshotDirectory.remove(base); SnapshotDirectory.remove(diff); unlink(link) }
        try Self.diff(of: base, into: diff)
        #expect(symlink(base, link) == 0)
        let before = Self.contents(base), diffBefore = Self.contents(diff)
        for (restored, target) in [(base, base), (base, link), (diff, base), (diff, diff), (diff, link)] {
            for isDiff in [false, true] {
                var r = RestoreConfig(directory: restored)
                var p = SnapshotPlan(directory: target)
                p.afterSeconds = 0.1
                p.andExit = true
                p.diff = isDiff
                r.snapshot = p
                do {
                    let report = try Snapshots.restore(r)
                    Issue.record("restore \(restored) --snapshot \(target): \(report.exitDescription)")
                } catch {
                    // Both named: the target as given, and the snapshot it is (links followed).
                    let hit = target == diff ? diff : base
                    #expect("\(error)".contains(target) && "\(error)".contains(hit), "\(error)")
                }
            }
        }
        #expect(Self.same(Self.contents(base), before), "base changed")
        #expect(Self.same(Self.contents(diff), diffBefore), "diff changed")
        _ = try SnapshotTests.restore(diff)  // still restores
    }

    /// A diff pins its parent: the parent replaced by another snapshot in the same
    /// directory makes the diff refuse to restore (it would mix two VMs), naming the parent.
    @Test func diffRefusesAReplacedParent() throws {
        let base = try Self.snapshot("pin-base")
        let diff = temporaryPath("pin-diff")
        defer { SnapshotDirectory.remove(base); SnapshotDirectory.remove(diff) }
        try Self.diff(of: base, into: diff)
        let ok = try SnapshotTests.restore(diff)
        #expect(ok.exit == .guestExit(code: 0))
        // The same guest, snapshotted again into the parent's directory: another snapshot.
        var c = SnapshotTests.config()
        c.seed = 12
        _ = try SnapshotTests.snapshotHalfway(c, into: base)
        do {
            let report = try SnapshotTests.restore(diff)
            Issue.record("a diff over a replaced parent restored: \(report.exitDescription)")
        } catch {
            guard case let .snapshot(path, field, _) = error as? VMMError else { Issue.record("\(error)"); return }
            #expect(path == base + "/state")
            #expect(field == "snapshot id")
        }
    }

    /// A write that fails leaves the old snapshot whole and nothing beside it (the writer of
    /// `SnapshotDirectory.replace` failing after part of the memory file, and after both
    /// files); an axvm killed while writing leaves the old snapshot whole, and its temporary
    /// directory is removed by the next write there; a directory holding anything but a
    /// snapshot is refused before the run and left alone.
    @Test func replacingASnapshotIsAtomic() throws {
        let dir = try Self.snapshot("atomic", memory: 256 << 20)
        defer { SnapshotDirectory.remove(dir) }
        let before = Self.contents(dir)
        for both in [false, true] {
            do {
                try SnapshotDirectory(dir).replace { temp throws(VMMError) in
                    _ = writeFile(temp + "/memory", [UInt8](repeating: 1, count: 1 << 20))
                    if both { _ = writeFile(temp + "/state", [1, 2, 3]) }
                    throw VMMError.snapshot(path: temp + "/memory", field: "guest memory", reason: "write: No space left on device")
                }
                Issue.record("a failing writer replaced the snapshot")
            } catch {
                #expect("\(error)".contains("No space left"), "\(error)")
            }
            #expect(Self.same(Self.contents(dir), before), "the old snapshot changed")
            #expect(Self.leftovers(dir).isEmpty, "\(Self.leftovers(dir))")
        }

        // SIGKILL while the new snapshot is written (256 MiB populated: hundreds of ms).
        var p = try AxvmProcess(["run", guestPath("memtest"), "--memory", "256M", "--populate", "--snapshot", dir,
                                 "--snapshot-on", "memtest: writing pattern", "--snapshot-and-exit"])
        let t0 = monotonicSeconds()
        while Self.leftovers(dir).isEmpty && monotonicSeconds() - t0 < 60 { usleep(200) }
        kill(p.pid, SIGKILL)
        #expect(p.wait() == -SIGKILL)
        #expect(Self.same(Self.contents(dir), before), "the old snapshot changed")
        #expect(Self.leftovers(dir).count == 1, "\(Self.leftovers(dir))")
        _ = try SnapshotTests.restore(dir)  // the old one restores
        _ = try Self.snapshot("atomic")
        #expect(Self.leftovers(dir).isEmpty, "\(Self.leftovers(dir))")
        #expect(!Self.same(Self.contents(dir), before), "the snapshot was not replaced")

        // A directory of the user's: refused before the guest runs, untouched.
        let mine = temporaryPath("atomic-mine")
        defer { unlink(mine + "/notes.txt"); rmdir(mine) }
        #expect(mkdir(mine, 0o755) == 0)
        #expect(writeFile(mine + "/notes.txt", Array("keep me".utf8)))
        do {
            let r = try SnapshotTests.snapshotHalfway(SnapshotTests.config(), into: mine)
            Issue.record("snapshot into a directory of other files: \(r.exitDescription)")
        } catch {
            #expect("\(error)".contains("notes.txt"), "\(error)")
        }
        #expect(readFile(mine + "/notes.txt") == "keep me")
    }

    /// A snapshot directory named relative to the working directory, with or without a
    /// slash: its temporary sibling is found beside it.
    @Test func relativeSnapshotDirectoriesHaveAParentAndAName() {
        for (path, parent, name) in [("snap", ".", "snap"), ("a/snap", "a", "snap"), ("/snap", "/", "snap"), ("/t/a/snap", "/t/a", "snap")] {
            #expect(SnapshotDirectory.parentDirectory(of: path) == parent, "\(path)")
            #expect(SnapshotDirectory.baseName(of: path) == name, "\(path)")
        }
    }

    // --- 3. output files ----------------------------------------------------------------

    /// `--stats-json` / `--fault-map` naming a file of the snapshot being written, restored,
    /// or an ancestor, or any new file inside one of those directories, are refused before
    /// anything runs (status 2), the snapshot left whole.
    @Test func outputFilesNeverReplaceSnapshotFiles() throws {
        let base = try Self.snapshot("out-base")
        let diff = temporaryPath("out-diff"), next = temporaryPath("out-next")
        defer { SnapshotDirectory.remove(base); SnapshotDirectory.remove(diff); SnapshotDirectory.remove(next) }
        try Self.diff(of: base, into: diff)
        _ = try SnapshotTests.restore(base)
        #expect(mkdir(next, 0o755) == 0)
        let savedBase = Self.contents(base), savedDiff = Self.contents(diff)
        var write = SnapshotPlan(directory: next)
        write.onText = "memtest: halfway"
        write.andExit = true
        // restore DIFF --snapshot NEXT: the diff, its parent and the new snapshot's directory.
        for output in [diff + "/state", diff + "/memory", base + "/state", base + "/memory", base + "/new.json", next + "/state"] {
            var c = RestoreConfig(directory: diff)
            c.snapshot = write
            #expect(throws: Frontend.Exit(2), "restore --stats-json \(output)") { try Frontend.restore(c, stats: false, statsJSON: output) }
        }
        #expect(Self.same(Self.contents(base), savedBase), "base changed")
        #expect(Self.same(Self.contents(diff), savedDiff), "diff changed")
        #expect(access(next + "/state", F_OK) != 0)
        // run --snapshot BASE: the snapshot replaced by this run's is not an output's either.
        write.directory = base
        for output in [base + "/state", base + "/memory", base + "/stats.json"] {
            var m = SnapshotTests.config()
            m.snapshot = write
            #expect(throws: Frontend.Exit(2), "run --fault-map \(output)") { try Frontend.run(m, stats: false, statsJSON: nil, faultMap: output) }
            #expect(throws: Frontend.Exit(2), "run --stats-json \(output)") { try Frontend.run(m, stats: false, statsJSON: output) }
        }
        #expect(Self.same(Self.contents(base), savedBase), "base changed")
    }

    // --- 4. contents checked for meaning --------------------------------------------------

    /// State files whose CRC is right but whose contents lie are refused before a VM exists,
    /// as snapshot errors (status 2) naming the file and the field: loader values out of
    /// range, memory layouts that are not the guest's, vCPU states outside their values.
    @Test func lyingSnapshotsAreRefusedNamingTheField() throws {
        let good = try Self.snapshot("lies")
        let bad = temporaryPath("lies-bad")
        defer { SnapshotDirectory.remove(good); SnapshotDirectory.remove(bad) }
        let state = try SnapshotState.decode(try #require(fileBytes(good + "/state")), path: good + "/state")
        let memory = try #require(fileBytes(good + "/memory"))

        func refused(_ what: String, field: String, _ edit: (inout SnapshotState) -> Void) {
            var s = state
            edit(&s)
            SnapshotDirectory.remove(bad)
            mkdir(bad, 0o755)
            _ = writeFile(bad + "/state", s.encoded())
            _ = writeFile(bad + "/memory", Array(memory.prefix(Int(s.memoryFileSize))) + [UInt8](repeating: 0, count: max(0, Int(s.memoryFileSize) - memory.count)))
            do {
                let r = try SnapshotTests.restore(bad)
                Issue.record("\(what): restored (\(r.exitDescription)) instead of refused")
            } catch {
                guard case let .snapshot(path, f, _) = error as? VMMError else { Issue.record("\(what): \(error)"); return }
                #expect(path.hasPrefix(bad), "\(what): \(error)")
                #expect(f.contains(field), "\(what): \(error)")
            }
        }
        /// The memtest loader's bytes with one field replaced (its layout: `MemtestLoader.snapshotBytes`).
        func loader(memory: UInt64? = nil, testSize: UInt64? = nil, vcpus: UInt64? = nil, sparse: UInt8? = nil,
                    extra: [UInt8] = []) -> [UInt8] {
            var r = ByteReader(state.loader, path: "")
            var w = ByteWriter()
            w.string((try? r.string("")) ?? "")
            let mem = (try? r.u64("")) ?? 0
            w.u64(memory ?? mem)
            w.u64((try? r.u64("")) ?? 0)  // order
            w.u64((try? r.u64("")) ?? 0)  // stride
            w.u64((try? r.u64("")) ?? 0)  // seed
            let size = (try? r.u64("")) ?? 0
            w.u64(testSize ?? size)
            let sp = (try? r.u8("")) ?? 0
            w.u8(sparse ?? sp)
            let n = (try? r.u64("")) ?? 0
            w.u64(vcpus ?? n)
            w.u64((try? r.u64("")) ?? 0)  // mode
            w.raw(extra)
            return w.bytes
        }
        let ram = state.regions[0]
        refused("loader memory size 0", field: "memtest memory size") { $0.loader = loader(memory: 0) }
        refused("loader memory size other than the state's", field: "loader") { $0.loader = loader(memory: 64 << 20) }
        refused("loader with 99 vCPUs", field: "memtest vCPUs") { $0.loader = loader(vcpus: 99) }
        refused("loader with 2 vCPUs for 1 saved", field: "loader") { $0.loader = loader(vcpus: 2) }
        refused("test size beyond RAM", field: "memtest test size") { $0.loader = loader(testSize: 1 << 40) }
        refused("sparse flag 7", field: "memtest sparse") { $0.loader = loader(sparse: 7) }
        refused("bytes after the loader", field: "loader") { $0.loader = loader(extra: [1, 2, 3]) }
        refused("memory size 1 TiB", field: "memory size") { $0.memorySize = 1 << 40 }
        refused("memory size not the layout's", field: "region 0") { $0.memorySize = 64 << 20 }
        refused("no RAM", field: "region 0") { $0.regions.removeFirst() }
        refused("RAM moved", field: "region") { s in
            s.regions[0] = SnapshotState.SavedRegion(range: GuestPhysRange(start: GuestPhysAddr(1 << 30), size: ram.range.size)!, readOnly: false,
                                                     fileOffset: 0, bitmap: ram.bitmap, hashes: ram.hashes)
        }
        refused("areas overlapping", field: "region 1 start") { s in
            s.regions[1] = SnapshotState.SavedRegion(range: GuestPhysRange(start: GuestPhysAddr(0x1000), size: s.regions[1].range.size)!,
                                                     readOnly: true, fileOffset: s.regions[1].fileOffset, bitmap: s.regions[1].bitmap,
                                                     hashes: s.regions[1].hashes)
        }
        refused("ROM made writable", field: "region 1") { s in
            s.regions[1] = SnapshotState.SavedRegion(range: s.regions[1].range, readOnly: false, fileOffset: s.regions[1].fileOffset,
                                                     bitmap: s.regions[1].bitmap, hashes: s.regions[1].hashes)
        }
        refused("vCPU state flag 7", field: "vcpu 0 ended") { $0.vcpus[0].ended = 7 }
        refused("every vCPU ended", field: "vcpus") { $0.vcpus[0].ended = 1 }
        refused("an even page checksum", field: "page checksums") { $0.regions[0].hashes[0] &= ~1 }
        refused("a parent without an id", field: "parent id") { $0.parent = "/tmp" }
        refused("a relative parent", field: "parent") { s in s.parent = "snap"; s.parentID = [UInt8](repeating: 7, count: 16) }
        refused("another guest kind", field: "guest kind") { $0.kind = "windows" }
        // The version is read before the rest: a state file of a newer axvm says so.
        var newer = state.encoded()
        newer[8] = 3
        SnapshotDirectory.remove(bad)
        mkdir(bad, 0o755)
        _ = writeFile(bad + "/state", newer)
        _ = writeFile(bad + "/memory", memory)
        do {
            let r = try SnapshotTests.restore(bad)
            Issue.record("a version 3 state restored: \(r.exitDescription)")
        } catch {
            guard case let .snapshot(path, field, reason) = error as? VMMError else { Issue.record("\(error)"); return }
            #expect(path == bad + "/state" && field == "version" && reason.hasPrefix("3; this axvm reads version 2"), "\(error)")
        }
    }
}

/// `v` as 16 hexadecimal digits, as memtest prints its checksum.
func hex64(_ v: UInt64) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}
