// Addresses of emulated devices (the Rust crate's `device` module): MMIO by guest-physical
// address, x86 I/O ports, and Arm system registers / RISC-V CSRs.

/// Width of one device access.
public enum AccessWidth: Int, Sendable, CaseIterable {
    case byte = 1, word = 2, dword = 4, qword = 8

    /// From a size in bytes (1, 2, 4, 8); nil otherwise.
    public init?(bytes: Int) { self.init(rawValue: bytes) }
    public var size: Int { rawValue }
    /// The bit range the access covers, e.g. 0..<16 for `.word`.
    public var bitsRange: Range<Int> { 0..<(rawValue * 8) }
}

/// An x86 I/O port.
@frozen public struct Port: Hashable, Comparable, Sendable {
    public var number: UInt16
    public init(_ number: UInt16) { self.number = number }
    public static func < (a: Port, b: Port) -> Bool { a.number < b.number }
}

/// A system register (Arm `MRS`/`MSR` encoding) or CSR number.
@frozen public struct SysRegAddr: Hashable, Comparable, Sendable {
    public var addr: UInt64
    public init(_ addr: UInt64) { self.addr = addr }
    public static func < (a: SysRegAddr, b: SysRegAddr) -> Bool { a.addr < b.addr }
}

/// Something a device can be found at.
public protocol DeviceAddr: Comparable, Sendable {}
extension GuestPhysAddr: DeviceAddr {}
extension Port: DeviceAddr {}
extension SysRegAddr: DeviceAddr {}

/// A set of device addresses.
public protocol DeviceAddrRange {
    associatedtype Addr: DeviceAddr
    func contains(_ addr: Addr) -> Bool
}

/// MMIO ranges are half-open.
extension AddrRange: DeviceAddrRange where A == GuestPhysAddr {
    public typealias Addr = GuestPhysAddr
}

/// Inclusive port range, as I/O port decoders are usually written.
public struct PortRange: DeviceAddrRange, Hashable, Sendable {
    public var start: Port, end: Port
    public init(start: Port, end: Port) { self.start = start; self.end = end }
    public func contains(_ addr: Port) -> Bool { start <= addr && addr <= end }
}

/// Inclusive system-register range.
public struct SysRegAddrRange: DeviceAddrRange, Hashable, Sendable {
    public var start: SysRegAddr, end: SysRegAddr
    public init(start: SysRegAddr, end: SysRegAddr) { self.start = start; self.end = end }
    public func contains(_ addr: SysRegAddr) -> Bool { start <= addr && addr <= end }
}
