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
///   with the fault-resolution lock held shared so that no reclaim punches a page meanwhile;
/// - the pages a device writes are recorded (`vmmWritten`), and a diff snapshot takes them
///   with the pages KVM's dirty log saw the guest write.
extension GuestMemory {
    /// The accessor a device is given.
    public var deviceAccess: DeviceMemory {
        DeviceMemory(read: { [self] gpa, buffer throws(DeviceMemoryError) in
            try deviceCopy(gpa, count: buffer.count, write: false) { host, done, n in
                (buffer.baseAddress! + done).copyMemory(from: host, byteCount: n)  // non-empty: count > 0 here
            }
        }, write: { [self] gpa, buffer throws(DeviceMemoryError) in
            try deviceCopy(gpa, count: buffer.count, write: true) { host, done, n in
                host.copyMemory(from: buffer.baseAddress! + done, byteCount: n)
            }
        })
    }

    /// The area holding all of [gpa, gpa + count), if a writable RAM area does.
    private func ramRegion(_ gpa: UInt64, _ count: Int) -> RAMRegion? {
        let (end, overflow) = gpa.addingReportingOverflow(UInt64(count))
        guard !overflow else { return nil }
        return regions.first { !$0.readOnly && $0.range.start.raw <= gpa && end <= $0.range.end.raw }
    }

    /// Makes the pages of [gpa, gpa + count) present and calls `copy` for each page's part
    /// with its host address, the bytes done so far and the part's length.
    private func deviceCopy(_ gpa: UInt64, count: Int, write: Bool,
                            _ copy: (UnsafeMutableRawPointer, Int, Int) -> Void) throws(DeviceMemoryError) {
        guard count > 0 else { return }
        guard let region = ramRegion(gpa, count) else { throw .outsideRAM(gpa: gpa, length: UInt64(count)) }
        try resolution.shared { () throws(DeviceMemoryError) in
            // One lock round trip: each page made present and its host address found.
            let hosts = try withSpace { s throws(DeviceMemoryError) -> [UInt64] in
                var out: [UInt64] = []
                var page = GuestPhysAddr(gpa).alignedDown(4096)
                while page.raw < gpa + UInt64(count) {
                    if s.translate(page) == nil {
                        let r = s.handlePageFault(page, access: write ? .write : .read)
                        guard r.isResolved else {
                            throw .failed(gpa: page.raw, reason: r == .notInArea ? "not in a memory area" : "\(r)")
                        }
                    }
                    guard let hpa = s.translate(page) else { throw .failed(gpa: page.raw, reason: "not present after its fault") }
                    out.append(hpa.raw)
                    page = page + 4096
                }
                if write { markWritten(region, gpa, count) }
                return out
            }
            var done = 0
            for (i, hpa) in hosts.enumerated() {
                let pageStart = (gpa & ~0xfff) + UInt64(i) * 4096
                let from = max(gpa, pageStart)
                let n = Int(min(gpa + UInt64(count), pageStart + 4096) - from)
                // Sound: `hpa` is a frame of the memfd, inside the VMM's view of it (`HostMemory.base`).
                copy(host.base + Int(hpa + (from - pageStart)), done, n)
                done += n
            }
            for hpa in hosts { host.dropView(hpa, 4096) }
        }
    }
}
