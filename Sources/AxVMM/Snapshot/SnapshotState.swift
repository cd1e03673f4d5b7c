import CKVM
import AxAddrSpace
#if canImport(Glibc)
import Glibc
#endif

/// A snapshot directory: `state` (everything but guest memory, with a CRC-32 trailer) and
/// `memory` (guest RAM: a sparse file, the areas end to end, each populated page at its
/// place and never-touched pages as holes).
///
/// Why sparse and not compact: a lazy restore serves each first touch with one lookup
/// (area offset + page offset: no index search), the file's blocks on disk are only the
/// populated pages (`du` shows it), and clones map the same file, so the pages they only
/// read share the page cache. The index of populated pages (extents and a checksum per
/// page) is in the state file: a restore never scans the memory file.
struct SnapshotState: Equatable {
    static let magic = Array("AXVMSNAP".utf8)
    /// 2: a snapshot's identity and its parent's pin (`id`, `parentID`, `parentCRC`).
    static let version: UInt32 = 2
    static let stateFile = "state"
    static let memoryFile = "memory"
    /// The largest state file read (the page index of 64 GiB fully populated is 128 MiB).
    static let stateLimit = 256 << 20

    /// The host it was taken on: a restore needs the same architecture and KVM module, and
    /// the same layout of KVM's state structures (their sizes, as this build has them).
    var arch: String
    var flavour: String
    var vcpuStateSize: UInt32
    var vmStateSize: UInt32
    /// `memtest` or `linux`, and what that loader needs to go on (its configuration and devices).
    /// This snapshot's identity: 16 random bytes drawn when it was written.
    var id: [UInt8] = SnapshotState.newID()
    /// A diff snapshot's parent directory (absolute): its memory file holds only the pages
    /// written since the restore from the parent; every other page is the parent's. Empty
    /// for a full snapshot.
    var parent = ""
    /// The parent it was taken over, pinned: its `id` and the CRC-32 of its state file. A
    /// restore refuses a parent that is not that one (replaced since), naming it.
    var parentID: [UInt8] = SnapshotState.noID
    var parentCRC: UInt32 = 0
    var kind: String
    var loader: [UInt8]
    var memorySize: UInt64
    var regions: [SavedRegion]
    var vcpus: [SavedVCPU]
    var vm: [UInt8]

    /// One memory area.
    struct SavedRegion: Equatable {
        var range: GuestPhysRange
        var readOnly: Bool
        /// Where the area starts in the memory file.
        var fileOffset: UInt64
        /// The pages the file holds: bit i of word i / 64 for page i of the area (a bitmap:
        /// 16 KiB for 512 MiB, whatever the pattern; a restore reads it as it is).
        var bitmap: [UInt64]
        /// One `PageHash` per page the file holds, in page order.
        var hashes: [UInt64]
        var pages: Int { hashes.count }

        /// A bitmap for `count` pages with the pages of `indices` set.
        static func bitmap(pages count: Int, _ indices: some Sequence<Int>) -> [UInt64] {
            var b = [UInt64](repeating: 0, count: (count + 63) / 64)
            for i in indices { b[i / 64] |= 1 << UInt64(i % 64) }
            return b
        }
    }

    /// One vCPU: its KVM state and, if its loop had ended (a memtest vCPU that exited), how.
    struct SavedVCPU: Equatable {
        /// 0 running, 1 exited with `value` as code, 2 halted at `value`.
        var ended: UInt8
        var value: UInt64
        var state: [UInt8]
    }

    var memoryFileSize: UInt64 { regions.reduce(0) { max($0, $1.fileOffset + $1.range.size) } }
    var populatedPages: Int { regions.reduce(0) { $0 + $1.pages } }

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u32(Self.version)
        w.string(arch)
        w.string(flavour)
        w.u32(vcpuStateSize)
        w.u32(vmStateSize)
        w.raw(id)
        w.raw(parentID)
        w.u32(parentCRC)
        w.string(parent)
        w.string(kind)
        w.blob(loader)
        w.u64(memorySize)
        w.u64(UInt64(regions.count))
        for r in regions {
            w.u64(r.range.start.raw)
            w.u64(r.range.size)
            w.u8(r.readOnly ? 1 : 0)
            w.u64(r.fileOffset)
            for b in r.bitmap { w.u64(b) }
            w.u64(UInt64(r.hashes.count))
            for h in r.hashes { w.u64(h) }
        }
        w.u64(UInt64(vcpus.count))
        for v in vcpus { w.u8(v.ended); w.u64(v.value); w.blob(v.state) }
        w.blob(vm)
        let crc = CRC32.checksum(w.bytes[...])
        w.u32(crc)
        return w.bytes
    }

    /// Where a state file's body starts: the magic and the version, checked before anything
    /// else of the file is read.
    static let headerSize = magic.count + 4
    /// An identity that is none (a full snapshot's parent).
    static let noID = [UInt8](repeating: 0, count: 16)
    /// 16 random bytes (/dev/urandom; the clock and the process as a fallback, still unique
    /// enough to tell two snapshots in one directory apart).
    static func newID() -> [UInt8] {
        var id = [UInt8](repeating: 0, count: 16)
        let fd = ckvm_open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        let got = fd < 0 ? -1 : id.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 16, 0) }
        if fd >= 0 { close(fd) }
        if got != 16 {
            var seed = nowNanos() ^ UInt64(UInt32(bitPattern: getpid())) << 40
            for i in 0..<16 {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                id[i] = UInt8(truncatingIfNeeded: seed >> 56)
            }
        }
        if id == noID { id[0] = 1 }
        return id
    }

    /// Reads and decodes the state file at `path`: its header (magic, version) read and
    /// checked first, then the rest (at most `stateLimit` bytes), `decode`d. Also returns
    /// the file's CRC-32 trailer, which a diff pins.
    static func read(_ path: String) throws(VMMError) -> (state: SnapshotState, crc: UInt32) {
        let bytes = try readSnapshotFile(path, field: "state file", limit: stateLimit) { head throws(VMMError) in
            try checkHeader(head, path: path)
        }
        let state = try decode(bytes, path: path)
        return (state, trailer(bytes))
    }

    /// The little-endian CRC-32 in a state file's last four bytes.
    static func trailer(_ bytes: [UInt8]) -> UInt32 {
        bytes.suffix(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    /// The magic and the version: the first `headerSize` bytes (or fewer, if the file is shorter).
    static func checkHeader(_ head: [UInt8], path: String) throws(VMMError) {
        func bad(_ field: String, _ reason: String) -> VMMError { .snapshot(path: path, field: field, reason: reason) }
        guard head.count >= magic.count, Array(head.prefix(magic.count)) == magic else {
            throw bad("magic", "not an axvm snapshot (no \"AXVMSNAP\" at the start)")
        }
        guard head.count >= headerSize else { throw bad("version", "the file ends at byte \(head.count), inside its header (truncated?)") }
        let v = head[magic.count..<headerSize].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard v == version else {
            throw bad("version", "\(v); this axvm reads version \(version)\(v < version ? " (a snapshot of an older axvm: take it again)" : "")")
        }
    }

    /// The guest kinds a snapshot may hold.
    static let kinds = ["memtest", "linux"]

    /// Decodes and checks a state file: magic, version, CRC, that every number fits what it
    /// describes, and that every value means something (`checkMachine`: the machine a
    /// restore builds from it). `path` names the file in errors.
    static func decode(_ bytes: [UInt8], path: String) throws(VMMError) -> SnapshotState {
        func bad(_ field: String, _ reason: String) -> VMMError { .snapshot(path: path, field: field, reason: reason) }
        try checkHeader(Array(bytes.prefix(headerSize)), path: path)
        var r = ByteReader(bytes, path: path)
        _ = try r.raw(headerSize, "header")
        // The CRC first: a damaged file is named as such, not by the first odd field.
        guard bytes.count >= headerSize + 4 else { throw bad("checksum", "the file is too short to hold one") }
        let stored = trailer(bytes)
        let crc = CRC32.checksum(bytes[..<(bytes.count - 4)])
        guard crc == stored else {
            throw bad("checksum", "CRC-32 0x\(String(crc, radix: 16)) of the contents, 0x\(String(stored, radix: 16)) recorded: the file is damaged or truncated")
        }
        let arch = try r.string("arch")
        guard GuestArch(rawValue: arch) != nil else { throw bad("arch", "\"\(arch)\" is no architecture axvm runs (\(GuestArch.knownNames))") }
        let flavour = try r.string("kvm flavour")
        guard !flavour.isEmpty else { throw bad("kvm flavour", "empty") }
        var s = SnapshotState(arch: arch, flavour: flavour,
                              vcpuStateSize: try r.u32("vcpu state size"), vmStateSize: try r.u32("vm state size"),
                              kind: "", loader: [], memorySize: 0, regions: [], vcpus: [], vm: [])
        s.id = try r.raw(16, "snapshot id")
        guard s.id != noID else { throw bad("snapshot id", "all zero") }
        s.parentID = try r.raw(16, "parent id")
        s.parentCRC = try r.u32("parent checksum")
        s.parent = try r.string("parent")
        if s.parent.isEmpty != (s.parentID == noID) {
            throw bad("parent id", s.parent.isEmpty ? "set for a snapshot without a parent" : "missing for the parent \(s.parent)")
        }
        if !s.parent.isEmpty && !s.parent.hasPrefix("/") { throw bad("parent", "\(s.parent) is not an absolute path") }
        if s.parent.utf8.contains(0) { throw bad("parent", "holds a NUL byte") }
        s.kind = try r.string("guest kind")
        guard kinds.contains(s.kind) else { throw bad("guest kind", "\"\(s.kind)\"; this axvm restores memtest and linux guests") }
        s.loader = try r.blob("loader", limit: 64 << 10)
        s.memorySize = try r.u64("memory size")
        if s.memorySize & 0xfff != 0 || s.memorySize < 4 << 20 || s.memorySize > VMConfig.maxMemory {
            throw bad("memory size", "\(s.memorySize) bytes; a 4 KiB multiple from 4 MiB to \(VMConfig.maxMemory >> 30) GiB")
        }
        let regionCount = try r.u64("regions")
        guard regionCount >= 1 && regionCount <= 64 else { throw bad("regions", "\(regionCount) areas; from 1 to 64") }
        var fileEnd: UInt64 = 0
        for i in 0..<Int(regionCount) {
            let f = "region \(i)"
            let start = try r.u64(f + " start"), size = try r.u64(f + " size")
            guard start & 0xfff == 0, size & 0xfff == 0, size > 0, size <= 1 << 40,
                  let range = GuestPhysRange(start: GuestPhysAddr(start), size: size) else {
                throw bad(f, "start 0x\(String(start, radix: 16)) size 0x\(String(size, radix: 16)) is not a page-aligned area")
            }
            if let last = s.regions.last, range.start < last.range.end {
                throw bad(f + " start", "0x\(String(start, radix: 16)) is below the end of region \(i - 1) (0x\(String(last.range.end.raw, radix: 16))): the areas must be in order and apart")
            }
            let flag = try r.u8(f + " read-only")
            guard flag <= 1 else { throw bad(f + " read-only", "\(flag); 0 or 1") }
            let fileOffset = try r.u64(f + " file offset")
            guard fileOffset == fileEnd else { throw bad(f + " file offset", "\(fileOffset); the areas lie end to end, so \(fileEnd)") }
            fileEnd += size
            let pageCount = Int(size / 4096)
            let bitmap = try r.u64s((pageCount + 63) / 64, f + " page bitmap")
            let held = bitmap.reduce(0) { $0 + $1.nonzeroBitCount }
            if pageCount % 64 != 0, let last = bitmap.last, last >> UInt64(pageCount % 64) != 0 {
                throw bad(f + " page bitmap", "pages set past the area's \(pageCount)")
            }
            let pages = try r.u64(f + " page checksums")
            guard pages == UInt64(held) else { throw bad(f + " page checksums", "\(pages) for the bitmap's \(held) pages") }
            let hashes = try r.u64s(held, f + " page checksums")
            if let p = hashes.firstIndex(where: { $0 & 1 == 0 }) {
                throw bad(f + " page checksums", "checksum \(p) is even; a page's checksum never is")
            }
            s.regions.append(SavedRegion(range: range, readOnly: flag == 1, fileOffset: fileOffset, bitmap: bitmap, hashes: hashes))
        }
        let vcpuCount = try r.u64("vcpus")
        guard vcpuCount >= 1 && vcpuCount <= 64 else { throw bad("vcpus", "\(vcpuCount); from 1 to 64") }
        for i in 0..<Int(vcpuCount) {
            let v = SavedVCPU(ended: try r.u8("vcpu \(i) ended"), value: try r.u64("vcpu \(i) end value"),
                              state: try r.blob("vcpu \(i) state", limit: 1 << 20))
            guard v.ended <= 3 else { throw bad("vcpu \(i) ended", "\(v.ended); 0 running, 1 exited, 2 halted, 3 halted for good") }
            if v.ended == 1 && v.value > 255 { throw bad("vcpu \(i) end value", "exit code \(v.value); at most 255") }
            if v.ended == 0 && v.value != 0 { throw bad("vcpu \(i) end value", "\(v.value) for a running vCPU; 0") }
            guard v.state.count == Int(s.vcpuStateSize) else {
                throw bad("vcpu \(i) state", "\(v.state.count) bytes; the header says \(s.vcpuStateSize)")
            }
            s.vcpus.append(v)
        }
        if !s.vcpus.contains(where: { $0.ended == 0 }) { throw bad("vcpus", "every vCPU had ended: nothing to resume") }
        s.vm = try r.blob("vm state", limit: 1 << 20)
        guard s.vm.count == Int(s.vmStateSize) else { throw bad("vm state", "\(s.vm.count) bytes; the header says \(s.vmStateSize)") }
        guard r.remaining == 4 else { throw bad("end", "\(r.remaining - 4) bytes after the last field") }
        try s.checkMachine(path: path)
        return s
    }

    /// The areas a restore of this snapshot makes, as the loader of its kind makes them for
    /// its memory size on its architecture: the RAM layout (`X86Layout`/`AArch64Layout`) and,
    /// for memtest, the ROM. Anything else (no RAM, RAM moved or cut, an extra area) is
    /// refused naming the first area that differs.
    func checkMachine(path: String) throws(VMMError) {
        guard let arch = GuestArch(rawValue: arch) else { throw .snapshot(path: path, field: "arch", reason: "\(self.arch)") }
        var expected = arch.ramRanges(size: memorySize).map { (range: $0, readOnly: false) }
        if kind == "memtest", let rom = GuestPhysRange(start: GuestPhysAddr(arch.romBase), size: VMConfig.romSize) {
            expected.append((rom, true))
        }
        expected.sort { $0.range.start < $1.range.start }
        for i in 0..<max(expected.count, regions.count) {
            let want = i < expected.count ? "\(expected[i].readOnly ? "ROM" : "RAM") \(expected[i].range)" : "none"
            let have = i < regions.count ? "\(regions[i].readOnly ? "ROM" : "RAM") \(regions[i].range)" : "none"
            guard want == have else {
                throw .snapshot(path: path, field: "region \(i)",
                                reason: "\(have); a \(kind) guest of \(memorySize) bytes on \(arch.rawValue) has \(want) there")
            }
        }
    }
}
