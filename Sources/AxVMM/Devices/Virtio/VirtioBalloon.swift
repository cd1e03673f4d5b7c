/// virtio-balloon (virtio 1.2 §5.5, device ID 5): guest memory that goes back to the host.
///
/// Queues, numbered as the driver numbers them — compacted when a feature is absent (§5.5.2):
/// inflate, deflate, then statistics (with `STATS_VQ`), then free page reporting (with
/// `REPORTING`). Free page hinting is not offered.
/// - inflate: device-readable arrays of 32-bit page frame numbers (4 KiB pages) the guest
///   hands over; each page goes back to the host (`BalloonBackend.release`);
/// - deflate: pages the guest takes back; nothing to do, their next touch faults them in;
/// - statistics: a buffer of (u16 tag, u64 value) entries; the device keeps the numbers and
///   holds the buffer, handing it back every `statsMillis` to ask for fresh ones;
/// - reporting: device-writable buffers, each a free range of guest memory (Linux: 2 or 4
///   MiB blocks, about 2 s after they are freed); each goes back to the host. The device
///   never writes them.
/// Config space: `num_pages` (the target the host asks the guest to hold, in 4 KiB pages)
/// and `actual` (what the guest holds; it writes it).
///
/// A hostile guest: page numbers and ranges outside RAM, ranges that wrap, partial pages
/// (only whole pages inside a range go back) and odd statistics buffers are counted and
/// skipped, never break the device or the VMM.
public struct VirtioBalloon: VirtioDevice {
    public let deviceID: UInt32 = 5
    public static let statsQueueFeature: UInt64 = 1 << 1, deflateOnOOM: UInt64 = 1 << 2, reportingFeature: UInt64 = 1 << 5
    public let features: UInt64 = statsQueueFeature | deflateOnOOM | reportingFeature
    /// inflate, deflate, statistics, reporting (when every feature is negotiated).
    public let queueMaxSizes: [UInt16] = [256, 256, 64, 64]
    /// How often the statistics buffer is handed back for fresh numbers.
    public static let statsMillis: Int32 = 1000
    public var tickMillis: Int32 { Self.statsMillis }
    /// A statistics buffer holds at most this many entries (Linux has 10 tags, 16 in all).
    static let maxStats = 64

    public enum Queue: Equatable, Sendable { case inflate, deflate, stats, reporting }

    let backend: BalloonBackend
    var negotiated: UInt64 = 0
    /// The target in 4 KiB pages (config `num_pages`).
    var targetPages: UInt32
    /// What the driver says it holds (config `actual`).
    var actualPages: UInt32 = 0
    /// The statistics chain the device holds (its head), until `tick` hands it back.
    var heldStats: UInt16?

    public init(backend: BalloonBackend, targetPages: UInt32 = 0) {
        self.backend = backend
        self.targetPages = targetPages
        backend.update { $0.targetPages = targetPages }
    }

    /// What queue `index` is with the negotiated features (nil: none).
    public func queue(_ index: Int) -> Queue? {
        var roles: [Queue] = [.inflate, .deflate]
        if negotiated & Self.statsQueueFeature != 0 { roles.append(.stats) }
        if negotiated & Self.reportingFeature != 0 { roles.append(.reporting) }
        return index < roles.count ? roles[index] : nil
    }

    // MARK: Config space

    public func readConfig(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        var config = [UInt8](repeating: 0, count: 16)
        for i in 0..<4 {
            config[i] = UInt8(truncatingIfNeeded: targetPages >> (8 * UInt32(i)))
            config[4 + i] = UInt8(truncatingIfNeeded: actualPages >> (8 * UInt32(i)))
        }
        for i in 0..<data.count where offset + UInt64(i) < UInt64(config.count) { data[i] = config[Int(offset) + i] }
    }

    /// `actual` is the only field the driver writes (a whole or partial little-endian u32 at 4).
    public mutating func writeConfig(offset: UInt64, from data: UnsafeRawBufferPointer) {
        var value = actualPages
        for i in 0..<data.count {
            let at = offset + UInt64(i)
            guard at >= 4 && at < 8 else { continue }
            let shift = 8 * UInt32(at - 4)
            value = value & ~(0xff << shift) | UInt32(data[i]) << shift
        }
        guard value != actualPages else { return }
        actualPages = value
        backend.update { $0.actualPages = value }
    }

    public mutating func activate(features: UInt64) { negotiated = features }

    public mutating func reset() {
        negotiated = 0
        heldStats = nil
    }

    /// Changes the target (a control request): the transport then signals a config change.
    public mutating func setTarget(pages: UInt32) {
        targetPages = pages
        backend.update { $0.targetPages = pages }
    }

    // MARK: Queues

    public mutating func process(queue index: Int, _ q: inout Virtqueue) throws(VirtqueueError) {
        let role = queue(index)
        while let chain = try q.pop() {
            switch role {
            case .inflate: try pageNumbers(chain, q, inflate: true)
            case .deflate: try pageNumbers(chain, q, inflate: false)
            case .reporting: report(chain)
            case .stats:
                try readStats(chain, q)
                // One buffer is held at a time; an older one goes back first.
                if let held = heldStats { try q.addUsed(head: held, written: 0) }
                heldStats = chain.head
                continue
            case nil: break  // a queue without a role: its buffers are returned unused
            }
            try q.addUsed(head: chain.head, written: 0)
        }
    }

    /// Hands the statistics buffer back: the driver refills it with fresh numbers.
    public mutating func tick(queue index: Int, _ q: inout Virtqueue) throws(VirtqueueError) {
        guard queue(index) == .stats, let held = heldStats else { return }
        heldStats = nil
        try q.addUsed(head: held, written: 0)
    }

    /// Inflate: each page goes back to the host (runs of consecutive page numbers at once);
    /// deflate: only counted.
    func pageNumbers(_ chain: DescriptorChain, _ q: Virtqueue, inflate: Bool) throws(VirtqueueError) {
        let count = Int(min(chain.readableLength / 4, 4096))
        guard count > 0 else { return }
        var bytes = [UInt8](repeating: 0, count: count * 4)
        try withBytes(&bytes) { (b) throws(VirtqueueError) in try q.read(chain, offset: 0, into: b) }
        var pfns: [UInt64] = []
        pfns.reserveCapacity(count)
        for i in 0..<count {
            pfns.append(UInt64(bytes[4 * i]) | UInt64(bytes[4 * i + 1]) << 8 | UInt64(bytes[4 * i + 2]) << 16 | UInt64(bytes[4 * i + 3]) << 24)
        }
        guard inflate else {
            backend.update { $0.deflatedPages += UInt64(count) }
            return
        }
        var returned: UInt64 = 0, refused: UInt64 = 0
        for run in consecutiveRuns(pfns, step: 1) {
            do throws(DeviceMemoryError) {
                returned += try backend.release(pfns[run.lowerBound] << 12, UInt64(run.count) << 12)
            } catch { refused += 1 }
        }
        backend.update {
            $0.inflatedPages += UInt64(count)
            $0.returnedBytes += returned
            $0.refusedRanges += refused
        }
    }

    /// Reporting: every writable buffer is a free range; its whole pages go back.
    func report(_ chain: DescriptorChain) {
        var pages: UInt64 = 0, returned: UInt64 = 0, refused: UInt64 = 0
        for s in chain.writable {
            let start = (s.gpa &+ 4095) & ~4095
            let (end, overflow) = s.gpa.addingReportingOverflow(UInt64(s.length))
            guard !overflow else { refused += 1; continue }
            let last = end & ~4095
            guard last > start else { continue }
            do throws(DeviceMemoryError) {
                returned += try backend.release(start, last - start)
                pages += (last - start) >> 12
            } catch { refused += 1 }
        }
        backend.update {
            $0.reports += 1
            $0.reportedPages += pages
            $0.returnedBytes += returned
            $0.refusedRanges += refused
        }
    }

    /// The statistics: whole (u16 tag, u64 value) entries, little-endian, at most `maxStats`.
    func readStats(_ chain: DescriptorChain, _ q: Virtqueue) throws(VirtqueueError) {
        let count = Int(min(chain.readableLength / 10, UInt64(Self.maxStats)))
        var bytes = [UInt8](repeating: 0, count: count * 10)
        if count > 0 { try withBytes(&bytes) { (b) throws(VirtqueueError) in try q.read(chain, offset: 0, into: b) } }
        var stats: [BalloonStat] = []
        for i in 0..<count {
            let e = 10 * i
            var v: UInt64 = 0
            for k in 0..<8 { v |= UInt64(bytes[e + 2 + k]) << (8 * UInt64(k)) }
            stats.append(BalloonStat(tag: UInt16(bytes[e]) | UInt16(bytes[e + 1]) << 8, value: v))
        }
        backend.update {
            $0.guestStats = stats
            $0.statsUpdates += 1
        }
    }

    // MARK: State

    /// Version 1: u32 target, u32 actual, u64 negotiated features, u8 holding a statistics
    /// buffer, u16 its head.
    public func saveState() -> DeviceState {
        var w = VirtioStateWriter()
        w.u32(targetPages)
        w.u32(actualPages)
        w.u64(negotiated)
        w.u8(heldStats == nil ? 0 : 1)
        w.u16(heldStats ?? 0)
        return DeviceState(version: 1, bytes: w.bytes)
    }

    public mutating func restoreState(_ state: DeviceState, path: String) throws(VMMError) {
        var r = VirtioStateReader(bytes: state.bytes, path: path, prefix: "virtio-balloon: ")
        guard state.version == 1 else { throw r.error("version", "version \(state.version), this axvm reads 1") }
        let target = try r.u32("target")
        let actual = try r.u32("actual")
        let f = try r.u64("features")
        let offered = features | VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
        guard f & ~offered == 0 else { throw r.error("features", "0x\(String(f, radix: 16)) beyond the offered 0x\(String(offered, radix: 16))") }
        let held = try r.u8("held statistics")
        guard held <= 1 else { throw r.error("held statistics", "\(held) is not 0 or 1") }
        let head = try r.u16("held statistics head")
        guard head < queueMaxSizes[2] else { throw r.error("held statistics head", "\(head) is not below the queue's \(queueMaxSizes[2])") }
        try r.end()
        targetPages = target
        actualPages = actual
        negotiated = f
        heldStats = held == 1 ? head : nil
        backend.update {
            $0.targetPages = target
            $0.actualPages = actual
        }
    }
}

/// One guest statistic (§5.5.6.3).
public struct BalloonStat: Sendable, Equatable {
    public var tag: UInt16
    public var value: UInt64
    /// The tag's name in the statistics output, or "tag-N".
    public var name: String {
        let names = ["swap-in", "swap-out", "major-faults", "minor-faults", "free-memory", "total-memory",
                     "available-memory", "disk-caches", "hugetlb-allocations", "hugetlb-failures"]
        return Int(tag) < names.count ? names[Int(tag)] : "tag-\(tag)"
    }
}

/// What the balloon did, for the run's statistics.
public struct BalloonCounters: Sendable, Equatable {
    /// The target (config `num_pages`) and what the guest says it holds (`actual`), pages.
    public var targetPages: UInt32 = 0
    public var actualPages: UInt32 = 0
    public var inflatedPages: UInt64 = 0
    public var deflatedPages: UInt64 = 0
    /// Free page reports (buffers) and the whole pages they named.
    public var reports: UInt64 = 0
    public var reportedPages: UInt64 = 0
    /// Bytes that were populated when inflated or reported, and so went back to the host.
    public var returnedBytes: UInt64 = 0
    /// Page runs or ranges refused (outside RAM, wrapping).
    public var refusedRanges: UInt64 = 0
    /// The guest's latest statistics, and how many times it sent them.
    public var guestStats: [BalloonStat] = []
    public var statsUpdates: UInt64 = 0
    public init() {}
}

/// The balloon's side of the VMM: how a range goes back to the host (checked against RAM;
/// the bytes that were populated), and the counters the device keeps for the report.
public final class BalloonBackend: @unchecked Sendable {  // `counters` under `lock`
    let release: @Sendable (_ gpa: UInt64, _ length: UInt64) throws(DeviceMemoryError) -> UInt64
    private let lock = Lock()
    private var counters = BalloonCounters()

    public init(release: @escaping @Sendable (UInt64, UInt64) throws(DeviceMemoryError) -> UInt64) {
        self.release = release
    }

    public var current: BalloonCounters { lock.withLock { counters } }
    func update(_ body: (inout BalloonCounters) -> Void) { lock.withLock { body(&counters) } }
}
