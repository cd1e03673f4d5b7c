// Addresses of emulated devices (the Rust crate's `device` module): MMIO by guest-physical
// address, x86 I/O ports, and Arm system registers / RISC-V CSRs.

/// Width of one device access.
public enum AccessWidth: Int, Sendable, CaseIterable {
    /// 1, 2, 4 or 8 bytes (the raw value).
    case byte = 1, word = 2, dword = 4, qword = 8

    /// From a size in bytes (1, 2, 4, 8); nil otherwise.
    public init?(bytes: Int) { self.init(rawValue: bytes) }
    /// The width in bytes.
    public var size: Int { rawValue }
    /// The bit range the access covers, e.g. 0..<16 for `.word`.
    public var bitsRange: Range<Int> { 0..<(rawValue * 8) }
}

/// An x86 I/O port.
@frozen public struct Port: Hashable, Comparable, Sendable {
    /// The port number (0…0xffff).
    public var number: UInt16
    /// The port with this number.
    public init(_ number: UInt16) { self.number = number }
    /// Orders ports by number.
    public static func < (a: Port, b: Port) -> Bool { a.number < b.number }
}

/// A system register (Arm `MRS`/`MSR` encoding) or CSR number.
@frozen public struct SysRegAddr: Hashable, Comparable, Sendable {
    /// The register's encoding or CSR number.
    public var addr: UInt64
    /// The register with this encoding.
    public init(_ addr: UInt64) { self.addr = addr }
    /// Orders registers by encoding.
    public static func < (a: SysRegAddr, b: SysRegAddr) -> Bool { a.addr < b.addr }
}

/// Something a device can be found at.
public protocol DeviceAddr: Comparable, Sendable {}
extension GuestPhysAddr: DeviceAddr {}
extension Port: DeviceAddr {}
extension SysRegAddr: DeviceAddr {}

/// A set of device addresses.
public protocol DeviceAddrRange {
    /// The kind of address in the set.
    associatedtype Addr: DeviceAddr
    /// Whether `addr` is in the set.
    func contains(_ addr: Addr) -> Bool
}

/// MMIO ranges are half-open.
extension AddrRange: DeviceAddrRange where A == GuestPhysAddr {
    /// MMIO addresses are guest-physical.
    public typealias Addr = GuestPhysAddr
}

/// Inclusive port range, as I/O port decoders are usually written.
public struct PortRange: DeviceAddrRange, Hashable, Sendable {
    /// The first and the last port of the range (both included).
    public var start: Port, end: Port
    /// The ports from `start` to `end`, both included.
    public init(start: Port, end: Port) { self.start = start; self.end = end }
    /// Whether `addr` is from `start` to `end`.
    public func contains(_ addr: Port) -> Bool { start <= addr && addr <= end }
}

/// Inclusive system-register range.
public struct SysRegAddrRange: DeviceAddrRange, Hashable, Sendable {
    /// The first and the last register of the range (both included).
    public var start: SysRegAddr, end: SysRegAddr
    /// The registers from `start` to `end`, both included.
    public init(start: SysRegAddr, end: SysRegAddr) { self.start = start; self.end = end }
    /// Whether `addr` is from `start` to `end`.
    public func contains(_ addr: SysRegAddr) -> Bool { start <= addr && addr <= end }
}
