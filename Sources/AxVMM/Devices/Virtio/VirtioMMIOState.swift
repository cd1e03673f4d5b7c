/// The virtio-mmio transport's snapshot state: its registers, each queue's layout and
/// progress, and the device's own `DeviceState` inside. Version 1, little-endian:
///
///     u32 status, u32 device features sel, u32 driver features sel, u64 driver features,
///     u32 queue sel, u32 interrupt status, u32 config generation, u8 broken, u32 queue count,
///     per queue: u16 size, u8 ready, u64 descriptor table, u64 available ring, u64 used ring,
///                u16 last available, u16 used index, u16 signalled used,
///     u32 device state version, u32 device state length, the device state bytes.
///
/// A restore checks every field against the transport and the device before changing
/// anything; a hostile snapshot gets a `VMMError.snapshot` naming the field.

/// Appends little-endian fields.
struct VirtioStateWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
}

/// Reads little-endian fields; running out names the field being read.
struct VirtioStateReader {
    let bytes: [UInt8]
    let path: String
    let prefix: String
    var offset = 0

    func error(_ field: String, _ reason: String) -> VMMError {
        .snapshot(path: path, field: prefix + field, reason: reason)
    }

    mutating func take<T: FixedWidthInteger>(_ field: String, as: T.Type) throws(VMMError) -> T {
        let n = MemoryLayout<T>.size
        guard bytes.count - offset >= n else {
            throw error(field, "truncated: \(bytes.count) bytes, the field at \(offset) needs \(n)")
        }
        var v = T.zero
        for i in 0..<n { v |= T(bytes[offset + i]) << (8 * i) }
        offset += n
        return v
    }
    mutating func u8(_ f: String) throws(VMMError) -> UInt8 { try take(f, as: UInt8.self) }
    mutating func u16(_ f: String) throws(VMMError) -> UInt16 { try take(f, as: UInt16.self) }
    mutating func u32(_ f: String) throws(VMMError) -> UInt32 { try take(f, as: UInt32.self) }
    mutating func u64(_ f: String) throws(VMMError) -> UInt64 { try take(f, as: UInt64.self) }

    /// No bytes may follow the last field.
    func end() throws(VMMError) {
        guard offset == bytes.count else { throw error("length", "\(bytes.count - offset) bytes after the last field") }
    }
}

extension VirtioMMIO {
    /// The layout version `saveState` writes and `restoreState` takes.
    public static var stateVersion: UInt32 { 1 }

    /// The transport's state and the device's, for a snapshot.
    public func saveState() -> DeviceState {
        lock.withLock {
            var w = VirtioStateWriter()
            w.u32(deviceStatus)
            w.u32(deviceFeaturesSel)
            w.u32(driverFeaturesSel)
            w.u64(driverFeatures)
            w.u32(queueSel)
            w.u32(interruptStatus)
            w.u32(configGeneration)
            w.u8(failure == nil ? 0 : 1)
            w.u32(UInt32(queues.count))
            for q in queues {
                w.u16(q.size)
                w.u8(q.ready ? 1 : 0)
                w.u64(q.descriptorTable)
                w.u64(q.availableRing)
                w.u64(q.usedRing)
                w.u16(q.queue?.lastAvailable ?? 0)
                w.u16(q.queue?.usedIndex ?? 0)
                w.u16(q.queue?.signalledUsed ?? 0)
            }
            let d = device.saveState()
            w.u32(d.version)
            w.u32(UInt32(d.bytes.count))
            w.bytes.append(contentsOf: d.bytes)
            return DeviceState(version: Self.stateVersion, bytes: w.bytes)
        }
    }

    /// Takes a state `saveState` wrote (with `path`, the snapshot file, for errors). Every
    /// field is checked (known status bits, features the device offers, interrupt bits, the
    /// device's queue count and sizes, ready queues' layouts as making them ready checks
    /// them) and the device restores its part; when anything is refused nothing changes.
    public func restoreState(_ state: DeviceState, path: String) throws(VMMError) {
        let prefix = "virtio-mmio device \(deviceID): "
        guard state.version == Self.stateVersion else {
            throw .snapshot(path: path, field: prefix + "version", reason: "version \(state.version), this axvm reads \(Self.stateVersion)")
        }
        var r = VirtioStateReader(bytes: state.bytes, path: path, prefix: prefix)
        let status = try r.u32("status")
        guard status & ~VirtioStatus.known == 0 else { throw r.error("status", "unknown bits 0x\(String(status & ~VirtioStatus.known, radix: 16))") }
        let deviceSel = try r.u32("device features sel")
        let driverSel = try r.u32("driver features sel")
        let features = try r.u64("driver features")
        guard features & ~offeredFeatures == 0 else {
            throw r.error("driver features", "0x\(String(features, radix: 16)) beyond the offered 0x\(String(offeredFeatures, radix: 16))")
        }
        if status & VirtioStatus.featuresOK != 0 && features & VirtioFeature.version1 == 0 {
            throw r.error("driver features", "FEATURES_OK without VIRTIO_F_VERSION_1")
        }
        if status & VirtioStatus.driverOK != 0 && status & VirtioStatus.featuresOK == 0 {
            throw r.error("status", "DRIVER_OK without FEATURES_OK")
        }
        let sel = try r.u32("queue sel")
        let isr = try r.u32("interrupt status")
        guard isr & ~(VirtioInterrupt.usedBuffer | VirtioInterrupt.configChange) == 0 else {
            throw r.error("interrupt status", "unknown bits 0x\(String(isr, radix: 16))")
        }
        let generation = try r.u32("config generation")
        let broken = try r.u8("broken")
        guard broken <= 1 else { throw r.error("broken", "\(broken) is not 0 or 1") }
        if broken == 1 && status & VirtioStatus.needsReset == 0 { throw r.error("broken", "broken without DEVICE_NEEDS_RESET") }
        let count = try r.u32("queue count")
        guard count == UInt32(maxSizes.count) else { throw r.error("queue count", "\(count), the device has \(maxSizes.count)") }
        var restored: [VirtioQueueRegisters] = []
        for i in 0..<maxSizes.count {
            let field = "queue \(i) "
            var q = VirtioQueueRegisters()
            q.size = try r.u16(field + "size")
            let ready = try r.u8(field + "ready")
            q.descriptorTable = try r.u64(field + "descriptor table")
            q.availableRing = try r.u64(field + "available ring")
            q.usedRing = try r.u64(field + "used ring")
            let last = try r.u16(field + "last available")
            let used = try r.u16(field + "used index")
            let signalled = try r.u16(field + "signalled used")
            guard q.size <= maxSizes[i] else { throw r.error(field + "size", "\(q.size) above the queue's maximum \(maxSizes[i])") }
            guard ready <= 1 else { throw r.error(field + "ready", "\(ready) is not 0 or 1") }
            if ready == 1 {
                do throws(VirtqueueError) {
                    var vq = try Virtqueue(layout: q.layout, maxSize: maxSizes[i], features: features, memory: memory, contains: contains)
                    vq.restore(lastAvailable: last, usedIndex: used, signalledUsed: signalled)
                    q.queue = vq
                } catch {
                    throw r.error(field + "layout", "\(error)")
                }
            } else if last != 0 || used != 0 || signalled != 0 {
                throw r.error(field + "last available", "progress \(last)/\(used)/\(signalled) on a queue that is not ready")
            }
            restored.append(q)
        }
        let deviceVersion = try r.u32("device state version")
        let deviceLength = try r.u32("device state length")
        guard UInt64(deviceLength) == UInt64(r.bytes.count - r.offset) else {
            throw r.error("device state length", "\(deviceLength), \(r.bytes.count - r.offset) bytes follow")
        }
        let deviceBytes = Array(r.bytes[r.offset...])
        r.offset = r.bytes.count
        try r.end()
        try lock.withLock { () throws(VMMError) in
            try device.restoreState(DeviceState(version: deviceVersion, bytes: deviceBytes), path: path)
            deviceStatus = status
            deviceFeaturesSel = deviceSel
            driverFeaturesSel = driverSel
            driverFeatures = features
            queueSel = sel
            queues = restored
            configGeneration = generation
            // The device stays stopped until the driver resets it.
            failure = broken == 1 ? .brokenInSnapshot : nil
            let was = interruptStatus
            interruptStatus = isr
            if was == 0 && isr != 0 { interrupt.level(true) }
            if was != 0 && isr == 0 { interrupt.level(false) }
        }
    }
}
