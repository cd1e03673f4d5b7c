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
/// then an entropy source — each on a virtio-mmio transport of its own at a `VirtioSlot` the
/// platform chose. The images are opened and locked when the set is made, before any VM
/// exists; the transports are made and started with the VM (`attach`, `start`) and stopped
/// with it.
final class VirtioSet: @unchecked Sendable {  // attach/start/stop on the run's thread only
    /// At most this many (x86: IOAPIC pins 16-23).
    static let maxDevices = 8
    let disks: [DiskImage]
    let rng: Bool
    /// Each attached device's start (its error, if it could not) and stop.
    private var starts: [() -> VMMError?] = []
    private var stops: [() -> Void] = []

    var count: Int { disks.count + (rng ? 1 : 0) }

    init(disks specs: [DiskSpec], rng: Bool) throws(VMMError) {
        var disks: [DiskImage] = []
        for d in specs {
            do { disks.append(try DiskImage(path: d.path, readOnly: d.readOnly)) } catch {
                throw .input(path: d.path, offset: 0, reason: "\(error)")
            }
        }
        self.disks = disks
        self.rng = rng
    }

    /// `count` slots from `base`, 0x200 apart, on interrupts `firstGSI`, `firstGSI + 1`, ….
    func slots(base: UInt64, firstGSI: UInt32) -> [VirtioSlot] {
        (0..<count).map { VirtioSlot(base: base + UInt64($0) * VirtioMMIORegister.windowSize, gsi: firstGSI + UInt32($0)) }
    }

    /// Makes each device's transport at its slot and puts it on the MMIO bus.
    func attach(_ buses: inout DeviceBuses, slots: [VirtioSlot], memory: DeviceMemory, vm: VirtualMachine) throws(VMMError) {
        var i = 0
        for (n, image) in disks.enumerated() {
            try add(VirtioBlock(image: image, serial: "axvm-disk-\(n)"), "virtio-blk \(image.path)", slots[i], &buses, memory, vm)
            i += 1
        }
        if rng { try add(VirtioRNG(), "virtio-rng", slots[i], &buses, memory, vm) }
    }

    private func add<D: VirtioDevice>(_ device: D, _ name: String, _ slot: VirtioSlot, _ buses: inout DeviceBuses,
                                      _ memory: DeviceMemory, _ vm: VirtualMachine) throws(VMMError) {
        let a = try VirtioAttachment(device, slot: slot, memory: memory, vm: vm)
        stops.append { a.stop() }
        starts.append { a.startReportingError() }
        try buses.mmio.register(a, name: name, at: slot.base, size: UInt64(slot.size))
    }

    func start() throws(VMMError) {
        for s in starts { if let e = s() { throw e } }
    }

    func stop() { for s in stops { s() } }
}
