/// The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2): the register file a driver sees
/// in a 0x200-byte window, generic over the device behind it (`VirtioDevice`). Feature
/// negotiation, queue configuration, notifications, the interrupt status, reset, and the
/// transport's own snapshot state live here; the device only fills its config space and
/// serves its queues.

/// A virtio device behind a transport (§5): what it offers and how it serves its queues.
/// Generic, not an existential, so the Embedded build can specialize it.
public protocol VirtioDevice: SendableMetatype {
    /// The device ID (§5: 2 block, 4 entropy).
    var deviceID: UInt32 { get }
    /// Device-specific feature bits it offers; the transport adds VERSION_1, EVENT_IDX and
    /// INDIRECT_DESC.
    var features: UInt64 { get }
    /// One entry per virtqueue: its largest size (QueueNumMax).
    var queueMaxSizes: [UInt16] { get }
    /// Reads `data.count` bytes of the device config space from `offset` (bytes past its
    /// end read as zero).
    func readConfig(offset: UInt64, into data: UnsafeMutableRawBufferPointer)
    /// A driver's write to the config space (ignored where read-only).
    mutating func writeConfig(offset: UInt64, from data: UnsafeRawBufferPointer)
    /// The driver set DRIVER_OK with these features negotiated.
    mutating func activate(features: UInt64)
    /// Pops the queue's available chains and completes each (`addUsed`). An error (the
    /// queue's, not an I/O error of a request, which is the request's status) breaks the device.
    mutating func process(queue index: Int, _ queue: inout Virtqueue) throws(VirtqueueError)
    /// Back to the state after creation (the driver wrote Status 0).
    mutating func reset()
    /// The device's own state, versioned.
    func saveState() -> DeviceState
    /// Takes a state `saveState` wrote, refusing anything else with a `VMMError.snapshot`
    /// naming `path` and the field; changes nothing when it throws.
    mutating func restoreState(_ state: DeviceState, path: String) throws(VMMError)
    /// How often the device thread calls `tick`, in milliseconds (0: never).
    var tickMillis: Int32 { get }
    /// Periodic work on each ready queue while the driver runs (under the transport's lock,
    /// like `process`): the device may complete buffers it held back (virtio-balloon returns
    /// the statistics buffer to ask for fresh numbers).
    mutating func tick(queue index: Int, _ queue: inout Virtqueue) throws(VirtqueueError)
}

extension VirtioDevice {
    public mutating func activate(features: UInt64) {}
    public var tickMillis: Int32 { 0 }
    public mutating func tick(queue index: Int, _ queue: inout Virtqueue) throws(VirtqueueError) {}
}

/// Register offsets (§4.2.2, Table 4.1) and status bits (§2.1).
public enum VirtioMMIORegister {
    public static let magicValue: UInt64 = 0x000, version: UInt64 = 0x004, deviceID: UInt64 = 0x008
    public static let vendorID: UInt64 = 0x00c, deviceFeatures: UInt64 = 0x010, deviceFeaturesSel: UInt64 = 0x014
    public static let driverFeatures: UInt64 = 0x020, driverFeaturesSel: UInt64 = 0x024
    public static let queueSel: UInt64 = 0x030, queueNumMax: UInt64 = 0x034, queueNum: UInt64 = 0x038
    public static let queueReady: UInt64 = 0x044, queueNotify: UInt64 = 0x050
    public static let interruptStatus: UInt64 = 0x060, interruptACK: UInt64 = 0x064, status: UInt64 = 0x070
    public static let queueDescLow: UInt64 = 0x080, queueDescHigh: UInt64 = 0x084
    public static let queueDriverLow: UInt64 = 0x090, queueDriverHigh: UInt64 = 0x094
    public static let queueDeviceLow: UInt64 = 0x0a0, queueDeviceHigh: UInt64 = 0x0a4
    public static let shmSel: UInt64 = 0x0ac, shmLenLow: UInt64 = 0x0b0, shmLenHigh: UInt64 = 0x0b4
    public static let shmBaseLow: UInt64 = 0x0b8, shmBaseHigh: UInt64 = 0x0bc
    public static let configGeneration: UInt64 = 0x0fc, config: UInt64 = 0x100
    /// The window a transport occupies.
    public static let windowSize: UInt64 = 0x200

    /// "virt" little-endian.
    public static let magic: UInt32 = 0x7472_6976
    /// "AXVM" little-endian.
    public static let vendor: UInt32 = 0x4d56_5841
}

public enum VirtioStatus {
    public static let acknowledge: UInt32 = 1, driver: UInt32 = 2, driverOK: UInt32 = 4
    public static let featuresOK: UInt32 = 8, needsReset: UInt32 = 64, failed: UInt32 = 128
    static let known: UInt32 = acknowledge | driver | driverOK | featuresOK | needsReset | failed
}

/// InterruptStatus bits (§4.2.2).
public enum VirtioInterrupt {
    public static let usedBuffer: UInt32 = 1, configChange: UInt32 = 2
}

/// One queue's registers as the driver wrote them, and the queue once it is ready.
struct VirtioQueueRegisters {
    var size: UInt16 = 0
    var descriptorTable: UInt64 = 0
    var availableRing: UInt64 = 0
    var usedRing: UInt64 = 0
    var queue: Virtqueue?
    var ready: Bool { queue != nil }
    var layout: VirtqueueLayout {
        VirtqueueLayout(size: size, descriptorTable: descriptorTable, availableRing: availableRing, usedRing: usedRing)
    }
}

/// A virtio-mmio version 2 device: the register window and the device `D` behind it.
///
/// Thread safety: vCPU threads (MMIO exits) and a device thread (ioeventfd) call in at
/// once; one pthread mutex guards every field and the device, and requests are served under
/// it. The interrupt closures run under it too, so they must not call back into this object.
///
/// Interrupts: the line's `level(true)` while InterruptStatus is not 0 and `level(false)` when
/// the driver acknowledges the last bit (a level-triggered, resampled irqfd), and `trigger()`
/// on each new interrupt (an edge irqfd); the owner makes the one it does not use a no-op.
public final class VirtioMMIO<D: VirtioDevice>: @unchecked Sendable {  // every var only under `lock`
    let lock = Lock()
    var device: D
    let memory: DeviceMemory
    let contains: (@Sendable (UInt64, UInt64) -> Bool)?
    let interrupt: InterruptLine
    let maxSizes: [UInt16]
    /// The device's ID (§5), fixed at creation.
    public let deviceID: UInt32
    /// What the device offers: its own bits and those the transport and queue implement.
    public let offeredFeatures: UInt64

    var deviceStatus: UInt32 = 0
    var deviceFeaturesSel: UInt32 = 0
    var driverFeaturesSel: UInt32 = 0
    var driverFeatures: UInt64 = 0
    var queueSel: UInt32 = 0
    var queues: [VirtioQueueRegisters]
    var interruptStatus: UInt32 = 0
    var configGeneration: UInt32 = 0
    /// Why the device stopped (DEVICE_NEEDS_RESET), until the driver resets it.
    var failure: VirtqueueError?
    /// While a snapshot is written (`pause`): notifications are kept here, one bit per
    /// queue, and served on `resume`, so the device touches neither guest memory nor its
    /// state in between.
    var paused = false
    var pendingNotifications: UInt64 = 0

    /// `contains(gpa, length)` answers whether a range is guest RAM, so rings and buffers
    /// outside it are refused when a chain is read; without it they are refused on access.
    public init(device: D, memory: DeviceMemory, interrupt: InterruptLine,
                contains: (@Sendable (UInt64, UInt64) -> Bool)? = nil) {
        self.device = device
        self.memory = memory
        self.interrupt = interrupt
        self.contains = contains
        maxSizes = Array(device.queueMaxSizes.prefix(64))  // one bit each in `pendingNotifications`
        deviceID = device.deviceID
        offeredFeatures = device.features | VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
        queues = Array(repeating: VirtioQueueRegisters(), count: maxSizes.count)
    }

    // MARK: Inspection

    /// The Status register.
    public var status: UInt32 { lock.withLock { deviceStatus } }
    /// Whether the interrupt status has a bit set the driver has not acknowledged (a
    /// level-triggered line must stay raised).
    public var interruptPending: Bool { lock.withLock { interruptStatus != 0 } }
    /// Why the device set DEVICE_NEEDS_RESET, nil while it works.
    public var brokenBy: VirtqueueError? { lock.withLock { failure } }
    /// Runs `body` with the device under the lock (tests, a monitor).
    public func withDevice<R>(_ body: (inout D) -> R) -> R { lock.withLock { body(&device) } }

    // MARK: Register access

    /// A driver's read of `data.count` bytes at `offset` in the window. Registers are 32-bit
    /// and aligned (anything else reads as zero); the config space takes any width.
    public func read(offset: UInt64, data: UnsafeMutableRawBufferPointer) {
        lock.withLock {
            if offset >= VirtioMMIORegister.config {
                data.initializeMemory(as: UInt8.self, repeating: 0)
                device.readConfig(offset: offset - VirtioMMIORegister.config, into: data)
                return
            }
            let value: UInt32 = data.count == 4 && offset % 4 == 0 ? register(offset) : 0
            data.initializeMemory(as: UInt8.self, repeating: 0)
            withUnsafeBytes(of: value.littleEndian) { v in
                data.copyMemory(from: UnsafeRawBufferPointer(rebasing: v.prefix(data.count)))
            }
        }
    }

    func register(_ offset: UInt64) -> UInt32 {
        typealias R = VirtioMMIORegister
        let q = Int(queueSel) < queues.count ? Int(queueSel) : nil
        switch offset {
        case R.magicValue: return R.magic
        case R.version: return 2
        case R.deviceID: return deviceID
        case R.vendorID: return R.vendor
        case R.deviceFeatures:
            return deviceFeaturesSel < 2 ? UInt32(truncatingIfNeeded: offeredFeatures >> (32 * UInt64(deviceFeaturesSel))) : 0
        case R.queueNumMax: return q.map { UInt32(maxSizes[$0]) } ?? 0
        case R.queueReady: return q.map { queues[$0].ready ? 1 : 0 } ?? 0
        case R.interruptStatus: return interruptStatus
        case R.status: return deviceStatus
        case R.shmLenLow, R.shmLenHigh: return 0xffff_ffff  // no shared memory regions (§4.2.2: length -1)
        case R.configGeneration: return configGeneration
        default: return 0
        }
    }

    /// A driver's write of `data.count` bytes at `offset` in the window (registers: 32-bit
    /// aligned, anything else is ignored).
    public func write(offset: UInt64, data: UnsafeRawBufferPointer) {
        if offset >= VirtioMMIORegister.config {
            lock.withLock { device.writeConfig(offset: offset - VirtioMMIORegister.config, from: data) }
            return
        }
        guard data.count == 4, offset % 4 == 0 else { return }
        let value = UInt32(littleEndian: data.loadUnaligned(as: UInt32.self))
        if offset == VirtioMMIORegister.queueNotify {
            notify(queue: value)
            return
        }
        lock.withLock { setRegister(offset, value) }
    }

    func setRegister(_ offset: UInt64, _ value: UInt32) {
        typealias R = VirtioMMIORegister
        switch offset {
        case R.deviceFeaturesSel: deviceFeaturesSel = value
        case R.driverFeaturesSel: driverFeaturesSel = value
        case R.driverFeatures:
            // §3.1.1: features are written after DRIVER and before FEATURES_OK.
            guard deviceStatus & VirtioStatus.driver != 0, deviceStatus & VirtioStatus.featuresOK == 0, driverFeaturesSel < 2 else { return }
            let shift = 32 * UInt64(driverFeaturesSel)
            driverFeatures = driverFeatures & ~(0xffff_ffff << shift) | UInt64(value) << shift
        case R.queueSel: queueSel = value
        case R.queueNum, R.queueDescLow, R.queueDescHigh, R.queueDriverLow, R.queueDriverHigh, R.queueDeviceLow, R.queueDeviceHigh:
            // §4.2.2.1: only while the queue is not ready; a write to a ready queue is refused.
            guard Int(queueSel) < queues.count, !queues[Int(queueSel)].ready else { return }
            configure(&queues[Int(queueSel)], offset, value)
        case R.queueReady:
            guard Int(queueSel) < queues.count else { return }
            setReady(Int(queueSel), value & 1 != 0)
        case R.interruptACK:
            let was = interruptStatus
            interruptStatus &= ~value
            if was != 0 && interruptStatus == 0 { interrupt.level(false) }
        case R.status: setStatus(value)
        default: break
        }
    }

    func configure(_ q: inout VirtioQueueRegisters, _ offset: UInt64, _ value: UInt32) {
        typealias R = VirtioMMIORegister
        func low(_ a: UInt64) -> UInt64 { a & 0xffff_ffff_0000_0000 | UInt64(value) }
        func high(_ a: UInt64) -> UInt64 { a & 0xffff_ffff | UInt64(value) << 32 }
        switch offset {
        // QueueNum is 16 bits wide in every queue layout; a larger value is kept as an
        // impossible size (0xffff is above every max), refused when the queue is made ready.
        case R.queueNum: q.size = value > 0xffff ? 0xffff : UInt16(value)
        case R.queueDescLow: q.descriptorTable = low(q.descriptorTable)
        case R.queueDescHigh: q.descriptorTable = high(q.descriptorTable)
        case R.queueDriverLow: q.availableRing = low(q.availableRing)
        case R.queueDriverHigh: q.availableRing = high(q.availableRing)
        case R.queueDeviceLow: q.usedRing = low(q.usedRing)
        case R.queueDeviceHigh: q.usedRing = high(q.usedRing)
        default: break
        }
    }

    func setReady(_ index: Int, _ ready: Bool) {
        guard ready else {
            queues[index].queue = nil
            return
        }
        guard !queues[index].ready else { return }
        do throws(VirtqueueError) {
            queues[index].queue = try Virtqueue(layout: queues[index].layout, maxSize: maxSizes[index], features: driverFeatures,
                                                memory: memory, contains: contains)
        } catch {
            markBroken(error)
        }
    }

    func setStatus(_ value: UInt32) {
        guard value != 0 else {
            reset()
            return
        }
        let old = deviceStatus
        var new = value & ~VirtioStatus.needsReset | old & VirtioStatus.needsReset
        if new & VirtioStatus.featuresOK != 0 && old & VirtioStatus.featuresOK == 0 {
            // §2.2.2: FEATURES_OK stays clear if the device refuses the subset; §6.1 and
            // §4.2.3: a version 2 transport needs VIRTIO_F_VERSION_1.
            if driverFeatures & ~offeredFeatures != 0 || driverFeatures & VirtioFeature.version1 == 0 {
                new &= ~VirtioStatus.featuresOK
            }
        }
        if new & VirtioStatus.driverOK != 0 && old & VirtioStatus.driverOK == 0 {
            // §3.1.1: DRIVER_OK only after FEATURES_OK.
            if new & VirtioStatus.featuresOK == 0 {
                new &= ~VirtioStatus.driverOK
            } else {
                device.activate(features: driverFeatures)
            }
        }
        deviceStatus = new
        // Buffers a driver made available (and notified) before DRIVER_OK were not used then
        // (§3.1.1); they are now. Linux's virtio_balloon primes its statistics queue so.
        if new & VirtioStatus.driverOK != 0 && old & VirtioStatus.driverOK == 0 && !paused && failure == nil {
            for i in queues.indices where queues[i].ready { serve(i) }
        }
    }

    /// Status 0 (§4.2.3.1): queues, features, interrupt status and the device back to the start.
    func reset() {
        deviceStatus = 0
        deviceFeaturesSel = 0
        driverFeaturesSel = 0
        driverFeatures = 0
        queueSel = 0
        queues = Array(repeating: VirtioQueueRegisters(), count: maxSizes.count)
        if interruptStatus != 0 { interrupt.level(false) }
        interruptStatus = 0
        failure = nil
        device.reset()
    }

    // MARK: Queues and interrupts

    /// The driver notified queue `queue` (QueueNotify, or the ioeventfd of that register):
    /// serves it unless the device is not DRIVER_OK yet (§3.1.1: the device must not use
    /// buffers before), broken, or the queue is not ready.
    public func notify(queue: UInt32) {
        lock.withLock {
            guard deviceStatus & VirtioStatus.driverOK != 0, failure == nil, Int(queue) < queues.count else { return }
            if paused {
                pendingNotifications |= 1 << UInt64(queue)  // queue < 64 (`init`)
                return
            }
            serve(Int(queue))
        }
    }

    /// Stops serving: returns once no request is in progress (requests are served under the
    /// lock), and until `resume` notifications wait. For a snapshot: the device's state and
    /// guest memory then agree, and stay so while they are written.
    public func pause() {
        lock.withLock { paused = true }
    }

    /// Serves again, first the queues notified while paused.
    public func resume() {
        lock.withLock {
            paused = false
            let pending = pendingNotifications
            pendingNotifications = 0
            guard deviceStatus & VirtioStatus.driverOK != 0, failure == nil else { return }
            for i in queues.indices where pending & (1 << UInt64(i)) != 0 { serve(i) }
        }
    }

    /// Serves every ready queue once: after a restore, for requests the driver made
    /// available before the snapshot whose notification the snapshot did not keep.
    public func serveReadyQueues() {
        lock.withLock {
            guard !paused, deviceStatus & VirtioStatus.driverOK != 0, failure == nil else { return }
            for i in queues.indices where queues[i].ready { serve(i) }
        }
    }

    /// The device's periodic work (`VirtioDevice.tick`) on each ready queue, unless paused,
    /// broken or before DRIVER_OK.
    public func tick() {
        lock.withLock {
            guard !paused, deviceStatus & VirtioStatus.driverOK != 0, failure == nil else { return }
            for i in queues.indices where queues[i].ready { serve(i, tick: true) }
        }
    }

    /// Lets the device process queue `index` (or tick it), then raises the interrupt if the
    /// driver wants one; a queue error breaks the device.
    func serve(_ index: Int, tick: Bool = false) {
        guard var q = queues[index].queue else { return }
        do throws(VirtqueueError) {
            if tick { try device.tick(queue: index, &q) } else { try device.process(queue: index, &q) }
            let raise = try q.needsInterrupt()
            queues[index].queue = q
            if raise { raiseInterrupt(VirtioInterrupt.usedBuffer) }
        } catch {
            queues[index].queue = q
            markBroken(error)
        }
    }

    func raiseInterrupt(_ bits: UInt32) {
        let was = interruptStatus
        interruptStatus |= bits
        if was == 0 { interrupt.level(true) }
        interrupt.trigger()
    }

    /// §2.1.2: the device cannot go on: DEVICE_NEEDS_RESET, and a configuration change
    /// interrupt if the driver is running. Nothing more is processed until a reset.
    func markBroken(_ error: VirtqueueError) {
        guard failure == nil else { return }
        failure = error
        deviceStatus |= VirtioStatus.needsReset
        if deviceStatus & VirtioStatus.driverOK != 0 { raiseInterrupt(VirtioInterrupt.configChange) }
    }

    /// The device's config space changed (a resized disk): a new ConfigGeneration and a
    /// configuration change interrupt (§2.5.1, §4.2.2).
    public func configChanged() {
        lock.withLock {
            configGeneration &+= 1
            if deviceStatus & VirtioStatus.driverOK != 0 { raiseInterrupt(VirtioInterrupt.configChange) }
        }
    }
}
