import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// A disk for the guest (`--disk FILE[,ro]`): a raw image behind virtio-blk.
public struct DiskSpec: Sendable, Equatable {
    public var path: String
    public var readOnly: Bool
    public init(path: String, readOnly: Bool = false) {
        self.path = path
        self.readOnly = readOnly
    }

    /// "FILE" or "FILE,ro" (or "FILE,rw"); nil for an empty path or another suffix.
    public static func parse(_ text: String) -> DiskSpec? {
        var path = text, readOnly = false
        if text.hasSuffix(",ro") || text.hasSuffix(",rw") {
            readOnly = text.hasSuffix(",ro")
            path = String(text.dropLast(3))
        }
        guard !path.isEmpty else { return nil }
        return DiskSpec(path: path, readOnly: readOnly)
    }
    /// What `parse` takes (a refused value names it).
    public static let rule = "must be a disk image path, with ,ro to make the disk read-only"
}

/// The virtio devices a Linux guest is given — its disks in order (/dev/vda, /dev/vdb, …),
/// then an entropy source, then a balloon — each on a virtio-mmio transport of its own at a `VirtioSlot` the
/// platform chose. The images are opened and locked when the set is made, before any VM
/// exists; the transports are made and started with the VM (`attach`, `start`) and stopped
/// with it. For a snapshot the set pauses its devices (`pause`, `resume`) and saves their
/// configuration and state (`save`); a restore makes the set again from those bytes
/// (`restoring`) and hands each transport its state when attached.
final class VirtioSet: @unchecked Sendable {  // attach/start/stop/pause/resume on the run's thread or the snapshot leader, never at once
    /// At most this many (x86: IOAPIC pins 16-23).
    static let maxDevices = 8
    let disks: [DiskImage]
    let rng: Bool
    /// A virtio-balloon and its initial target in 4 KiB pages (nil: none).
    let balloon: UInt32?
    /// The balloon's counters, once attached.
    private(set) var balloonBackend: BalloonBackend?
    /// Where each device is, in the order above.
    let slots: [VirtioSlot]
    /// Each transport's state from a snapshot, applied as it is attached (nil: a fresh boot).
    private let restoredStates: [DeviceState]?
    /// The snapshot file `restoredStates` came from, for errors.
    private let restoredFrom: String
    private var attached: [AttachedVirtio] = []

    var count: Int { disks.count + (rng ? 1 : 0) + (balloon == nil ? 0 : 1) }

    /// Opens and locks the images; the devices' slots are `count` windows from `base`,
    /// `VirtioMMIORegister.windowSize` apart, on interrupts `firstGSI`, `firstGSI + 1`, ….
    init(disks specs: [DiskSpec], rng: Bool, balloon: UInt32? = nil, base: UInt64, firstGSI: UInt32,
         restoredStates: [DeviceState]? = nil, restoredFrom: String = "") throws(VMMError) {
        var disks: [DiskImage] = []
        for d in specs {
            do { disks.append(try DiskImage(path: d.path, readOnly: d.readOnly)) } catch {
                throw .input(path: d.path, offset: 0, reason: "\(error)")
            }
        }
        self.disks = disks
        self.rng = rng
        self.balloon = balloon
        let count = disks.count + (rng ? 1 : 0) + (balloon == nil ? 0 : 1)
        slots = (0..<count).map { VirtioSlot(base: base + UInt64($0) * VirtioMMIORegister.windowSize, gsi: firstGSI + UInt32($0)) }
        self.restoredStates = restoredStates
        self.restoredFrom = restoredFrom
    }

    /// Makes each device's transport at its slot and puts it on the MMIO bus; a restored
    /// set's transports take their saved state here (before any vCPU or device thread runs).
    /// `release` gives guest RAM back to the host (`GuestMemory.returnToHost`), for the balloon.
    func attach(_ buses: inout DeviceBuses, memory: DeviceMemory,
                release: @escaping @Sendable (UInt64, UInt64) throws(DeviceMemoryError) -> UInt64, vm: VirtualMachine) throws(VMMError) {
        var i = 0
        for (n, image) in disks.enumerated() {
            try add(VirtioBlock(image: image, serial: "axvm-disk-\(n)"), "virtio-blk \(image.path)", slots[i], &buses, memory, vm)
            i += 1
        }
        if rng {
            try add(VirtioRNG(), "virtio-rng", slots[i], &buses, memory, vm)
            i += 1
        }
        if let target = balloon {
            let backend = BalloonBackend(release: release)
            balloonBackend = backend
            let a = try add(VirtioBalloon(backend: backend, targetPages: target), "virtio-balloon", slots[i], &buses, memory, vm)
            setBalloonTarget = { pages in
                a.transport.withDevice { $0.setTarget(pages: pages) }
                a.transport.configChanged()
            }
        }
        if let states = restoredStates {
            guard states.count == attached.count else {
                throw .snapshot(path: restoredFrom, field: "virtio device states", reason: "\(states.count) for \(attached.count) devices")
            }
            for (a, state) in zip(attached, states) { try a.restore(state, restoredFrom) }
        }
    }

    @discardableResult
    private func add<D: VirtioDevice>(_ device: D, _ name: String, _ slot: VirtioSlot, _ buses: inout DeviceBuses,
                                      _ memory: DeviceMemory, _ vm: VirtualMachine) throws(VMMError) -> VirtioAttachment<D> {
        let a = try VirtioAttachment(device, slot: slot, memory: memory, vm: vm)
        attached.append(AttachedVirtio(
            start: { a.startReportingError() }, stop: { a.stop() },
            pause: { a.transport.pause() }, resume: { a.transport.resume() },
            serveReady: {
                a.transport.serveReadyQueues()
                a.resendPendingInterrupt()
            },
            save: { a.transport.saveState() },
            restore: { state, path throws(VMMError) in try a.transport.restoreState(state, path: path) }))
        try buses.mmio.register(a, name: name, at: slot.base, size: UInt64(slot.size))
        return a
    }

    /// Sets the balloon's target in 4 KiB pages and tells the driver (a configuration change
    /// interrupt); nil without a balloon, or before it is attached.
    private(set) var setBalloonTarget: (@Sendable (UInt32) -> Void)?

    /// The control socket's `/balloon` (`ControlSocket`): GET its target, what the guest holds
    /// and what came back to the host; PATCH `{"amount_mib": N}` a new target, at most the
    /// guest's RAM (`ramBytes`). nil for any other path.
    func control(_ r: ControlRequest, ramBytes: UInt64) -> ControlResponse? {
        guard r.path == "/balloon" else { return nil }
        guard let backend = balloonBackend, let setTarget = setBalloonTarget else {
            return .error(400, "this VM has no balloon (boot with --balloon)")
        }
        switch r.method {
        case "GET":
            let c = backend.current
            return .json(StatsFormat.jsonObject([
                ("target_mib", "\(c.targetPages / 256)"), ("target_pages", "\(c.targetPages)"),
                ("actual_pages", "\(c.actualPages)"), ("inflated_pages", "\(c.inflatedPages)"),
                ("deflated_pages", "\(c.deflatedPages)"), ("reports", "\(c.reports)"), ("reported_pages", "\(c.reportedPages)"),
                ("returned_bytes", "\(c.returnedBytes)"), ("stats_updates", "\(c.statsUpdates)"),
            ]))
        case "PATCH", "PUT":
            let mib: UInt64
            switch r.integerField("amount_mib") {
            case let .success(n): mib = n
            case let .failure(e): return e
            }
            guard mib <= ramBytes >> 20 else {
                return .error(400, "amount_mib \(mib): more than the guest's \(ramBytes >> 20) MiB of RAM")
            }
            setTarget(UInt32(mib << 8))  // 256 pages a MiB; at most RAM's pages, far below 2^32
            return .noContent
        default:
            return .error(405, "\(r.method) /balloon: GET or PATCH")
        }
    }

    /// Starts the device threads; a restored set then serves what its queues hold (requests
    /// made available before the snapshot whose notifications it did not keep) and sends
    /// the interrupts its transports still have pending.
    func start() throws(VMMError) {
        for a in attached { if let e = a.start() { throw e } }
        if restoredStates != nil { for a in attached { a.serveReady() } }
    }

    func stop() { for a in attached { a.stop() } }

    /// Every device idle (no request in progress, notifications held) until `resume`.
    func pause() { for a in attached { a.pause() } }
    func resume() { for a in attached { a.resume() } }

    // MARK: Snapshot

    /// The set in a snapshot: each disk (its absolute path and mode), whether an entropy
    /// source and a balloon are there (the balloon's target is in its state), then each
    /// transport's state (`VirtioMMIO.saveState`) in slot order.
    /// Call paused.
    func save(into w: inout ByteWriter) {
        w.u32(UInt32(disks.count))
        for d in disks {
            w.string(absolutePath(d.path))
            w.u8(d.readOnly ? 1 : 0)
        }
        w.u8(rng ? 1 : 0)
        w.u8(balloon == nil ? 0 : 1)
        w.u32(UInt32(attached.count))
        for a in attached {
            let s = a.save()
            w.u32(s.version)
            w.blob(s.bytes)
        }
    }

    /// What `save` wrote: the disks and entropy source to make the set again with, and the
    /// transports' states (checked when attached). A snapshot without the section (written
    /// before devices were saved) has no devices.
    static func restoring(_ r: inout ByteReader) throws(VMMError) -> (disks: [DiskSpec], rng: Bool, balloon: Bool, states: [DeviceState]) {
        guard r.remaining > 0 else { return ([], false, false, []) }
        let diskCount = try r.u32("virtio disks")
        guard diskCount <= UInt32(maxDevices) else { throw r.error("virtio disks", "\(diskCount); at most \(maxDevices)") }
        var disks: [DiskSpec] = []
        for i in 0..<Int(diskCount) {
            let path = try r.string("virtio disk \(i) path")
            let ro = try r.u8("virtio disk \(i) read-only")
            guard !path.isEmpty, ro <= 1 else { throw r.error("virtio disk \(i)", "path \"\(path)\", read-only \(ro)") }
            disks.append(DiskSpec(path: path, readOnly: ro == 1))
        }
        let rng = try r.u8("virtio rng")
        guard rng <= 1 else { throw r.error("virtio rng", "\(rng) is not 0 or 1") }
        let balloon = try r.u8("virtio balloon")
        guard balloon <= 1 else { throw r.error("virtio balloon", "\(balloon) is not 0 or 1") }
        let count = try r.u32("virtio device states")
        guard count == diskCount + UInt32(rng) + UInt32(balloon) else {
            throw r.error("virtio device states", "\(count) for \(diskCount) disks, \(rng) entropy source and \(balloon) balloon")
        }
        var states: [DeviceState] = []
        for i in 0..<Int(count) {
            let version = try r.u32("virtio device \(i) state version")
            states.append(DeviceState(version: version, bytes: try r.blob("virtio device \(i) state", limit: 1 << 16)))
        }
        return (disks, rng == 1, balloon == 1, states)
    }
}

/// One attached transport, whatever its device type: what the set does with it.
private struct AttachedVirtio {
    let start: () -> VMMError?
    let stop: () -> Void
    let pause: () -> Void
    let resume: () -> Void
    let serveReady: () -> Void
    let save: () -> DeviceState
    let restore: (DeviceState, String) throws(VMMError) -> Void
}

/// `path` made absolute (a restore may run in another directory): realpath, else as given.
private func absolutePath(_ path: String) -> String {
    guard let p = realpath(path, nil) else { return path }
    defer { free(p) }
    return cString(p)
}
