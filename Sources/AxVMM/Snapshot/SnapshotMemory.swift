import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// Where a page written to a snapshot comes from: the guest's memfd, the restored
/// snapshot's file (a page the guest has not touched since), or nowhere (a zero page: a hole).
private enum SnapshotPageSource: Equatable { case memfd, parent, zero }

extension GuestMemory {
    /// Writes the guest's pages to `fd`, each at its place (`SnapshotState`: the areas end to
    /// end, holes for the rest), and returns the areas with their page index.
    ///
    /// A full snapshot holds the pages the library says are populated (no scan of the
    /// memfd), read with pread (the VMM never maps them a second time), and, in a restored
    /// VM, those its snapshot holds that the guest has not touched yet
    /// (`SnapshotPages.pending`), copied from that snapshot. A `diff` snapshot of a restored
    /// VM holds only the pages KVM saw the guest write since the restore (its dirty log),
    /// and, as zero pages, those the restored snapshot held that read zero now (reclaimed);
    /// every other page is its parent's.
    func writeSnapshot(to fd: Int32, path: String, diff: Bool = false) throws(VMMError) -> [SnapshotState.SavedRegion] {
        var saved: [SnapshotState.SavedRegion] = []
        var fileOffset: UInt64 = 0
        let chunkPages = 256
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkPages * 4096, alignment: 4096)
        defer { buffer.deallocate() }
        // In address order, as the state file lists areas (arm64's and riscv64's ROM lies
        // below their RAM, where the loader adds it after).
        for region in regions.sorted(by: { $0.range.start < $1.range.start }) {
            defer { fileOffset += region.range.size }
            let count = Int(region.range.size / 4096)
            var populated = [Bool](repeating: false, count: count)
            forEachPopulatedPage(region) { populated[$0] = true }
            // (page, where its bytes come from, its checksum if known), in page order.
            var pages: [(page: Int, source: SnapshotPageSource, hash: UInt64)] = []
            if diff {
                // Read-only areas never change: their pages are all the parent's.
                guard let dirty = try dirtyPages(region) else {
                    saved.append(SnapshotState.SavedRegion(range: region.range, readOnly: region.readOnly, fileOffset: fileOffset,
                                                           bitmap: SnapshotState.SavedRegion.bitmap(pages: count, []), hashes: []))
                    continue
                }
                let dropped = withSpace { _ in hal.contents?.dropped(in: region.range) ?? [] }.filter { !populated[$0] }
                var d = 0
                for p in 0..<count {
                    let written = populated[p] && dirty[p / 64] & (1 << UInt64(p % 64)) != 0
                    if d < dropped.count && dropped[d] == p {
                        pages.append((p, .zero, SnapshotPages.zeroPageHash))
                        d += 1
                    } else if written {
                        pages.append((p, .memfd, 0))
                    }
                }
            } else {
                let pending = withSpace { _ in hal.contents?.pending(in: region.range) ?? [] }
                var b = 0
                for p in 0..<count {
                    if populated[p] {
                        pages.append((p, .memfd, 0))
                    } else if b < pending.count && pending[b].page == p {
                        pages.append((p, .parent, pending[b].hash))
                    }
                    while b < pending.count && pending[b].page <= p { b += 1 }
                }
            }
            var hashes: [UInt64] = []
            var k = 0
            while k < pages.count {
                // A run: consecutive pages from one source, at most `chunkPages`.
                var n = 1
                while k + n < pages.count && n < chunkPages && pages[k + n].source == pages[k].source
                        && pages[k + n].page == pages[k].page + n { n += 1 }
                let first = pages[k].page
                let bytes = n * 4096
                let at = fileOffset + UInt64(first) * 4096
                var failed: Int32?
                switch pages[k].source {
                case .zero:
                    hashes += pages[k..<k + n].map { $0.hash }  // a hole of the file
                case .parent:
                    // Straight from the restored snapshot's file, with the checksum it recorded.
                    hashes += pages[k..<k + n].map { $0.hash }
                    // One page at a time: consecutive pages may lie in different layers.
                    for p in 0..<n {
                        let gpa = region.range.start + UInt64(first + p) * 4096
                        guard let contents = withSpace({ _ in hal.contents }) else {
                            throw .snapshot(path: path, field: "guest memory", reason: "the restored snapshot's page \(gpa) is gone")
                        }
                        try withSpace { _ throws(VMMError) in try contents.copyPage(gpa, to: fd, at: at + UInt64(p) * 4096, path: path) }
                    }
                case .memfd:
                    let got = pread(host.fd.raw, buffer, bytes, off_t(region.spanOffset + UInt64(first) * 4096))
                    guard got == bytes else {
                        throw .snapshot(path: path, field: "guest memory", reason: "pread(memfd) of \(region.range.start + UInt64(first) * 4096): \(got < 0 ? errnoString(errno) : "short read")")
                    }
                    for p in 0..<n { hashes.append(PageHash.of(buffer + p * 4096)) }
                    failed = writeAll(fd, UnsafeRawBufferPointer(start: buffer, count: bytes), at: at)
                }
                if let e = failed { throw .snapshot(path: path, field: "guest memory", reason: "write: \(errnoString(e))") }
                k += n
            }
            saved.append(SnapshotState.SavedRegion(range: region.range, readOnly: region.readOnly, fileOffset: fileOffset,
                                                   bitmap: SnapshotState.SavedRegion.bitmap(pages: count, pages.lazy.map { $0.page }),
                                                   hashes: hashes))
        }
        // The holes at the end too: the file's size is the layout's.
        guard ftruncate(fd, off_t(fileOffset)) == 0 else {
            throw .snapshot(path: path, field: "guest memory", reason: "ftruncate: \(errnoString(errno))")
        }
        return saved
    }
}

/// Where a restored VM's pages come from: the snapshot's memory file — and, for a diff
/// snapshot, its parents' — each held open for the whole run and read with pread, never
/// mapped. `MemfdHAL` asks it for every frame the library hands out; a page the snapshot
/// holds is read into a buffer of the VMM's own, checked against its checksum there and
/// copied into the memfd with one pwrite; any other stays a hole (a zero page, as in a lazy
/// boot). A page handed out once and freed again (reclaimed) is forgotten: its next touch
/// reads zeros, as without a snapshot.
///
/// Why pread and not a mapping: the files are shared with other programs and other axvm
/// processes. A mapped file that shrinks under the VMM kills it with SIGBUS at the next read
/// of a page past the new end; a read is an error like any other instead ("the file ends at
/// …"), which ends the run through its normal path (status 3 naming the file and the page,
/// statistics written). A file renamed over or deleted changes nothing: the descriptor holds
/// the file that was checked. A file rewritten in place is caught by the page checksums,
/// after the copy into the private buffer, so what is checked is what the guest gets. The
/// page cache is shared between clones of one snapshot either way.
///
/// Used under `GuestMemory`'s lock (from the HAL).
final class SnapshotPages: @unchecked Sendable {  // under GuestMemory's lock
    /// One memory file, open.
    private struct Layer {
        let path: String
        let fd: Int32
        let size: UInt64
    }
    private let layers: [Layer]
    /// One page, read from a file and checked before it goes anywhere.
    private let buffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
    /// The newest snapshot's memory file (errors name it).
    var path: String { layers.first?.path ?? "" }
    /// One layer's index of one area: which pages its file holds (a bitmap), each word's
    /// count of set bits before it (so a page's checksum is found without a per-page array),
    /// and the checksums in page order.
    private struct Index {
        let bitmap: [UInt64]
        let rank: [UInt32]
        let hashes: [UInt64]
        init(bitmap: [UInt64], hashes: [UInt64]) {
            self.bitmap = bitmap
            self.hashes = hashes
            var r = [UInt32](repeating: 0, count: bitmap.count)
            var n: UInt32 = 0
            for (i, w) in bitmap.enumerated() { r[i] = n; n += UInt32(w.nonzeroBitCount) }
            rank = r
        }
        func has(_ page: Int) -> Bool { bitmap[page / 64] & (1 << UInt64(page % 64)) != 0 }
        func hash(_ page: Int) -> UInt64 {
            let below = bitmap[page / 64] & ((1 << UInt64(page % 64)) - 1)
            return hashes[Int(rank[page / 64]) + below.nonzeroBitCount]
        }
    }
    /// Per area: the guest range, its offset in the files, each layer's index (0 newest),
    /// which pages the snapshot held at the restore (the union), and which of them are still
    /// to be handed out (cleared as pages are copied in or forgotten).
    private struct Area {
        let range: GuestPhysRange
        let fileOffset: UInt64
        let layers: [Index]
        let held: [UInt64]
        var pending: [UInt64]
        /// The newest layer holding `page`.
        func layer(of page: Int) -> Int? { layers.firstIndex { $0.has(page) } }
    }
    private var areas: [Area]
    /// The first damaged page, for the pager's report.
    private(set) var failure: String?
    private(set) var pagesCopied = 0
    /// Pages the snapshot (with its parents) holds.
    private(set) var pagesHeld = 0

    /// `chain`: the snapshot restored, then its parent, and so on (all with one layout:
    /// `RestoreSource` checks it).
    init(chain: [(directory: String, state: SnapshotState)]) throws(VMMError) {
        var layers: [Layer] = []
        for (directory, state) in chain {
            let path = directory + "/" + SnapshotState.memoryFile
            let fd = ckvm_open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)  // a FIFO must not block: refused below
            var st = stat()
            let expected = state.memoryFileSize
            var problem: (String, String)?
            if fd < 0 {
                problem = ("memory file", errnoString(errno))
            } else if fstat(fd, &st) != 0 || ckvm_is_regular_file(UInt32(st.st_mode)) == 0 {
                problem = ("memory file", "not a regular file")
            } else if UInt64(st.st_size) != expected {
                problem = ("memory file size", "\(st.st_size) bytes; the state says \(expected) (truncated or from another snapshot)")
            }
            if let (field, reason) = problem {
                if fd >= 0 { close(fd) }
                for l in layers { close(l.fd) }
                buffer.deallocate()
                throw .snapshot(path: path, field: field, reason: reason)
            }
            layers.append(Layer(path: path, fd: fd, size: expected))
        }
        self.layers = layers
        let regions = chain.first?.state.regions ?? []
        areas = regions.enumerated().map { a, r in
            let indexes = chain.map { Index(bitmap: $0.state.regions[a].bitmap, hashes: $0.state.regions[a].hashes) }
            var union = [UInt64](repeating: 0, count: r.bitmap.count)
            for x in indexes { for w in union.indices { union[w] |= x.bitmap[w] } }
            return Area(range: r.range, fileOffset: r.fileOffset, layers: indexes, held: union, pending: union)
        }
        pagesHeld = areas.reduce(0) { $0 + $1.held.reduce(0) { $0 + $1.nonzeroBitCount } }
    }
    deinit {
        for l in layers { close(l.fd) }
        buffer.deallocate()
    }

    /// The checksum of a page of zeros: how a diff snapshot records a page that reads zero
    /// again (a hole in its file).
    static let zeroPageHash: UInt64 = {
        let z = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)
        defer { z.deallocate() }
        z.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        return PageHash.of(z)
    }()

    /// Reads the snapshot's page `page` of area `a` into `buffer` and checks it against its
    /// checksum: nil if it is whole, else what is wrong (naming the file, the offset and the
    /// guest page). The page's bytes are in `buffer` only when nil is returned.
    private func readPage(area a: Int, page: Int) -> String? {
        let gpa = areas[a].range.start + UInt64(page) * 4096
        let name = "0x\(String(gpa.raw, radix: 16))"
        guard let l = areas[a].layer(of: page) else { return "page \(name) is in no snapshot file" }
        let offset = areas[a].fileOffset + UInt64(page) * 4096
        var done = 0
        while done < 4096 {
            let n = pread(layers[l].fd, buffer + done, 4096 - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                return "reading page \(name) at offset \(offset) of \(layers[l].path): \(errnoString(errno))"
            }
            if n == 0 {
                var st = stat()
                let size = fstat(layers[l].fd, &st) == 0 ? "\(st.st_size) bytes" : "shorter"
                return "page \(name) at offset \(offset) of \(layers[l].path) is gone: the file is now \(size), \(layers[l].size) when the restore began (it changed under the restore)"
            }
            done += n
        }
        guard PageHash.of(buffer) == areas[a].layers[l].hash(page) else {
            return "page \(name) at offset \(offset) of \(layers[l].path) does not match its checksum (the file is damaged, or changed under the restore)"
        }
        return nil
    }

    /// Copies the snapshot's page for `gpa` (if it holds one not handed out yet) into
    /// `memfd` at `offset`. False if the page cannot be read whole, is damaged (its checksum
    /// differs) or cannot be written: `failure` says which.
    func fill(_ gpa: GuestPhysAddr, memfd: Int32, at offset: UInt64) -> Bool {
        guard let a = areas.firstIndex(where: { $0.range.contains(gpa) }) else { return true }
        let page = Int((gpa - areas[a].range.start) / 4096)
        let bit: UInt64 = 1 << UInt64(page % 64)
        guard areas[a].pending[page / 64] & bit != 0 else { return true }
        if let problem = readPage(area: a, page: page) {
            failure = failure ?? problem
            return false
        }
        if let e = writeAll(memfd, UnsafeRawBufferPointer(start: buffer, count: 4096), at: offset) {
            failure = failure ?? "copying page 0x\(String(gpa.alignedDown(4096).raw, radix: 16)) into guest memory: \(errnoString(e))"
            return false
        }
        areas[a].pending[page / 64] &= ~bit
        pagesCopied += 1
        return true
    }

    /// The pages of `range` the snapshot holds that were not handed out yet: (page index
    /// from `range.start`, checksum), in order. `range` is one whole area.
    func pending(in range: GuestPhysRange) -> [(page: Int, hash: UInt64)] {
        guard let a = areas.first(where: { $0.range == range }) else { return [] }
        var out: [(page: Int, hash: UInt64)] = []
        for (w, word) in a.pending.enumerated() where word != 0 {
            var bits = word
            while bits != 0 {
                let page = w * 64 + bits.trailingZeroBitCount
                bits &= bits - 1
                if let l = a.layer(of: page) { out.append((page, a.layers[l].hash(page))) }
            }
        }
        return out
    }

    /// The pages of `range` (one whole area) the snapshot held at the restore and no longer
    /// hands out (copied in, or forgotten on a reclaim), in order.
    func dropped(in range: GuestPhysRange) -> [Int] {
        guard let a = areas.first(where: { $0.range == range }) else { return [] }
        var out: [Int] = []
        for (w, held) in a.held.enumerated() {
            var bits = held & ~a.pending[w]
            while bits != 0 {
                out.append(w * 64 + bits.trailingZeroBitCount)
                bits &= bits - 1
            }
        }
        return out
    }

    /// Writes the snapshot's page for `gpa` (one it holds) to `fd` at `offset`, checked as
    /// `fill` checks it: a new snapshot of a restored VM carries over the pages the guest has
    /// not touched. Throws naming the page if it cannot be read whole or is damaged.
    func copyPage(_ gpa: GuestPhysAddr, to fd: Int32, at offset: UInt64, path: String) throws(VMMError) {
        guard let a = areas.firstIndex(where: { $0.range.contains(gpa) }) else {
            throw .snapshot(path: path, field: "guest memory", reason: "the restored snapshot holds no page \(gpa)")
        }
        if let problem = readPage(area: a, page: Int((gpa - areas[a].range.start) / 4096)) {
            throw .snapshot(path: path, field: "guest memory", reason: "the restored snapshot's " + problem)
        }
        if let e = writeAll(fd, UnsafeRawBufferPointer(start: buffer, count: 4096), at: offset) {
            throw .snapshot(path: path, field: "guest memory", reason: "write: \(errnoString(e))")
        }
    }

    /// Forgets the snapshot's pages in `range` (reclaimed: they read as zeros from now on).
    func forget(_ range: GuestPhysRange) {
        for a in areas.indices {
            let lo = max(range.start.raw, areas[a].range.start.raw), hi = min(range.end.raw, areas[a].range.end.raw)
            guard lo < hi else { continue }
            let base = areas[a].range.start.raw
            for p in Int((lo - base) / 4096)..<Int((hi - base + 4095) / 4096) { areas[a].pending[p / 64] &= ~(1 << UInt64(p % 64)) }
        }
    }
}
