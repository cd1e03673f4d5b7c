@testable import AxVMM
import Glibc
import Synchronization
import Testing

/// The virtio layer without a VM: a byte array as guest RAM, and a model driver doing what
/// Linux's virtio_mmio + virtio_ring do (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK,
/// queue setup, DRIVER_OK, requests in the descriptor table and available ring, QueueNotify,
/// the used ring and InterruptStatus read back).

/// Guest RAM: `size` bytes at `base`, behind a lock; anything outside is `outsideRAM`.
final class VirtioTestRAM: @unchecked Sendable {  // `bytes` only under `lock`
    let base: UInt64
    let size: UInt64
    private let lock = Lock()
    private var bytes: [UInt8]
    /// When set, accesses at this GPA fail as a pager failure would.
    let failAt = Atomic<UInt64>(0)

    init(base: UInt64 = 0x8000_0000, size: Int = 1 << 20) {
        self.base = base
        self.size = UInt64(size)
        bytes = [UInt8](repeating: 0, count: size)
    }

    func contains(_ gpa: UInt64, _ length: UInt64) -> Bool {
        gpa >= base && length <= size && gpa - base <= size - length
    }

    func check(_ gpa: UInt64, _ length: Int) throws(DeviceMemoryError) -> Int {
        guard contains(gpa, UInt64(length)) else { throw .outsideRAM(gpa: gpa, length: UInt64(length)) }
        let f = failAt.load(ordering: .relaxed)
        if f != 0 && f >= gpa && f < gpa + UInt64(max(length, 1)) { throw .failed(gpa: f, reason: "test failure") }
        return Int(gpa - base)
    }

    var memory: DeviceMemory {
        DeviceMemory(read: { gpa, into throws(DeviceMemoryError) in
            let at = try self.check(gpa, into.count)
            self.lock.withLock { self.bytes.withUnsafeBytes { into.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[at..<at + into.count])) } }
        }, write: { gpa, from throws(DeviceMemoryError) in
            let at = try self.check(gpa, from.count)
            self.lock.withLock { self.bytes.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[at..<at + from.count]).copyMemory(from: from) } }
        })
    }

    subscript(gpa: UInt64, count: Int) -> [UInt8] {
        get { lock.withLock { Array(bytes[Int(gpa - base)..<Int(gpa - base) + count]) } }
        set { lock.withLock { bytes.replaceSubrange(Int(gpa - base)..<Int(gpa - base) + count, with: newValue) } }
    }
    func put<T: FixedWidthInteger>(_ gpa: UInt64, _ v: T) {
        self[gpa, MemoryLayout<T>.size] = withUnsafeBytes(of: v.littleEndian) { Array($0) }
    }
    func get<T: FixedWidthInteger>(_ gpa: UInt64, as: T.Type = T.self) -> T {
        self[gpa, MemoryLayout<T>.size].withUnsafeBytes { T(littleEndian: $0.loadUnaligned(as: T.self)) }
    }
}

/// Counts the line's edges and tracks its level.
final class VirtioTestIRQ: Sendable {
    let triggers = Atomic<Int>(0)
    let level = Atomic<Bool>(false)
    var high: Bool { level.load(ordering: .relaxed) }
    var count: Int { triggers.load(ordering: .relaxed) }
    var line: InterruptLine {
        InterruptLine(trigger: { self.triggers.add(1, ordering: .relaxed) }, level: { self.level.store($0, ordering: .relaxed) })
    }
}

/// A buffer of a request: `length` bytes at `gpa`, device-writable or not.
struct Buffer {
    var gpa: UInt64
    var length: UInt32
    var writable: Bool
}

/// The model driver for one device with its first queue.
final class VirtioTestDriver<D: VirtioDevice> {
    typealias R = VirtioMMIORegister
    let ram: VirtioTestRAM
    let irq = VirtioTestIRQ()
    let mmio: VirtioMMIO<D>
    var size: UInt16 = 16
    /// Where this driver's rings are, from the RAM's start (another queue of the same
    /// transport: `init(sharing:queueBase:)`).
    var queueBase: UInt64 = 0
    var desc: UInt64 { ram.base + queueBase + 0x1000 }
    var avail: UInt64 { ram.base + queueBase + 0x2000 }
    var used: UInt64 { ram.base + queueBase + 0x3000 }
    /// Indirect tables go here, data buffers from `data` on.
    var indirectTable: UInt64 { ram.base + queueBase + 0x4000 }
    var data: UInt64 { ram.base + 0x10000 }
    var availIdx: UInt16 = 0
    var lastUsed: UInt16 = 0
    var nextDesc: UInt16 = 0
    var features: UInt64 = 0

    init(_ device: D, ram: VirtioTestRAM = VirtioTestRAM(), checkRAM: Bool = true) {
        self.ram = ram
        let inRAM: @Sendable (UInt64, UInt64) -> Bool = { [ram] gpa, length in ram.contains(gpa, length) }
        mmio = VirtioMMIO(device: device, memory: ram.memory, interrupt: irq.line, contains: checkRAM ? inRAM : nil)
    }

    /// Another queue of `other`'s transport, its rings `queueBase` bytes further (0x8000 apart
    /// keeps them clear of each other and below `data`).
    init(sharing other: VirtioTestDriver<D>, queueBase: UInt64) {
        ram = other.ram
        mmio = other.mmio
        self.queueBase = queueBase
        features = other.features
    }

    func r32(_ offset: UInt64) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { mmio.read(offset: offset, data: $0) }
        return UInt32(littleEndian: v)
    }
    func w32(_ offset: UInt64, _ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { mmio.write(offset: offset, data: $0) }
    }
    var status: UInt32 { r32(R.status) }

    /// Linux's probe up to FEATURES_OK: returns whether the device accepted the features
    /// (`accept` masks what the device offers; `extra` adds bits it does not).
    func negotiate(accept: UInt64 = ~0, extra: UInt64 = 0) -> Bool {
        w32(R.status, 0)
        w32(R.status, VirtioStatus.acknowledge)
        w32(R.status, VirtioStatus.acknowledge | VirtioStatus.driver)
        w32(R.deviceFeaturesSel, 1)
        var offered = UInt64(r32(R.deviceFeatures)) << 32
        w32(R.deviceFeaturesSel, 0)
        offered |= UInt64(r32(R.deviceFeatures))
        features = offered & accept | extra
        w32(R.driverFeaturesSel, 0)
        w32(R.driverFeatures, UInt32(truncatingIfNeeded: features))
        w32(R.driverFeaturesSel, 1)
        w32(R.driverFeatures, UInt32(truncatingIfNeeded: features >> 32))
        w32(R.status, VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK)
        return status & VirtioStatus.featuresOK != 0
    }

    func setUpQueue(_ index: UInt32 = 0, size: UInt32? = nil, desc d: UInt64? = nil, avail a: UInt64? = nil, used u: UInt64? = nil) {
        w32(R.queueSel, index)
        w32(R.queueNum, size ?? UInt32(self.size))
        for (low, v) in [(R.queueDescLow, d ?? desc), (R.queueDriverLow, a ?? avail), (R.queueDeviceLow, u ?? used)] {
            w32(low, UInt32(truncatingIfNeeded: v))
            w32(low + 4, UInt32(truncatingIfNeeded: v >> 32))
        }
        w32(R.queueReady, 1)
    }

    func driverOK() {
        w32(R.status, status | VirtioStatus.driverOK)
    }

    /// The whole probe: features (all offered, masked), queue 0, DRIVER_OK.
    @discardableResult
    func start(accept: UInt64 = ~0) -> Bool {
        guard negotiate(accept: accept) else { return false }
        ram[desc, 0x4000] = [UInt8](repeating: 0, count: 0x4000)  // fresh rings and indirect table, as Linux allocates
        setUpQueue()
        driverOK()
        availIdx = 0
        lastUsed = 0
        nextDesc = 0
        return status & VirtioStatus.driverOK != 0
    }

    func writeDescriptor(_ table: UInt64, _ i: UInt16, gpa: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let at = table + 16 * UInt64(i)
        ram.put(at, gpa)
        ram.put(at + 8, length)
        ram.put(at + 12, flags)
        ram.put(at + 14, next)
    }

    /// Makes a chain of `buffers` available (in an indirect table if asked) and returns its head.
    @discardableResult
    func post(_ buffers: [Buffer], indirect: Bool = false) -> UInt16 {
        let head = nextDesc % size
        if indirect {
            for (i, b) in buffers.enumerated() {
                writeDescriptor(indirectTable, UInt16(i), gpa: b.gpa, length: b.length,
                                flags: (i + 1 < buffers.count ? 1 : 0) | (b.writable ? 2 : 0), next: UInt16(i + 1))
            }
            writeDescriptor(desc, head, gpa: indirectTable, length: UInt32(16 * buffers.count), flags: 4, next: 0)
            nextDesc &+= 1
        } else {
            for (i, b) in buffers.enumerated() {
                let d = nextDesc % size
                writeDescriptor(desc, d, gpa: b.gpa, length: b.length,
                                flags: (i + 1 < buffers.count ? 1 : 0) | (b.writable ? 2 : 0), next: (d + 1) % size)
                nextDesc &+= 1
            }
        }
        publish(head)
        return head
    }

    func publish(_ head: UInt16) {
        ram.put(avail + 4 + 2 * UInt64(availIdx % size), head)
        availIdx &+= 1
        ram.put(avail + 2, availIdx)
    }

    func kick(_ queue: UInt32 = 0) { w32(R.queueNotify, queue) }

    /// Used elements since the last call.
    func takeUsed() -> [(id: UInt32, length: UInt32)] {
        let idx: UInt16 = ram.get(used + 2)
        var out: [(UInt32, UInt32)] = []
        while lastUsed != idx {
            let at = used + 4 + 8 * UInt64(lastUsed % size)
            out.append((ram.get(at), ram.get(at + 4)))
            lastUsed &+= 1
        }
        return out
    }

    var broken: Bool { status & VirtioStatus.needsReset != 0 }
}

/// A temporary raw image of `sectors` sectors, sector n filled with byte n & 0xff; removed on deinit.
final class TempImage {
    let path: String
    let fd: Int32
    let bytes: UInt64
    init(sectors: Int, size: UInt64? = nil) {
        var template = Array("/tmp/axvm-virtio-XXXXXX".utf8CString)
        fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        bytes = size ?? UInt64(sectors * 512)
        for s in 0..<sectors {
            let sector = [UInt8](repeating: UInt8(s & 0xff), count: 512)
            _ = sector.withUnsafeBytes { pwrite(fd, $0.baseAddress, 512, off_t(s * 512)) }
        }
        _ = ftruncate(fd, off_t(bytes))
    }
    deinit {
        close(fd)
        unlink(path)
    }
    func read(_ offset: Int, _ count: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0xee, count: count)
        _ = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        return b
    }
    var fileSize: Int {
        var st = stat()
        fstat(fd, &st)
        return Int(st.st_size)
    }
}

func blkHeader(type: UInt32, sector: UInt64) -> [UInt8] {
    withUnsafeBytes(of: type.littleEndian) { Array($0) } + [0, 0, 0, 0] + withUnsafeBytes(of: sector.littleEndian) { Array($0) }
}

@Suite struct VirtioTests {
    // MARK: Transport

    @Test func identityAndFeatureNegotiation() {
        let d = VirtioTestDriver(VirtioRNG())
        #expect(d.r32(VirtioMMIORegister.magicValue) == 0x7472_6976)
        #expect(d.r32(VirtioMMIORegister.version) == 2)
        #expect(d.r32(VirtioMMIORegister.deviceID) == 4)
        #expect(d.r32(VirtioMMIORegister.vendorID) == VirtioMMIORegister.vendor)
        #expect(d.r32(VirtioMMIORegister.queueNumMax) == 256)
        // Without VERSION_1 the device refuses FEATURES_OK (§6.1); bits it does not offer too.
        #expect(!d.negotiate(accept: ~VirtioFeature.version1))
        #expect(!d.negotiate(extra: 1 << 40))
        #expect(d.negotiate())
        #expect(d.features & VirtioFeature.version1 != 0)
        // Narrow or misaligned register accesses read zero.
        var b: UInt16 = 0xffff
        withUnsafeMutableBytes(of: &b) { d.mmio.read(offset: 0, data: $0) }
        #expect(b == 0)
        // A queue past the device's reads QueueNumMax 0.
        d.w32(VirtioMMIORegister.queueSel, 5)
        #expect(d.r32(VirtioMMIORegister.queueNumMax) == 0)
        // DRIVER_OK without FEATURES_OK is not taken.
        d.w32(VirtioMMIORegister.status, 0)
        d.w32(VirtioMMIORegister.status, VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.driverOK)
        #expect(d.status & VirtioStatus.driverOK == 0)
    }

    @Test func notificationBeforeDriverOKIsIgnored() {
        let d = VirtioTestDriver(VirtioRNG())
        #expect(d.negotiate())
        d.setUpQueue()
        d.post([Buffer(gpa: d.data, length: 64, writable: true)])
        d.kick()
        #expect(d.takeUsed().isEmpty)
        #expect(!d.broken)
        // DRIVER_OK serves what was made available before it, without another notification.
        d.driverOK()
        #expect(d.takeUsed().count == 1)
        d.post([Buffer(gpa: d.data, length: 64, writable: true)])
        d.kick()
        #expect(d.takeUsed().count == 1)
    }

    @Test func queueConfigurationWhileReadyIsRefused() {
        let d = VirtioTestDriver(VirtioRNG())
        #expect(d.start())
        // A driver rewriting size and descriptor table of a ready queue: ignored.
        d.w32(VirtioMMIORegister.queueNum, 4)
        d.w32(VirtioMMIORegister.queueDescLow, 0xdead_0000)
        d.w32(VirtioMMIORegister.queueReady, 1)
        for _ in 0..<3 {
            d.post([Buffer(gpa: d.data, length: 32, writable: true)])
            d.kick()
            #expect(d.takeUsed().count == 1)
        }
        #expect(!d.broken)
        // QueueReady 0, then new values are taken.
        d.w32(VirtioMMIORegister.queueReady, 0)
        #expect(d.r32(VirtioMMIORegister.queueReady) == 0)
        d.w32(VirtioMMIORegister.queueNum, 8)
        d.w32(VirtioMMIORegister.queueReady, 1)
        #expect(d.r32(VirtioMMIORegister.queueReady) == 1)
        #expect(d.mmio.lock.withLock { d.mmio.queues[0].size } == 8)
    }

    @Test(arguments: [0 as UInt32, 3, 12, 512, 0x1_0000])
    func badQueueSizesBreakTheDevice(size: UInt32) {
        let d = VirtioTestDriver(VirtioRNG())
        #expect(d.negotiate())
        d.setUpQueue(size: size)
        #expect(d.broken)
        #expect(d.r32(VirtioMMIORegister.queueReady) == 0)
        guard case .badQueueSize = d.mmio.brokenBy else {
            Issue.record("\(String(describing: d.mmio.brokenBy))")
            return
        }
        // A reset brings it back.
        #expect(d.start())
        #expect(!d.broken)
    }

    @Test func ringsOutsideRAMOrMisalignedBreakTheDevice() {
        let d = VirtioTestDriver(VirtioRNG())
        let cases: [(UInt64?, UInt64?, UInt64?, VirtqueueError)] = [
            (0x1000, nil, nil, .areaOutsideRAM(area: .descriptorTable, gpa: 0x1000, length: 256)),
            (nil, d.ram.base + d.ram.size - 4, nil, .areaOutsideRAM(area: .availableRing, gpa: d.ram.base + d.ram.size - 4, length: 38)),
            (nil, nil, UInt64.max - 3, .areaOutsideRAM(area: .usedRing, gpa: UInt64.max - 3, length: 134)),
            (d.ram.base + 8, nil, nil, .misaligned(area: .descriptorTable, gpa: d.ram.base + 8)),
            (nil, nil, d.ram.base + 0x3002, .misaligned(area: .usedRing, gpa: d.ram.base + 0x3002)),
        ]
        for (desc, avail, used, error) in cases {
            #expect(d.negotiate())
            d.setUpQueue(desc: desc, avail: avail, used: used)
            #expect(d.broken)
            #expect(d.mmio.brokenBy == error)
        }
    }

    @Test func interruptStatusAndLevel() {
        let d = VirtioTestDriver(VirtioRNG())
        #expect(d.start(accept: ~VirtioFeature.eventIndex))
        d.post([Buffer(gpa: d.data, length: 16, writable: true)])
        d.kick()
        #expect(d.r32(VirtioMMIORegister.interruptStatus) == VirtioInterrupt.usedBuffer)
        #expect(d.irq.high)
        #expect(d.irq.count == 1)
        d.post([Buffer(gpa: d.data, length: 16, writable: true)])
        d.kick()
        #expect(d.irq.count == 2)
        d.w32(VirtioMMIORegister.interruptACK, VirtioInterrupt.usedBuffer)
        #expect(d.r32(VirtioMMIORegister.interruptStatus) == 0)
        #expect(!d.irq.high)
        // VRING_AVAIL_F_NO_INTERRUPT (no EVENT_IDX): the used ring advances, no interrupt.
        d.ram.put(d.avail, UInt16(1))
        d.post([Buffer(gpa: d.data, length: 16, writable: true)])
        d.kick()
        #expect(d.takeUsed().count == 3)
        #expect(d.irq.count == 2)
        #expect(d.r32(VirtioMMIORegister.interruptStatus) == 0)
    }

    @Test func eventIndexSuppressesAndRequestsInterrupts() {
        let d = VirtioTestDriver(VirtioRNG())
        #expect(d.start())
        #expect(d.features & VirtioFeature.eventIndex != 0)
        let usedEvent = d.avail + 4 + 2 * UInt64(d.size)
        let availEvent = d.used + 4 + 8 * UInt64(d.size)
        // used_event 5: no interrupt until the used index passes 5.
        d.ram.put(usedEvent, UInt16(5))
        for i in 1...6 {
            d.post([Buffer(gpa: d.data, length: 8, writable: true)])
            d.kick()
            #expect(d.irq.count == (i >= 6 ? 1 : 0), "after \(i)")
            // The device asks to be notified at the next slot.
            #expect(d.ram.get(availEvent, as: UInt16.self) == UInt16(i))
        }
        #expect(d.takeUsed().count == 6)
        #expect(Virtqueue.needEvent(event: 0xffff, new: 0, old: 0xfffe))
        #expect(!Virtqueue.needEvent(event: 3, new: 3, old: 3))
        #expect(Virtqueue.needEvent(event: 2, new: 5, old: 1))
        #expect(!Virtqueue.needEvent(event: 7, new: 5, old: 1))
    }

    /// A device thread serving notifications (as an ioeventfd thread does) while the driver
    /// keeps adding chains and acknowledging interrupts from another thread.
    @Test func deviceThreadServesWhileTheDriverAdds() throws {
        let d = VirtioTestDriver(VirtioRNG())
        #expect(d.start())
        final class Stop: Sendable { let flag = Atomic<Bool>(false) }
        let stop = Stop()
        let mmio = d.mmio
        let thread = try OSThread(.helper, name: "axvm-test") {
            while !stop.flag.load(ordering: .acquiring) { mmio.notify(queue: 0) }
        }
        var done = 0
        let total = 2000
        var posted = 0
        while done < total {
            if posted < total && posted - done < 8 {
                d.post([Buffer(gpa: d.data + UInt64(posted % 8) * 64, length: 64, writable: true)])
                posted += 1
            }
            done += d.takeUsed().count
            d.w32(VirtioMMIORegister.interruptACK, d.r32(VirtioMMIORegister.interruptStatus))
        }
        stop.flag.store(true, ordering: .releasing)
        thread.join()
        #expect(done == total)
        #expect(!d.broken)
    }

    // MARK: virtio-blk

    func blk(_ image: TempImage, readOnly: Bool = false) -> VirtioTestDriver<VirtioBlock> {
        VirtioTestDriver(VirtioBlock(fd: image.fd, bytes: image.bytes, readOnly: readOnly, serial: "axvm-test-serial-0123456789"))
    }

    /// Posts a block request: header, then `out` bytes (readable), then `inCount` writable
    /// bytes and the status byte. Returns (status, used length, the bytes read).
    func request<D>(_ d: VirtioTestDriver<D>, type: UInt32, sector: UInt64, out: [UInt8] = [], inCount: Int = 0,
                    indirect: Bool = false) -> (status: UInt8, length: UInt32, data: [UInt8]) {
        let header = d.data, payload = d.data + 0x100, input = d.data + 0x40000, status = d.data + 0x80000
        d.ram[header, 16] = blkHeader(type: type, sector: sector)
        d.ram[status, 1] = [0xff]
        var buffers = [Buffer(gpa: header, length: 16, writable: false)]
        if !out.isEmpty {
            d.ram[payload, out.count] = out
            buffers.append(Buffer(gpa: payload, length: UInt32(out.count), writable: false))
        }
        if inCount > 0 {
            d.ram[input, inCount] = [UInt8](repeating: 0xcc, count: inCount)
            buffers.append(Buffer(gpa: input, length: UInt32(inCount), writable: true))
        }
        buffers.append(Buffer(gpa: status, length: 1, writable: true))
        let head = d.post(buffers, indirect: indirect)
        d.kick()
        let used = d.takeUsed()
        guard used.count == 1, used[0].id == UInt32(head) else {
            Issue.record("used \(used) for head \(head)")
            return (0xff, 0, [])
        }
        return (d.ram[status, 1][0], used[0].length, inCount > 0 ? d.ram[input, inCount] : [])
    }

    @Test func blockReadAndWrite() {
        let image = TempImage(sectors: 64)
        let d = blk(image)
        #expect(d.start())
        #expect(d.r32(VirtioMMIORegister.deviceID) == 2)
        // Config: capacity, blk_size.
        #expect(d.r32(VirtioMMIORegister.config) == 64)
        #expect(d.r32(VirtioMMIORegister.config + 20) == 512)
        var capacity: UInt64 = 0
        withUnsafeMutableBytes(of: &capacity) { d.mmio.read(offset: VirtioMMIORegister.config, data: $0) }
        #expect(capacity == 64)
        let r = request(d, type: 0, sector: 3, inCount: 1024)
        #expect(r.status == 0)
        #expect(r.length == 1025)
        #expect(r.data == [UInt8](repeating: 3, count: 512) + [UInt8](repeating: 4, count: 512))
        let pattern = (0..<2048).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let w = request(d, type: 1, sector: 10, out: pattern)
        #expect(w.status == 0)
        #expect(w.length == 1)
        #expect(image.read(10 * 512, 2048) == pattern)
        #expect(image.read(9 * 512, 512) == [UInt8](repeating: 9, count: 512))
        #expect(image.read(14 * 512, 512) == [UInt8](repeating: 14, count: 512))
        // Read back through the device, in an indirect table.
        let back = request(d, type: 0, sector: 10, inCount: 2048, indirect: true)
        #expect(back.status == 0 && back.data == pattern)
        #expect(!d.broken)
    }

    @Test func blockLargeRequestCrossesChunks() {
        let image = TempImage(sectors: 1024)
        let d = blk(image)
        #expect(d.start())
        let r = request(d, type: 0, sector: 100, inCount: 300 * 512)
        #expect(r.status == 0)
        let wrong = (0..<300).filter { (s: Int) -> Bool in
            let expected = UInt8((100 + s) & 0xff)
            return r.data[s * 512] != expected || r.data[s * 512 + 511] != expected
        }
        #expect(wrong.isEmpty)
    }

    @Test func blockFlushGetIDUnsupported() {
        let image = TempImage(sectors: 8)
        let d = blk(image)
        #expect(d.start())
        #expect(request(d, type: 4, sector: 0).status == 0)
        let id = request(d, type: 8, sector: 0, inCount: 20)
        #expect(id.status == 0 && id.length == 21)
        #expect(id.data == Array("axvm-test-serial-012".utf8))
        #expect(request(d, type: 99, sector: 0).status == 2)
        #expect(request(d, type: 10, sector: 0, inCount: 8).status == 2)  // GET_LIFETIME
        // FLUSH not negotiated: UNSUPP.
        #expect(d.start(accept: ~VirtioBlockFeature.flush))
        #expect(request(d, type: 4, sector: 0).status == 2)
    }

    func segment(_ sector: UInt64, _ count: UInt32, flags: UInt32 = 0) -> [UInt8] {
        withUnsafeBytes(of: sector.littleEndian) { Array($0) } + withUnsafeBytes(of: count.littleEndian) { Array($0) }
            + withUnsafeBytes(of: flags.littleEndian) { Array($0) }
    }

    @Test func blockDiscardAndWriteZeroes() {
        let image = TempImage(sectors: 64)
        let d = blk(image)
        #expect(d.start())
        #expect(d.features & VirtioBlockFeature.discard != 0 && d.features & VirtioBlockFeature.writeZeroes != 0)
        let wz = request(d, type: 13, sector: 0, out: segment(8, 8, flags: 1) + segment(32, 1))
        #expect(wz.status == 0)
        #expect(image.read(8 * 512, 8 * 512) == [UInt8](repeating: 0, count: 8 * 512))
        #expect(image.read(32 * 512, 512) == [UInt8](repeating: 0, count: 512))
        #expect(image.read(7 * 512, 512) == [UInt8](repeating: 7, count: 512))
        #expect(image.read(16 * 512, 512) == [UInt8](repeating: 16, count: 512))
        #expect(image.read(33 * 512, 512) == [UInt8](repeating: 33, count: 512))
        #expect(request(d, type: 11, sector: 0, out: segment(40, 16)).status == 0)
        #expect(image.fileSize == 64 * 512)
        // Discard with unmap, unknown flags: UNSUPP; ranges past the end: IOERR; a ragged payload: IOERR.
        #expect(request(d, type: 11, sector: 0, out: segment(40, 1, flags: 1)).status == 2)
        #expect(request(d, type: 13, sector: 0, out: segment(40, 1, flags: 2)).status == 2)
        #expect(request(d, type: 13, sector: 0, out: segment(60, 5)).status == 1)
        #expect(request(d, type: 13, sector: 0, out: segment(UInt64.max / 256, 5)).status == 1)
        #expect(request(d, type: 13, sector: 0, out: segment(1, 1) + [1, 2, 3]).status == 1)
        #expect(image.read(60 * 512, 512) == [UInt8](repeating: 60, count: 512))
        #expect(!d.broken)
    }

    @Test func readOnlyDiskRefusesWrites() {
        let image = TempImage(sectors: 16)
        let d = blk(image, readOnly: true)
        #expect(d.start())
        #expect(d.features & VirtioBlockFeature.readOnly != 0)
        #expect(d.features & VirtioBlockFeature.discard == 0)
        #expect(request(d, type: 1, sector: 2, out: [UInt8](repeating: 0xab, count: 512)).status == 1)
        #expect(image.read(2 * 512, 512) == [UInt8](repeating: 2, count: 512))
        #expect(request(d, type: 13, sector: 0, out: segment(2, 1)).status == 2)  // not negotiable
        #expect(request(d, type: 0, sector: 2, inCount: 512).status == 0)
    }

    @Test func outOfRangeSectorsAreIOErrors() {
        let image = TempImage(sectors: 16)
        let d = blk(image)
        #expect(d.start())
        #expect(request(d, type: 0, sector: 16, inCount: 512).status == 1)
        #expect(request(d, type: 0, sector: 15, inCount: 1024).status == 1)
        #expect(request(d, type: 0, sector: UInt64.max, inCount: 512).status == 1)
        #expect(request(d, type: 1, sector: 1 << 55, out: [UInt8](repeating: 1, count: 512)).status == 1)
        #expect(request(d, type: 0, sector: 0, inCount: 100).status == 1)  // not whole sectors
        #expect(request(d, type: 0, sector: 15, inCount: 512).status == 0)
        #expect(image.fileSize == 16 * 512)
        #expect(!d.broken)
    }

    @Test func malformedRequestsAreDropped() {
        let image = TempImage(sectors: 16)
        let d = blk(image)
        #expect(d.start())
        // A header shorter than 16 bytes and no status byte: returned with nothing written.
        d.post([Buffer(gpa: d.data, length: 8, writable: false)])
        d.kick()
        let u = d.takeUsed()
        #expect(u.count == 1 && u[0].length == 0)
        #expect(!d.broken)
        #expect(request(d, type: 0, sector: 1, inCount: 512).status == 0)
    }

    @Test func diskImageChecks() throws {
        let image = TempImage(sectors: 4)
        do {
            let disk = try DiskImage(path: image.path, readOnly: false)
            #expect(disk.size == 2048)
            // A second writer, or a reader while it is open for writing: refused.
            #expect(throws: DiskImageError.locked(path: image.path, readOnly: false)) { try DiskImage(path: image.path, readOnly: false) }
            #expect(throws: DiskImageError.locked(path: image.path, readOnly: true)) { try DiskImage(path: image.path, readOnly: true) }
        }
        do {
            // Readers share; a writer is refused while they read.
            let r1 = try DiskImage(path: image.path, readOnly: true)
            let r2 = try DiskImage(path: image.path, readOnly: true)
            #expect(throws: DiskImageError.locked(path: image.path, readOnly: false)) { try DiskImage(path: image.path, readOnly: false) }
            #expect(r1.fd != r2.fd)
        }
        // All closed: a writer again.
        #expect(try DiskImage(path: image.path, readOnly: false).readOnly == false)
        let ragged = TempImage(sectors: 1, size: 1000)
        #expect(throws: DiskImageError.badSize(path: ragged.path, size: 1000)) { try DiskImage(path: ragged.path, readOnly: true) }
        let empty = TempImage(sectors: 0)
        #expect(throws: DiskImageError.badSize(path: empty.path, size: 0)) { try DiskImage(path: empty.path, readOnly: true) }
        #expect(throws: DiskImageError.notRegular(path: "/dev/null")) { try DiskImage(path: "/dev/null", readOnly: true) }
        #expect(throws: DiskImageError.open(path: "/nonexistent/disk", errno: ENOENT)) { try DiskImage(path: "/nonexistent/disk", readOnly: true) }
        // A device over the image: reads it.
        let d = VirtioTestDriver(VirtioBlock(image: try DiskImage(path: image.path, readOnly: true)))
        #expect(d.start())
        #expect(request(d, type: 0, sector: 3, inCount: 512).data == [UInt8](repeating: 3, count: 512))
    }

    // MARK: virtio-rng

    @Test func rngFillsBuffers() {
        let d = VirtioTestDriver(VirtioRNG())
        #expect(d.start())
        d.post([Buffer(gpa: d.data, length: 100, writable: true), Buffer(gpa: d.data + 0x1000, length: 300, writable: true)])
        d.kick()
        let u = d.takeUsed()
        #expect(u.count == 1 && u[0].length == 400)
        let a = d.ram[d.data, 100] + d.ram[d.data + 0x1000, 300]
        #expect(Set(a).count > 100)
        d.post([Buffer(gpa: d.data, length: 100, writable: true)], indirect: true)
        d.kick()
        #expect(d.takeUsed().first?.length == 100)
        #expect(d.ram[d.data, 100] != Array(a.prefix(100)))
        // Device-readable buffers are left alone, nothing is counted for them.
        d.ram[d.data + 0x2000, 16] = [UInt8](repeating: 0x5a, count: 16)
        d.post([Buffer(gpa: d.data + 0x2000, length: 16, writable: false)])
        d.kick()
        #expect(d.takeUsed().first?.length == 0)
        #expect(d.ram[d.data + 0x2000, 16] == [UInt8](repeating: 0x5a, count: 16))
    }

    // MARK: Hostile rings

    /// Sets up an RNG with EVENT_IDX and INDIRECT, lets `poison` write the rings, kicks,
    /// and checks the device is broken with `error` and comes back after a reset.
    func hostile(_ error: VirtqueueError, accept: UInt64 = ~0, checkRAM: Bool = true, _ poison: (VirtioTestDriver<VirtioRNG>) -> Void) {
        let d = VirtioTestDriver(VirtioRNG(), checkRAM: checkRAM)
        #expect(d.start(accept: accept))
        poison(d)
        d.kick()
        #expect(d.broken, "\(error)")
        #expect(d.mmio.brokenBy == error)
        #expect(d.r32(VirtioMMIORegister.interruptStatus) & VirtioInterrupt.configChange != 0)
        d.ram.failAt.store(0, ordering: .relaxed)
        // Broken: further notifications do nothing.
        d.kick()
        #expect(d.mmio.brokenBy == error)
        // A reset and a fresh setup work again.
        #expect(d.start())
        #expect(!d.broken)
        #expect(d.r32(VirtioMMIORegister.interruptStatus) == 0)
        d.ram.put(d.desc + 12, UInt16(2))  // the first descriptor a plain writable buffer
        d.ram.put(d.desc, d.data)
        d.ram.put(d.desc + 8, UInt32(16))
        d.publish(0)
        d.kick()
        #expect(d.takeUsed().count == 1)
    }

    @Test func hostileDescriptorOutsideRAM() {
        hostile(.descriptorOutsideRAM(index: 0, gpa: 0x1000, length: 64)) { d in
            d.post([Buffer(gpa: 0x1000, length: 64, writable: true)])
        }
        // Straddling RAM's end.
        hostile(.descriptorOutsideRAM(index: 1, gpa: 0x8000_0000 + (1 << 20) - 8, length: 64)) { d in
            d.post([Buffer(gpa: d.data, length: 8, writable: true), Buffer(gpa: d.ram.base + d.ram.size - 8, length: 64, writable: true)])
        }
        // Unchecked at parse time (no `contains`): refused on access, named the same way.
        hostile(.descriptorOutsideRAM(index: 0, gpa: 0x1000, length: 64), checkRAM: false) { d in
            d.post([Buffer(gpa: 0x1000, length: 64, writable: true)])
        }
    }

    @Test func hostileLengthOverflow() {
        hostile(.descriptorOutsideRAM(index: 0, gpa: UInt64.max - 0xfff, length: 0x2000)) { d in
            d.post([Buffer(gpa: UInt64.max - 0xfff, length: 0x2000, writable: true)])
        }
    }

    @Test func hostileLoops() {
        hostile(.chainLoops(head: 0, limit: 16)) { d in
            d.writeDescriptor(d.desc, 0, gpa: d.data, length: 8, flags: 3, next: 1)
            d.writeDescriptor(d.desc, 1, gpa: d.data, length: 8, flags: 3, next: 0)
            d.publish(0)
        }
        hostile(.chainLoops(head: 5, limit: 16)) { d in
            d.writeDescriptor(d.desc, 5, gpa: d.data, length: 8, flags: 3, next: 5)
            d.publish(5)
        }
        // A loop inside an indirect table: bounded by its 2 entries.
        hostile(.chainLoops(head: 0, limit: 2)) { d in
            d.writeDescriptor(d.indirectTable, 0, gpa: d.data, length: 8, flags: 3, next: 1)
            d.writeDescriptor(d.indirectTable, 1, gpa: d.data, length: 8, flags: 3, next: 0)
            d.writeDescriptor(d.desc, 0, gpa: d.indirectTable, length: 32, flags: 4, next: 0)
            d.publish(0)
        }
    }

    @Test func hostileIndexes() {
        hostile(.nextOutOfRange(index: 0, next: 16, size: 16)) { d in
            d.writeDescriptor(d.desc, 0, gpa: d.data, length: 8, flags: 3, next: 16)
            d.publish(0)
        }
        hostile(.nextOutOfRange(index: 1, next: 2, size: 2)) { d in
            d.writeDescriptor(d.indirectTable, 0, gpa: d.data, length: 8, flags: 3, next: 1)
            d.writeDescriptor(d.indirectTable, 1, gpa: d.data, length: 8, flags: 3, next: 2)
            d.writeDescriptor(d.desc, 0, gpa: d.indirectTable, length: 32, flags: 4, next: 0)
            d.publish(0)
        }
        hostile(.headOutOfRange(head: 0xffff, size: 16)) { d in d.publish(0xffff) }
        hostile(.availableIndexJump(lastSeen: 0, available: 17, size: 16)) { d in d.ram.put(d.avail + 2, UInt16(17)) }
        hostile(.availableIndexJump(lastSeen: 0, available: 0xffff, size: 16)) { d in d.ram.put(d.avail + 2, UInt16(0xffff)) }
    }

    @Test func hostileIndirect() {
        hostile(.nestedIndirect(index: 0)) { d in
            d.writeDescriptor(d.indirectTable, 0, gpa: d.indirectTable, length: 16, flags: 4, next: 0)
            d.writeDescriptor(d.desc, 0, gpa: d.indirectTable, length: 16, flags: 4, next: 0)
            d.publish(0)
        }
        hostile(.indirectNotNegotiated(index: 0), accept: ~VirtioFeature.indirectDescriptors) { d in
            d.post([Buffer(gpa: d.data, length: 8, writable: true)], indirect: true)
        }
        hostile(.indirectWithNext(index: 0)) { d in
            d.writeDescriptor(d.desc, 0, gpa: d.indirectTable, length: 16, flags: 5, next: 1)
            d.publish(0)
        }
        for length: UInt32 in [0, 17, 16 * 1025] {
            hostile(.badIndirectLength(index: 0, length: length)) { d in
                d.writeDescriptor(d.desc, 0, gpa: d.indirectTable, length: length, flags: 4, next: 0)
                d.publish(0)
            }
        }
        hostile(.areaOutsideRAM(area: .indirectTable, gpa: 0x10, length: 32)) { d in
            d.writeDescriptor(d.desc, 0, gpa: 0x10, length: 32, flags: 4, next: 0)
            d.publish(0)
        }
    }

    @Test func hostileOrderAndSizes() {
        hostile(.readableAfterWritable(index: 1)) { d in
            d.post([Buffer(gpa: d.data, length: 8, writable: true), Buffer(gpa: d.data, length: 8, writable: false)])
        }
        // Unchecked RAM: lengths adding past 4 GiB are refused before any access.
        hostile(.chainTooLarge(head: 0, bytes: 0x1_7fff_fffe), checkRAM: false) { d in
            d.post([Buffer(gpa: d.data, length: 0xffff_ffff, writable: true), Buffer(gpa: d.data, length: 0x7fff_ffff, writable: true)])
        }
        // Guest memory that cannot be made present.
        hostile(.memory(.failed(gpa: 0x8000_2002, reason: "test failure"))) { d in
            d.ram.failAt.store(d.avail + 2, ordering: .relaxed)
        }
    }

    @Test func hostileBlockRequestLeavesTheDiskAlone() {
        let image = TempImage(sectors: 16)
        let d = blk(image)
        #expect(d.start())
        // A write whose data descriptor points outside RAM: the device breaks, the file is untouched.
        d.ram[d.data, 16] = blkHeader(type: 1, sector: 0)
        d.post([Buffer(gpa: d.data, length: 16, writable: false), Buffer(gpa: 0x10, length: 512, writable: false),
                Buffer(gpa: d.data + 0x100, length: 1, writable: true)])
        d.kick()
        #expect(d.broken)
        #expect(d.mmio.brokenBy == .descriptorOutsideRAM(index: 1, gpa: 0x10, length: 512))
        #expect(image.read(0, 512) == [UInt8](repeating: 0, count: 512))
        #expect(d.takeUsed().isEmpty)
    }

    // MARK: Snapshots

    @Test func stateRoundTripMidStream() throws {
        let image = TempImage(sectors: 32)
        let ram = VirtioTestRAM()
        let d = VirtioTestDriver(VirtioBlock(fd: image.fd, bytes: image.bytes, readOnly: false), ram: ram)
        #expect(d.start())
        for s in 0..<5 { #expect(request(d, type: 0, sector: UInt64(s), inCount: 512).status == 0) }
        // Two requests made available but not notified: a restored device serves them.
        d.ram[d.data, 16] = blkHeader(type: 0, sector: 7)
        d.post([Buffer(gpa: d.data, length: 16, writable: false), Buffer(gpa: d.data + 0x1000, length: 512, writable: true),
                Buffer(gpa: d.data + 0x2000, length: 1, writable: true)])
        let state = d.mmio.saveState()
        #expect(state.version == 1)

        let e = VirtioTestDriver(VirtioBlock(fd: image.fd, bytes: image.bytes, readOnly: false), ram: ram)
        try e.mmio.restoreState(state, path: "snap/state")
        #expect(e.mmio.saveState() == state)
        #expect(e.status == d.status)
        #expect(e.irq.high)  // the interrupt still pending
        e.availIdx = d.availIdx
        e.lastUsed = d.lastUsed
        e.nextDesc = d.nextDesc
        e.kick()
        let u = e.takeUsed()
        #expect(u.count == 1 && u[0].length == 513)
        #expect(ram[d.data + 0x1000, 512] == [UInt8](repeating: 7, count: 512))
        #expect(request(e, type: 0, sector: 9, inCount: 512).data == [UInt8](repeating: 9, count: 512))
        #expect(!e.broken)
    }

    /// While paused (a snapshot being written) a notified request is held, neither its
    /// buffers nor the state change; `resume` serves it. A restored transport serves what was
    /// made available before the snapshot without a notification (`serveReadyQueues`).
    @Test func pauseHoldsRequestsAndRestoreServesReadyQueues() throws {
        let image = TempImage(sectors: 32)
        let ram = VirtioTestRAM()
        let d = VirtioTestDriver(VirtioBlock(fd: image.fd, bytes: image.bytes, readOnly: false), ram: ram)
        #expect(d.start())
        d.mmio.pause()
        d.ram[d.data, 16] = blkHeader(type: 0, sector: 4)
        d.post([Buffer(gpa: d.data, length: 16, writable: false), Buffer(gpa: d.data + 0x1000, length: 512, writable: true),
                Buffer(gpa: d.data + 0x2000, length: 1, writable: true)])
        d.kick()
        let paused = d.mmio.saveState()
        #expect(d.takeUsed().isEmpty)
        #expect(ram[d.data + 0x1000, 512] != [UInt8](repeating: 4, count: 512))
        // A restored copy of the paused state, whose notification was not kept.
        let e = VirtioTestDriver(VirtioBlock(fd: image.fd, bytes: image.bytes, readOnly: false), ram: VirtioTestRAM())
        e.ram[e.data, 16] = blkHeader(type: 0, sector: 4)
        for (a, b) in [(d.desc, 0x1000), (d.avail, 0x1000), (d.used, 0x1000)] { e.ram[a, b] = ram[a, b] }
        try e.mmio.restoreState(paused, path: "snap/state")
        e.lastUsed = d.lastUsed
        e.mmio.serveReadyQueues()
        #expect(e.takeUsed().map(\.length) == [513])
        #expect(e.ram[e.data + 0x1000, 512] == [UInt8](repeating: 4, count: 512))
        // The paused original serves its held request once resumed, once only.
        d.mmio.resume()
        #expect(d.takeUsed().map(\.length) == [513])
        #expect(ram[d.data + 0x1000, 512] == [UInt8](repeating: 4, count: 512))
        d.mmio.resume()
        #expect(d.takeUsed().isEmpty)
        #expect(!d.broken && !e.broken)
    }

    /// The devices' section of a Linux snapshot (`VirtioSet.save`): read back as written;
    /// every truncation and every bad count or flag refused naming its field.
    @Test func deviceSetSectionIsCheckedFieldByField() throws {
        var w = ByteWriter()
        w.u32(2)
        w.string("/images/a.img"); w.u8(0)
        w.string("/images/b.img"); w.u8(1)
        w.u8(1)
        w.u8(1)
        w.u32(4)
        for v in [1, 1, 1, 1] as [UInt32] { w.u32(v); w.blob([UInt8](repeating: UInt8(v), count: 5)) }
        let good = w.bytes
        var r = ByteReader(good, path: "snap/state")
        let set = try VirtioSet.restoring(&r)
        #expect(r.remaining == 0)
        #expect(set.disks == [DiskSpec(path: "/images/a.img"), DiskSpec(path: "/images/b.img", readOnly: true)])
        #expect(set.rng && set.balloon && set.states.count == 4 && set.states[3].bytes == [1, 1, 1, 1, 1])
        // A snapshot without the section: no devices.
        var none = ByteReader([], path: "snap/state")
        #expect(try VirtioSet.restoring(&none).disks.isEmpty)
        for n in 1..<good.count {
            var t = ByteReader(Array(good.prefix(n)), path: "snap/state")
            #expect(throws: VMMError.self) { _ = try VirtioSet.restoring(&t) }
        }
        func refused(_ at: Int, _ value: UInt8, _ field: String) {
            var b = good
            b[at] = value
            var t = ByteReader(b, path: "snap/state")
            do {
                _ = try VirtioSet.restoring(&t)
                Issue.record("byte \(at) = \(value) accepted")
            } catch {
                #expect("\(error)".contains(field), "\(error)")
            }
        }
        refused(0, 9, "virtio disks")                      // 9 disks: more than there can be
        refused(4 + 8 + 13, 2, "virtio disk 0")            // read-only flag 2
        refused(4 + 2 * (8 + 13 + 1), 2, "virtio rng")     // rng flag 2
        refused(4 + 2 * (8 + 13 + 1) + 1, 2, "virtio balloon")     // balloon flag 2
        refused(4 + 2 * (8 + 13 + 1) + 2, 3, "virtio device states")  // 3 states for 4 devices
    }

    @Test func corruptedStateIsRefused() throws {
        let image = TempImage(sectors: 32)
        let d = blk(image)
        #expect(d.start())
        #expect(request(d, type: 0, sector: 1, inCount: 512).status == 0)
        let good = d.mmio.saveState()
        let queueBase = 4 + 4 + 4 + 8 + 4 + 4 + 4 + 1 + 4
        func patched(_ at: Int, _ bytes: [UInt8]) -> DeviceState {
            var s = good
            s.bytes.replaceSubrange(at..<at + bytes.count, with: bytes)
            return s
        }
        let cases: [(DeviceState, String)] = [
            (DeviceState(version: 2, bytes: good.bytes), "version"),
            (DeviceState(version: 1, bytes: Array(good.bytes.prefix(10))), "driver features sel"),
            (DeviceState(version: 1, bytes: []), "status"),
            (patched(0, [0x30]), "status"),
            (patched(12, [0, 0, 0, 0, 0, 0, 0, 0x80]), "driver features"),
            (patched(24, [4]), "interrupt status"),
            (patched(32, [2]), "broken"),
            (patched(33, [2]), "queue count"),
            (patched(queueBase, [0, 2]), "queue 0 size"),
            (patched(queueBase, [3, 0]), "queue 0 layout"),
            (patched(queueBase + 2, [2]), "queue 0 ready"),
            (patched(queueBase + 3, [1, 0, 0, 0, 0, 0, 0, 0]), "queue 0 layout"),
            (patched(queueBase + 33, [9]), "blk: version"),
            (patched(queueBase + 37, [1]), "device state length"),
            (patched(queueBase + 41, [33]), "capacity"),
            (patched(queueBase + 49, [1]), "read-only"),
            (patched(queueBase + 57, [0xff]), "features"),
            (DeviceState(version: 1, bytes: good.bytes + [0]), "device state length"),
        ]
        let e = blk(image)
        #expect(e.start(accept: ~VirtioFeature.eventIndex))
        let before = e.mmio.saveState()
        for (state, field) in cases {
            do {
                try e.mmio.restoreState(state, path: "snap/state")
                Issue.record("accepted a state with a bad \(field)")
            } catch {
                guard case let .snapshot(path, f, reason) = error else {
                    Issue.record("\(error)")
                    continue
                }
                #expect(path == "snap/state")
                #expect(f.hasSuffix(field), "\(f): \(reason)")
            }
            // Nothing changed.
            #expect(e.mmio.saveState() == before)
        }
        // The good one is taken.
        try e.mmio.restoreState(good, path: "snap/state")
        #expect(e.mmio.saveState() == good)
        // The RNG's own state.
        var rng = VirtioRNG()
        #expect(throws: VMMError.self) { try rng.restoreState(DeviceState(version: 1, bytes: [1]), path: "x") }
    }
}
