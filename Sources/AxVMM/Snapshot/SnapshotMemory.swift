import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

extension GuestMemory {
    /// Writes the guest's pages to `fd`, each at its place (`SnapshotState`: the areas end to
    /// end, holes for the rest), and returns the areas with their page index. The pages are
    /// those the library says are populated (no scan of the memfd), read with pread (the VMM
    /// never maps them a second time), and, in a restored VM, those its snapshot holds that
    /// the guest has not touched yet (`SnapshotPages.pending`), copied from that snapshot.
    func writeSnapshot(to fd: Int32, path: String) throws(VMMError) -> [SnapshotState.SavedRegion] {
        var saved: [SnapshotState.SavedRegion] = []
        var fileOffset: UInt64 = 0
        let chunkPages = 256
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkPages * 4096, alignment: 4096)
        defer { buffer.deallocate() }
        for region in regions {
            var populated: [Int] = []
            forEachPopulatedPage(region) { populated.append($0) }
            let pending = withSpace { _ in hal.contents?.pending(in: region.range) ?? [] }
            // Runs of consecutive pages from one source, in page order (the two lists are
            // sorted and disjoint: a pending page is not populated).
            var runs: [(first: Int, count: Int, parent: Bool)] = []
            var a = 0, b = 0
            while a < populated.count || b < pending.count {
                let takeParent = a == populated.count || (b < pending.count && pending[b].page < populated[a])
                let page = takeParent ? pending[b].page : populated[a]
                if takeParent { b += 1 } else { a += 1 }
                if let last = runs.last, last.parent == takeParent, last.first + last.count == page {
                    runs[runs.count - 1].count += 1
                } else {
                    runs.append((page, 1, takeParent))
                }
            }
            var hashes: [UInt64] = []
            var extents: [SnapshotState.Extent] = []
            var nextPending = 0
            for run in runs {
                if let last = extents.last, last.first + last.count == UInt64(run.first) {
                    extents[extents.count - 1].count += UInt64(run.count)
                } else {
                    extents.append(SnapshotState.Extent(first: UInt64(run.first), count: UInt64(run.count)))
                }
                var done = 0
                while done < run.count {
                    let n = min(chunkPages, run.count - done)
                    let page = UInt64(run.first + done)
                    let bytes = n * 4096
                    let at = fileOffset + page * 4096
                    let failed: Int32?
                    if run.parent {
                        // Straight from the parent's file, with the checksum it recorded.
                        let source = withSpace { _ in hal.contents?.pointer(region.range.start + page * 4096) }
                        guard let source else { throw .snapshot(path: path, field: "guest memory", reason: "the restored snapshot's page is gone") }
                        for _ in 0..<n { hashes.append(pending[nextPending].hash); nextPending += 1 }
                        failed = writeAll(fd, UnsafeRawBufferPointer(start: source, count: bytes), at: at)
                    } else {
                        let got = pread(host.fd.raw, buffer, bytes, off_t(region.spanOffset + page * 4096))
                        guard got == bytes else {
                            throw .snapshot(path: path, field: "guest memory", reason: "pread(memfd) of \(region.range.start + page * 4096): \(got < 0 ? errnoString(errno) : "short read")")
                        }
                        for p in 0..<n { hashes.append(PageHash.of(buffer + p * 4096)) }
                        failed = writeAll(fd, UnsafeRawBufferPointer(start: buffer, count: bytes), at: at)
                    }
                    if let e = failed { throw .snapshot(path: path, field: "guest memory", reason: "write: \(errnoString(e))") }
                    done += n
                }
            }
            saved.append(SnapshotState.SavedRegion(range: region.range, readOnly: region.readOnly, fileOffset: fileOffset,
                                                   extents: extents, hashes: hashes))
            fileOffset += region.range.size
        }
        // The holes at the end too: the file's size is the layout's.
        guard ftruncate(fd, off_t(fileOffset)) == 0 else {
            throw .snapshot(path: path, field: "guest memory", reason: "ftruncate: \(errnoString(errno))")
        }
        return saved
    }
}

/// Where a restored VM's pages come from: the snapshot's memory file, mapped read-only
/// (shared page cache between clones of one snapshot). `MemfdHAL` asks it for every frame
/// the library hands out; a page the snapshot holds is copied into the memfd with one
/// pwrite (checked against its checksum first), any other stays a hole (a zero page, as in a
/// lazy boot). A page handed out once and freed again (reclaimed) is forgotten: its next
/// touch reads zeros, as without a snapshot.
///
/// Used under `GuestMemory`'s lock (from the HAL).
final class SnapshotPages: @unchecked Sendable {  // under GuestMemory's lock
    let path: String
    private let map: UnsafeRawPointer?
    private let mapSize: Int
    /// Per area: the guest range, its offset in the file, and each page's checksum
    /// (0: not in the snapshot, or already handed out).
    private var areas: [(range: GuestPhysRange, fileOffset: UInt64, hashes: [UInt64])]
    /// The first damaged page, for the pager's report.
    private(set) var failure: String?
    private(set) var pagesCopied = 0

    init(directory: String, state: SnapshotState) throws(VMMError) {
        path = directory + "/" + SnapshotState.memoryFile
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)  // a FIFO must not block: refused below
        guard fd >= 0 else { throw .snapshot(path: path, field: "memory file", reason: errnoString(errno)) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            throw .snapshot(path: path, field: "memory file", reason: "not a regular file")
        }
        let expected = state.memoryFileSize
        guard UInt64(st.st_size) == expected else {
            throw .snapshot(path: path, field: "memory file size", reason: "\(st.st_size) bytes; the state says \(expected) (truncated or from another snapshot)")
        }
        mapSize = Int(expected)
        if expected > 0 {
            let p = mmap(nil, mapSize, PROT_READ, MAP_SHARED, fd, 0)
            guard let p, p != MAP_FAILED else { throw .snapshot(path: path, field: "memory file", reason: "mmap: \(errnoString(errno))") }
            map = UnsafeRawPointer(p)
        } else {
            map = nil
        }
        areas = state.regions.map { r in
            var dense = [UInt64](repeating: 0, count: Int(r.range.size / 4096))
            var k = 0
            for e in r.extents { for i in 0..<Int(e.count) { dense[Int(e.first) + i] = r.hashes[k]; k += 1 } }
            return (r.range, r.fileOffset, dense)
        }
    }
    deinit { if let map { munmap(UnsafeMutableRawPointer(mutating: map), mapSize) } }

    /// Copies the snapshot's page for `gpa` (if it holds one not handed out yet) into
    /// `memfd` at `offset`. False if the page is damaged (its checksum differs) or cannot be
    /// written: `failure` says which.
    func fill(_ gpa: GuestPhysAddr, memfd: Int32, at offset: UInt64) -> Bool {
        guard let a = areas.firstIndex(where: { $0.range.contains(gpa) }), let map else { return true }
        let page = Int((gpa - areas[a].range.start) / 4096)
        let hash = areas[a].hashes[page]
        guard hash != 0 else { return true }
        // Sound: the page lies inside the file, which is mapped whole (size checked in init).
        let source = map + Int(areas[a].fileOffset) + page * 4096
        guard PageHash.of(source) == hash else {
            failure = failure ?? "page 0x\(String(gpa.alignedDown(4096).raw, radix: 16)) at offset \(areas[a].fileOffset + UInt64(page) * 4096) of \(path) does not match its checksum (the file is damaged)"
            return false
        }
        if let e = writeAll(memfd, UnsafeRawBufferPointer(start: source, count: 4096), at: offset) {
            failure = failure ?? "copying page 0x\(String(gpa.alignedDown(4096).raw, radix: 16)) from \(path) into guest memory: \(errnoString(e))"
            return false
        }
        areas[a].hashes[page] = 0
        pagesCopied += 1
        return true
    }

    /// The pages of `range` the snapshot holds that were not handed out yet: (page index
    /// from `range.start`, checksum), in order. `range` is one whole area.
    func pending(in range: GuestPhysRange) -> [(page: Int, hash: UInt64)] {
        guard let a = areas.first(where: { $0.range == range }) else { return [] }
        var out: [(page: Int, hash: UInt64)] = []
        for (i, h) in a.hashes.enumerated() where h != 0 { out.append((i, h)) }
        return out
    }

    /// Where the snapshot's copy of the page at `gpa` is mapped (nil: outside the file).
    func pointer(_ gpa: GuestPhysAddr) -> UnsafeRawPointer? {
        guard let a = areas.first(where: { $0.range.contains(gpa) }), let map else { return nil }
        return map + Int(a.fileOffset + (gpa.alignedDown(4096) - a.range.start))
    }

    /// Forgets the snapshot's pages in `range` (reclaimed: they read as zeros from now on).
    func forget(_ range: GuestPhysRange) {
        for a in areas.indices {
            let lo = max(range.start.raw, areas[a].range.start.raw), hi = min(range.end.raw, areas[a].range.end.raw)
            guard lo < hi else { continue }
            let base = areas[a].range.start.raw
            for p in Int((lo - base) / 4096)..<Int((hi - base + 4095) / 4096) { areas[a].hashes[p] = 0 }
        }
    }
}
