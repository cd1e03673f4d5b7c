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
    static let version: UInt32 = 1
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
    var kind: String
    var loader: [UInt8]
    /// A diff snapshot's parent directory (absolute): its memory file holds only the pages
    /// written since the restore from the parent; every other page is the parent's. Empty
    /// for a full snapshot.
    var parent = ""
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
        w.string(kind)
        w.blob(loader)
        w.string(parent)
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

    /// Decodes and checks a state file: magic, version, CRC, and that every number fits
    /// what it describes. `path` names the file in errors.
    static func decode(_ bytes: [UInt8], path: String) throws(VMMError) -> SnapshotState {
        func bad(_ field: String, _ reason: String) -> VMMError { .snapshot(path: path, field: field, reason: reason) }
        var r = ByteReader(bytes, path: path)
        guard try r.raw(magic.count, "magic") == magic else { throw bad("magic", "not an axvm snapshot (no \"AXVMSNAP\" at the start)") }
        let v = try r.u32("version")
        guard v == version else { throw bad("version", "\(v); this axvm reads version \(version)") }
        // The CRC first: a damaged file is named as such, not by the first odd field.
        guard bytes.count >= magic.count + 8 else { throw bad("checksum", "the file is too short to hold one") }
        let body = bytes[..<(bytes.count - 4)]
        let stored = bytes[(bytes.count - 4)...].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }  // little-endian
        let crc = CRC32.checksum(body)
        guard crc == stored else {
            throw bad("checksum", "CRC-32 0x\(String(crc, radix: 16)) of the contents, 0x\(String(stored, radix: 16)) recorded: the file is damaged or truncated")
        }
        var s = SnapshotState(arch: try r.string("arch"), flavour: try r.string("kvm flavour"),
                              vcpuStateSize: try r.u32("vcpu state size"), vmStateSize: try r.u32("vm state size"),
                              kind: try r.string("guest kind"), loader: try r.blob("loader"), parent: try r.string("parent"),
                              memorySize: try r.u64("memory size"), regions: [], vcpus: [], vm: [])
        let regionCount = try r.u64("regions")
        guard regionCount <= 64 else { throw bad("regions", "\(regionCount) areas; at most 64") }
        var fileEnd: UInt64 = 0
        for i in 0..<Int(regionCount) {
            let f = "region \(i)"
            let start = try r.u64(f + " start"), size = try r.u64(f + " size")
            guard start & 0xfff == 0, size & 0xfff == 0, size > 0, size <= 1 << 40,
                  let range = GuestPhysRange(start: GuestPhysAddr(start), size: size) else {
                throw bad(f, "start 0x\(String(start, radix: 16)) size 0x\(String(size, radix: 16)) is not a page-aligned area")
            }
            let readOnly = try r.u8(f + " read-only") != 0
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
            s.regions.append(SavedRegion(range: range, readOnly: readOnly, fileOffset: fileOffset, bitmap: bitmap, hashes: hashes))
        }
        let vcpuCount = try r.u64("vcpus")
        guard vcpuCount >= 1 && vcpuCount <= 64 else { throw bad("vcpus", "\(vcpuCount); from 1 to 64") }
        for i in 0..<Int(vcpuCount) {
            let v = SavedVCPU(ended: try r.u8("vcpu \(i) ended"), value: try r.u64("vcpu \(i) end value"),
                              state: try r.blob("vcpu \(i) state", limit: 1 << 20))
            guard v.state.count == Int(s.vcpuStateSize) else {
                throw bad("vcpu \(i) state", "\(v.state.count) bytes; the header says \(s.vcpuStateSize)")
            }
            s.vcpus.append(v)
        }
        s.vm = try r.blob("vm state", limit: 1 << 20)
        guard s.vm.count == Int(s.vmStateSize) else { throw bad("vm state", "\(s.vm.count) bytes; the header says \(s.vmStateSize)") }
        guard r.remaining == 4 else { throw bad("end", "\(r.remaining - 4) bytes after the last field") }
        return s
    }
}
