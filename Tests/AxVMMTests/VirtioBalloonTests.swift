@testable import AxVMM
import Synchronization
import Testing

/// virtio-balloon against the model driver (`VirtioTestDriver`): queue numbering with and
/// without features, inflated and reported memory going back through the backend, the
/// statistics buffer held and handed back on a tick, the config space, hostile page numbers
/// and ranges, the state across a snapshot.
@Suite struct VirtioBalloonTests {
    /// The ranges the device gave back, as the backend saw them; RAM ranges are "returned"
    /// (the populated bytes: all of them here), the rest refused as `GuestMemory` refuses them.
    final class Releases: @unchecked Sendable {  // `ranges` under `lock`
        let lock = Lock()
        var ranges: [(UInt64, UInt64)] = []
        func backend(_ ram: VirtioTestRAM) -> BalloonBackend {
            BalloonBackend(release: { gpa, length throws(DeviceMemoryError) in
                guard ram.contains(gpa, length) else { throw .outsideRAM(gpa: gpa, length: length) }
                self.lock.withLock { self.ranges.append((gpa, length)) }
                return length
            })
        }
        var all: [[UInt64]] { lock.withLock { ranges.map { [$0.0, $0.1] } } }
    }

    typealias Driver = VirtioTestDriver<VirtioBalloon>

    /// A balloon whose driver negotiated `accept`, with every queue its features give set up;
    /// the drivers of queues 0 … n (rings 0x4000 apart).
    func balloon(accept: UInt64 = ~0, target: UInt32 = 0) -> (Driver, [Driver], BalloonBackend, Releases) {
        let ram = VirtioTestRAM()
        let releases = Releases()
        let backend = releases.backend(ram)
        let d = Driver(VirtioBalloon(backend: backend, targetPages: target), ram: ram)
        #expect(d.negotiate(accept: accept))
        let count = 2 + (d.features & VirtioBalloon.statsQueueFeature != 0 ? 1 : 0) + (d.features & VirtioBalloon.reportingFeature != 0 ? 1 : 0)
        var queues = [d]
        for i in 1..<count { queues.append(Driver(sharing: d, queueBase: UInt64(i) * 0x4000)) }
        for (i, q) in queues.enumerated() { q.setUpQueue(UInt32(i)) }
        d.driverOK()
        return (d, queues, backend, releases)
    }

    func pfns(_ list: [UInt32]) -> [UInt8] { list.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } } }

    @Test func queuesAreNumberedByTheNegotiatedFeatures() {
        let (all, _, _, _) = balloon()
        #expect(all.mmio.withDevice { d in (0..<5).map { d.queue($0) } } == [.inflate, .deflate, .stats, .reporting, nil])
        // Without the statistics queue, reporting moves up to 2 (§5.5.2).
        let (noStats, _, _, _) = balloon(accept: ~VirtioBalloon.statsQueueFeature)
        #expect(noStats.mmio.withDevice { d in (0..<4).map { d.queue($0) } } == [.inflate, .deflate, .reporting, nil])
        let (bare, _, _, _) = balloon(accept: ~(VirtioBalloon.statsQueueFeature | VirtioBalloon.reportingFeature))
        #expect(bare.mmio.withDevice { d in (0..<3).map { d.queue($0) } } == [.inflate, .deflate, nil])
    }

    @Test func inflatedPagesGoBackAndDeflateIsCounted() {
        let (d, q, backend, releases) = balloon()
        let first = UInt32(d.ram.base >> 12) + 0x20
        // Three consecutive pages (one range), one apart, one outside RAM (refused).
        d.ram[d.data, 20] = pfns([first, first + 1, first + 2, first + 9, 0x10])
        q[0].post([Buffer(gpa: d.data, length: 20, writable: false)])
        q[0].kick(0)
        #expect(q[0].takeUsed().map(\.length) == [0])
        #expect(releases.all == [[UInt64(first) << 12, 3 * 4096], [UInt64(first + 9) << 12, 4096]])
        var c = backend.current
        #expect(c.inflatedPages == 5 && c.returnedBytes == 4 * 4096 && c.refusedRanges == 1)
        d.ram[d.data, 8] = pfns([first, first + 1])
        q[1].post([Buffer(gpa: d.data, length: 8, writable: false)])
        q[1].kick(1)
        #expect(q[1].takeUsed().count == 1)
        c = backend.current
        #expect(c.deflatedPages == 2 && releases.all.count == 2)
        #expect(!d.broken)
    }

    @Test func reportedRangesGoBackWholePagesOnly() {
        let (d, q, backend, releases) = balloon()
        let a = d.ram.base + 0x40000, b = d.ram.base + 0x80000
        let before = d.ram[a, 0x20000]
        // A 2-page range, an unaligned one (its whole page only), one shorter than a page.
        q[3].post([Buffer(gpa: a, length: 0x2000, writable: true), Buffer(gpa: b + 0x800, length: 0x2000, writable: true),
                   Buffer(gpa: b + 0x8000, length: 0x800, writable: true)])
        q[3].kick(3)
        #expect(q[3].takeUsed().map(\.length) == [0])
        #expect(releases.all == [[a, 0x2000], [b + 0x1000, 0x1000]])
        let c = backend.current
        #expect(c.reports == 1 && c.reportedPages == 3 && c.returnedBytes == 3 * 4096 && c.refusedRanges == 0)
        #expect(d.ram[a, 0x20000] == before, "the device wrote into a reported range")
        #expect(!d.broken)
        // A range outside RAM is a hostile ring: the device stops (DEVICE_NEEDS_RESET), gives nothing back.
        q[3].post([Buffer(gpa: 0x1000, length: 0x1000, writable: true)])
        q[3].kick(3)
        #expect(d.broken && releases.all.count == 2)
    }

    /// Without a RAM check in the ring walk, the backend's own check refuses what is not RAM,
    /// counted, and the device goes on (a range that wraps is refused by the walk itself).
    @Test func theBackendRefusesWhatIsNotRAM() {
        let ram = VirtioTestRAM()
        let releases = Releases()
        let backend = releases.backend(ram)
        let d = Driver(VirtioBalloon(backend: backend), ram: ram, checkRAM: false)
        #expect(d.negotiate())
        let queues = [d] + (1..<4).map { Driver(sharing: d, queueBase: UInt64($0) * 0x4000) }
        for (i, q) in queues.enumerated() { q.setUpQueue(UInt32(i)) }
        d.driverOK()
        queues[3].post([Buffer(gpa: 0x1000, length: 0x1000, writable: true), Buffer(gpa: 0x7000_0000, length: 0x4000, writable: true)])
        queues[3].kick(3)
        #expect(queues[3].takeUsed().count == 1)
        #expect(backend.current.refusedRanges == 2 && releases.all.isEmpty && !d.broken)
    }

    @Test func statisticsAreKeptAndTheBufferHandedBackOnATick() {
        let (d, q, backend, _) = balloon()
        func stats(_ entries: [(UInt16, UInt64)]) -> [UInt8] {
            entries.flatMap { e in (0..<2).map { UInt8(truncatingIfNeeded: e.0 >> (8 * $0)) } + (0..<8).map { UInt8(truncatingIfNeeded: e.1 >> (8 * $0)) } }
        }
        d.ram[d.data, 20] = stats([(4, 123 << 20), (5, 512 << 20)])
        q[2].post([Buffer(gpa: d.data, length: 20, writable: false)])
        q[2].kick(2)
        #expect(q[2].takeUsed().isEmpty, "the statistics buffer is held")
        #expect(backend.current.guestStats == [BalloonStat(tag: 4, value: 123 << 20), BalloonStat(tag: 5, value: 512 << 20)])
        #expect(backend.current.guestStats.map(\.name) == ["free-memory", "total-memory"])
        d.mmio.tick()
        #expect(q[2].takeUsed().count == 1, "handed back on the tick")
        d.mmio.tick()
        #expect(q[2].takeUsed().isEmpty, "nothing held, nothing handed back")
        // A refill with an odd length: whole entries only (the 10-byte one), tag 99 named by number.
        d.ram[d.data, 15] = stats([(99, 7)]) + [1, 2, 3, 4, 5]
        q[2].post([Buffer(gpa: d.data, length: 15, writable: false)])
        q[2].kick(2)
        #expect(backend.current.guestStats.map(\.name) == ["tag-99"] && backend.current.statsUpdates == 2)
        #expect(!d.broken)
    }

    @Test func configSpaceHasTheTargetAndTakesActual() {
        let (d, _, backend, _) = balloon(target: 0x1234)
        #expect(d.r32(VirtioMMIORegister.config) == 0x1234)
        d.w32(VirtioMMIORegister.config + 4, 0x1200)
        #expect(d.r32(VirtioMMIORegister.config + 4) == 0x1200)
        #expect(backend.current.targetPages == 0x1234 && backend.current.actualPages == 0x1200)
        // num_pages is the host's: a driver's write there changes nothing.
        d.w32(VirtioMMIORegister.config, 7)
        #expect(d.r32(VirtioMMIORegister.config) == 0x1234)
    }

    @Test func stateRoundTripsWithTheHeldStatistics() throws {
        let (d, q, _, _) = balloon(target: 300)
        d.w32(VirtioMMIORegister.config + 4, 200)
        d.ram[d.data, 10] = [4, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        q[2].post([Buffer(gpa: d.data, length: 10, writable: false)])
        q[2].kick(2)
        let state = d.mmio.saveState()
        let ram2 = d.ram
        let releases = Releases()
        let e = Driver(VirtioBalloon(backend: releases.backend(ram2)), ram: ram2)
        try e.mmio.restoreState(state, path: "snap/state")
        #expect(e.mmio.saveState() == state)
        #expect(e.r32(VirtioMMIORegister.config) == 300 && e.r32(VirtioMMIORegister.config + 4) == 200)
        // The restored device hands the held buffer back on its first tick.
        let e2 = Driver(sharing: e, queueBase: 0x8000)
        e2.lastUsed = q[2].lastUsed
        e.mmio.tick()
        #expect(e2.takeUsed().count == 1)
        // Bad device states are refused, naming the field.
        var bad = d.mmio.withDevice { $0.saveState() }
        bad.bytes[16] = 2
        var dev = VirtioBalloon(backend: releases.backend(ram2))
        #expect(throws: VMMError.self) { try dev.restoreState(bad, path: "s") }
        #expect(throws: VMMError.self) { try dev.restoreState(DeviceState(version: 2, bytes: []), path: "s") }
        #expect(throws: VMMError.self) { try dev.restoreState(DeviceState(version: 1, bytes: [1, 2, 3]), path: "s") }
    }
}
