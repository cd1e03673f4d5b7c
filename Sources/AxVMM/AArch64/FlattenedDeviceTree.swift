/// A property value of a device tree node (Devicetree Specification v0.4, §2.2.4).
enum DeviceTreeValue {
    case empty
    /// Big-endian 32-bit cells.
    case u32s([UInt32])
    /// 64-bit values, two cells each (addresses and sizes with #address-cells = 2).
    case u64s([UInt64])
    /// A NUL-terminated string; a string list is several, one after the other.
    case string(String)
    case strings([String])

    var bytes: [UInt8] {
        switch self {
        case .empty: []
        case let .u32s(cells): cells.flatMap(bigEndian)
        case let .u64s(values): values.flatMap { bigEndian(UInt32($0 >> 32)) + bigEndian(UInt32($0 & 0xffff_ffff)) }
        case let .string(s): Array(s.utf8) + [0]
        case let .strings(list): list.flatMap { Array($0.utf8) + [0] }
        }
    }
}

private func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }

/// Writes a flattened device tree blob (DTB; Devicetree Specification v0.4, chapter 5):
/// the header, an empty memory reservation block, the structure block and the strings
/// block (property names, each once). Nodes are opened and closed in order; `finish` checks
/// that they balance under one root.
struct DeviceTreeWriter {
    static let magic: UInt32 = 0xd00d_feed
    static let version: UInt32 = 17
    static let lastCompatibleVersion: UInt32 = 16
    // Structure block tokens (§5.4.1).
    static let beginNodeToken: UInt32 = 1, endNodeToken: UInt32 = 2, propToken: UInt32 = 3, endToken: UInt32 = 9

    private var structure: [UInt8] = []
    private var strings: [UInt8] = []
    private var nameOffsets: [String: UInt32] = [:]
    private var depth = 0
    private var roots = 0
    private var problem: String?

    /// Why a tree cannot be written.
    struct Invalid: Error, CustomStringConvertible {
        var reason: String
        var description: String { reason }
    }

    mutating func beginNode(_ name: String) {
        if depth == 0 {
            roots += 1
            if !name.isEmpty { fail("the root node is named \"\(name)\" (it must have an empty name)") }
        }
        if name.utf8.contains(0) { fail("node name \"\(name)\" contains a NUL") }
        token(Self.beginNodeToken)
        structure += Array(name.utf8) + [0]
        pad()
        depth += 1
    }

    mutating func endNode() {
        if depth == 0 { fail("endNode without an open node") }
        depth = max(0, depth - 1)
        token(Self.endNodeToken)
    }

    mutating func property(_ name: String, _ value: DeviceTreeValue) {
        if depth == 0 { fail("property \"\(name)\" outside any node") }
        if name.isEmpty || name.utf8.contains(0) { fail("property name \"\(name)\" is empty or contains a NUL") }
        let data = value.bytes
        token(Self.propToken)
        token(UInt32(data.count))
        token(nameOffset(name))
        structure += data
        pad()
    }

    /// The blob, or the first misuse: unbalanced nodes, no or several roots, bad names.
    func finish(bootCPU: UInt32 = 0) throws(Invalid) -> [UInt8] {
        if let problem { throw Invalid(reason: problem) }
        guard depth == 0 else { throw Invalid(reason: "\(depth) node(s) left open") }
        guard roots == 1 else { throw Invalid(reason: "\(roots) root nodes (one is needed)") }
        let headerSize = 40, reservationSize = 16  // the header; one terminating (0, 0) entry
        let structureBlock = structure + bigEndian(Self.endToken)
        let offStruct = headerSize + reservationSize
        let offStrings = offStruct + structureBlock.count
        let total = offStrings + strings.count
        var out: [UInt8] = []
        out.reserveCapacity(total)
        for field in [Self.magic, UInt32(total), UInt32(offStruct), UInt32(offStrings), UInt32(headerSize),
                      Self.version, Self.lastCompatibleVersion, bootCPU, UInt32(strings.count), UInt32(structureBlock.count)] {
            out += bigEndian(field)
        }
        out += [UInt8](repeating: 0, count: reservationSize)
        out += structureBlock
        out += strings
        return out
    }

    private mutating func token(_ v: UInt32) { structure += bigEndian(v) }
    private mutating func pad() { while structure.count % 4 != 0 { structure.append(0) } }
    private mutating func fail(_ reason: String) { if problem == nil { problem = reason } }

    private mutating func nameOffset(_ name: String) -> UInt32 {
        if let o = nameOffsets[name] { return o }
        let o = UInt32(strings.count)
        strings += Array(name.utf8) + [0]
        nameOffsets[name] = o
        return o
    }
}
