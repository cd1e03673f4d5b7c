/// The device model's shared vocabulary: how a device sees guest memory, raises its
/// interrupt, and keeps its state across a snapshot. Devices are written against these and
/// nothing else of the VMM, so a new device is new files, not cases in the run loop; the
/// buses (`DeviceBus`) route the guest's accesses to them.
///
/// Closures rather than protocol existentials: the Embedded Swift build has no existentials.

/// Why a device's access to guest memory failed.
public enum DeviceMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Some byte of [gpa, gpa + length) is not guest RAM (outside every area, in the MMIO
    /// hole, or the sum overflows).
    case outsideRAM(gpa: UInt64, length: UInt64)
    /// RAM, but it could not be made present (the pager failed, out of memory).
    case failed(gpa: UInt64, reason: String)

    public var description: String {
        switch self {
        case let .outsideRAM(gpa, length): "0x\(String(gpa, radix: 16)) + \(length) bytes is not guest RAM"
        case let .failed(gpa, reason): "guest memory at 0x\(String(gpa, radix: 16)): \(reason)"
        }
    }
}

/// Guest RAM as a device sees it: every (address, length) is checked against RAM, lazy pages
/// are populated as a guest touch would populate them, and what a device writes is recorded
/// for diff snapshots (KVM's dirty log does not see the VMM's writes). `GuestMemory` makes
/// the real one (`deviceAccess`); tests make one over a plain buffer.
public struct DeviceMemory: Sendable {
    public let read: @Sendable (_ gpa: UInt64, _ into: UnsafeMutableRawBufferPointer) throws(DeviceMemoryError) -> Void
    public let write: @Sendable (_ gpa: UInt64, _ from: UnsafeRawBufferPointer) throws(DeviceMemoryError) -> Void
    /// Guest RAM [gpa, gpa + count) itself, handed to `body` in contiguous pieces in order —
    /// checked and made present as for `read` and `write`, and with `deviceWrites` recorded as
    /// written — so that a device's file I/O moves the bytes straight between the file and
    /// guest RAM. `body` returns false to stop (an I/O error); the result says whether every
    /// piece returned true. Pieces are valid only inside `body`.
    public let direct: @Sendable (_ gpa: UInt64, _ count: Int, _ deviceWrites: Bool,
                                  _ body: (UnsafeMutableRawBufferPointer) -> Bool) throws(DeviceMemoryError) -> Bool

    public init(read: @escaping @Sendable (UInt64, UnsafeMutableRawBufferPointer) throws(DeviceMemoryError) -> Void,
                write: @escaping @Sendable (UInt64, UnsafeRawBufferPointer) throws(DeviceMemoryError) -> Void,
                direct: (@Sendable (UInt64, Int, Bool, (UnsafeMutableRawBufferPointer) -> Bool) throws(DeviceMemoryError) -> Bool)? = nil) {
        self.read = read
        self.write = write
        if let direct { self.direct = direct } else { self.direct = Self.bounced(read: read, write: write) }
    }

    /// `direct` without a view of guest RAM (a test's RAM): one piece, a bounce buffer
    /// filled by `read` first or emptied by `write` after.
    private static func bounced(read: @escaping @Sendable (UInt64, UnsafeMutableRawBufferPointer) throws(DeviceMemoryError) -> Void,
                                write: @escaping @Sendable (UInt64, UnsafeRawBufferPointer) throws(DeviceMemoryError) -> Void)
        -> @Sendable (UInt64, Int, Bool, (UnsafeMutableRawBufferPointer) -> Bool) throws(DeviceMemoryError) -> Bool {
        { gpa, count, deviceWrites, body throws(DeviceMemoryError) -> Bool in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            if deviceWrites {
                guard body(buffer) else { return false }
                try write(gpa, UnsafeRawBufferPointer(buffer))
                return true
            }
            try read(gpa, buffer)
            return body(buffer)
        }
    }
}

/// A device's interrupt: an irqfd on an IOAPIC GSI (x86) or a GIC SPI (arm64), or a test's
/// counter. `trigger` asserts it once (edge); a level-triggered line is asserted while
/// `level(true)` and released with `level(false)`.
public struct InterruptLine: Sendable {
    public let trigger: @Sendable () -> Void
    public let level: @Sendable (Bool) -> Void
    public init(trigger: @escaping @Sendable () -> Void, level: @escaping @Sendable (Bool) -> Void = { _ in }) {
        self.trigger = trigger
        self.level = level
    }
}

/// A device's own state in a snapshot: a version of its layout and the bytes. A restore
/// hands the bytes back to the device that wrote them, which refuses a version or a length
/// it does not know with a `VMMError.snapshot` naming its field.
public struct DeviceState: Sendable, Equatable {
    public var version: UInt32
    public var bytes: [UInt8]
    public init(version: UInt32, bytes: [UInt8]) {
        self.version = version
        self.bytes = bytes
    }
}

/// A virtio-mmio transport's place in the machine: its registers (`size` bytes at `base`,
/// 0x200 for version 2) and its interrupt (x86: an IOAPIC GSI; arm64: an SPI).
public struct VirtioSlot: Sendable, Equatable {
    public var base: UInt64
    public var size: UInt32
    public var gsi: UInt32
    public init(base: UInt64, size: UInt32 = 0x200, gsi: UInt32) {
        self.base = base
        self.size = size
        self.gsi = gsi
    }
}
