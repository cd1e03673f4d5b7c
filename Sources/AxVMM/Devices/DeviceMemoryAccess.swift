import AxAddrSpace
#if canImport(Glibc)
import Glibc
#endif

/// Guest RAM for devices (`DeviceMemory`), over `GuestMemory`:
///
/// - every (address, length) must lie inside one writable RAM area (not a ROM, not the MMIO
///   hole, no overflow), else `DeviceMemoryError.outsideRAM` and nothing is touched;
/// - the pages are made present the way a guest touch makes them present — through
///   `handlePageFault`, so a lazy page comes in (from the snapshot, after a restore) and the
///   library stays the record of what is populated — with one lock round trip for the whole
///   access, not one per page; the bytes then move through the VMM's own view of the memfd,
///   with the fault-resolution lock held shared so that no reclaim punches a page meanwhile.
///   The view of a data transfer (a page or more) is dropped afterwards, so guest pages
///   do not count twice in the process's RSS; a small access (rings, request headers, status
///   bytes) keeps it: the same few pages are touched again at every request, and dropping
///   them cost a syscall and a page fault each time;
/// - the pages a device writes are recorded (`vmmWritten`), and a diff snapshot takes them
///   with the pages KVM's dirty log saw the guest write.
extension GuestMemory {
    /// Accesses of at least this many bytes drop the VMM's view of their pages afterwards.
    static var dropViewBytes: Int { 4096 }

    /// The accessor a device is given.
    public var deviceAccess: DeviceMemory {
        DeviceMemory(read: { [self] gpa, buffer throws(DeviceMemoryError) in
            _ = try devicePieces(gpa, count: buffer.count, write: false) { piece, done in
                (buffer.baseAddress! + done).copyMemory(from: piece.baseAddress!, byteCount: piece.count)  // pieces are never empty
                return true
            }
        }, write: { [self] gpa, buffer throws(DeviceMemoryError) in
            _ = try devicePieces(gpa, count: buffer.count, write: true) { piece, done in
                piece.baseAddress!.copyMemory(from: buffer.baseAddress! + done, byteCount: piece.count)
                return true
            }
        }, direct: { [self] gpa, count, deviceWrites, body throws(DeviceMemoryError) in
            try devicePieces(gpa, count: count, write: deviceWrites) { piece, _ in body(piece) }
        })
    }

    /// The area holding all of [gpa, gpa + count), if a writable RAM area does.
    private func ramRegion(_ gpa: UInt64, _ count: Int) -> RAMRegion? {
        let (end, overflow) = gpa.addingReportingOverflow(UInt64(count))
        guard !overflow else { return nil }
        return regions.first { !$0.readOnly && $0.range.start.raw <= gpa && end <= $0.range.end.raw }
    }

    /// Makes the pages of [gpa, gpa + count) present and calls `piece` for each run of them
    /// contiguous in the VMM's view of the memfd (with the bytes done before it), in order,
    /// until one returns false; returns whether none did.
    private func devicePieces(_ gpa: UInt64, count: Int, write: Bool,
                              _ piece: (UnsafeMutableRawBufferPointer, Int) -> Bool) throws(DeviceMemoryError) -> Bool {
        guard count > 0 else { return true }
        guard let region = ramRegion(gpa, count) else { throw .outsideRAM(gpa: gpa, length: UInt64(count)) }
        return try resolution.shared { () throws(DeviceMemoryError) -> Bool in
            // One lock round trip: each page made present and its host address found.
            let (hosts, fresh) = try withSpace { s throws(DeviceMemoryError) -> ([UInt64], [UInt64]) in
                var out: [UInt64] = [], fresh: [UInt64] = []
                var page = GuestPhysAddr(gpa).alignedDown(4096)
                while page.raw < gpa + UInt64(count) {
                    var faulted = false
                    if s.translate(page) == nil {
                        let r = s.handlePageFault(page, access: write ? .write : .read)
                        guard r.isResolved else {
                            throw .failed(gpa: page.raw, reason: r == .notInArea ? "not in a memory area" : "\(r)")
                        }
                        faulted = true
                    }
                    guard let hpa = s.translate(page) else { throw .failed(gpa: page.raw, reason: "not present after its fault") }
                    out.append(hpa.raw)
                    if faulted { fresh.append(hpa.raw) }
                    page = page + 4096
                }
                if write { markWritten(region, gpa, count) }
                return (out, fresh)
            }
            // A fresh frame is a hole of the memfd (`MemfdHAL`): made present as the pager
            // makes it, so that the file holds every page the library calls populated even if
            // the device then leaves it untouched (a short read, a body that stops).
            for run in consecutiveRuns(fresh, step: 4096) {
                do throws(VMMError) { try host.materialize(fresh[run.lowerBound], UInt64(run.count) * 4096) } catch {
                    throw .failed(gpa: gpa, reason: "\(error)")
                }
            }
            // Runs of pages: each frame follows the one before in the memfd. One madvise per
            // run drops the VMM's view afterwards (one per page cost a syscall per 4 KiB).
            let runs = consecutiveRuns(hosts, step: 4096)
            defer { if count >= Self.dropViewBytes { for r in runs { host.dropView(hosts[r.lowerBound], UInt64(r.count) * 4096) } } }
            let end = gpa + UInt64(count)
            var done = 0
            for run in runs {
                let (i, j) = (run.lowerBound, run.upperBound)
                let runStart = (gpa & ~0xfff) + UInt64(i) * 4096
                let from = max(gpa, runStart)
                let n = Int(min(end, runStart + UInt64(j - i) * 4096) - from)
                // Sound: the run's frames are in the memfd, inside the VMM's view of it
                // (`HostMemory.base`), present and not reclaimable while `resolution` is held.
                let bytes = UnsafeMutableRawBufferPointer(start: host.base + Int(hosts[i] + (from - runStart)), count: n)
                // A transfer's run of several pages comes into the view with one call, not a
                // fault per page (it goes again after); a single page is left to its one fault.
                if count >= Self.dropViewBytes && j - i > 1 { host.populateView(hosts[i], UInt64(j - i) * 4096, write: write) }
                guard piece(bytes, done) else { return false }
                done += n
            }
            return true
        }
    }
}
