/// What a device's answer to an access asks of the run besides the access's data.
enum BusEffect: Sendable {
    /// Served (a read's bytes filled in).
    case handled
    /// This vCPU is done (a memtest guest's exit device).
    case endVCPU(VCPUOutcome)
    /// The whole VM ends (a reset line, a power-off register).
    case endMachine(ExitReason)
    /// The device failed in a way that ends the run with an error.
    case fail(VMMError)
}

/// A device on a bus: reads and writes at an offset into the range it was registered at,
/// with the access's width (the buffer's count: 1, 2, 4 or 8 bytes). Called on the vCPU
/// thread that made the access; a device shared between threads locks its own state.
protocol BusDevice: AnyObject, Sendable {
    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect
}

/// One address space of devices — port I/O (x86) or MMIO — mapping ranges to devices.
/// Registration refuses a range that overlaps another, naming both; the run loop looks up
/// every access here and knows no device by name. Built before the vCPUs start and not
/// changed after (lookups take no lock).
struct DeviceBus: Sendable {
    /// "port I/O" or "MMIO", for messages.
    let space: String
    struct Entry: Sendable {
        let name: String
        let base: UInt64
        let size: UInt64
        let read: @Sendable (UInt64, UnsafeMutableRawBufferPointer, Int) -> BusEffect
        let write: @Sendable (UInt64, UnsafeRawBufferPointer, Int) -> BusEffect
        var end: UInt64 { base + size }
    }
    /// In address order, none overlapping.
    private(set) var entries: [Entry] = []

    init(space: String) { self.space = space }

    /// Puts `device` at [base, base + size).
    mutating func register<D: BusDevice>(_ device: D, name: String, at base: UInt64, size: UInt64) throws(VMMError) {
        try add(Entry(name: name, base: base, size: size,
                      read: { device.read(at: $0, into: $1, vcpu: $2) },
                      write: { device.write(at: $0, from: $1, vcpu: $2) }))
    }

    private mutating func add(_ e: Entry) throws(VMMError) {
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        guard e.size > 0, e.base <= UInt64.max - e.size else {
            throw .host("\(space) device \(e.name): range \(hex(e.base)) + \(e.size) is empty or wraps")
        }
        let at = entries.firstIndex { $0.base >= e.base } ?? entries.count
        for other in [at > 0 ? entries[at - 1] : nil, at < entries.count ? entries[at] : nil].compactMap({ $0 })
            where other.base < e.end && e.base < other.end {
            throw .host("\(space) device \(e.name) at [\(hex(e.base)), \(hex(e.end))) overlaps \(other.name) at [\(hex(other.base)), \(hex(other.end)))")
        }
        entries.insert(e, at: at)
    }

    /// The device whose range holds `address`, and the offset into it.
    func lookup(_ address: UInt64) -> (entry: Entry, offset: UInt64)? {
        var lo = 0, hi = entries.count
        while lo < hi {  // the first entry ending above `address`
            let mid = (lo + hi) / 2
            if entries[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo < entries.count, entries[lo].base <= address else { return nil }
        return (entries[lo], address - entries[lo].base)
    }

    /// A read at `address`; nil if no device is there.
    func read(_ address: UInt64, _ data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect? {
        lookup(address).map { $0.entry.read($0.offset, data, vcpu) }
    }

    /// A write at `address`; nil if no device is there.
    func write(_ address: UInt64, _ data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect? {
        lookup(address).map { $0.entry.write($0.offset, data, vcpu) }
    }
}

/// A machine's buses: port I/O (x86 only) and MMIO.
struct DeviceBuses: Sendable {
    var pio = DeviceBus(space: "port I/O")
    var mmio = DeviceBus(space: "MMIO")
}

/// A device made of two closures over state its owner keeps (a loader's devices that share
/// its lock): for adapting, not for new devices, which are classes of their own.
final class ClosureDevice: BusDevice {
    private let onRead: @Sendable (UInt64, UnsafeMutableRawBufferPointer) -> BusEffect
    private let onWrite: @Sendable (UInt64, UnsafeRawBufferPointer) -> BusEffect
    init(read: @escaping @Sendable (UInt64, UnsafeMutableRawBufferPointer) -> BusEffect,
         write: @escaping @Sendable (UInt64, UnsafeRawBufferPointer) -> BusEffect) {
        onRead = read
        onWrite = write
    }
    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect { onRead(offset, data) }
    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect { onWrite(offset, data) }
}

extension UnsafeMutableRawBufferPointer {
    /// Every byte set to `value` (a read of an empty register: 0, or 0xff on a floating bus).
    func fill(_ value: UInt8) {
        for i in 0..<count { self[i] = value }
    }
}
