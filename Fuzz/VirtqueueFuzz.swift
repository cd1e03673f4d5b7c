// libFuzzer target: the split virtqueue parser (`Virtqueue`: Sources/AxVMM/Devices/Virtio/)
// over hostile rings in a 64 KiB guest RAM at 0x10000, and virtio-rng serving them. Built
// against the AxVMM module by scripts/fuzz.sh; public API only.
//
// Input: u64 parameters (bits 0-15 queue size, 16-31 the queue's maximum, 32 EVENT_IDX,
// 33 INDIRECT_DESC, 34 RAM checked when a chain is read (else on access), 35 serve with
// virtio-rng instead of popping here, 48-63 the device's last available index), u64
// descriptor table, u64 available ring, u64 used ring (each, unless its bit 63 is set, taken
// modulo 80 KiB from 0xc000: mostly in RAM, sometimes across its ends), then the RAM.
//
// Oracle: never a crash or hang; a refused queue only for a size that is 0, not a power of
// two or above the maximum, a misaligned area, or one not in RAM; every accepted chain's
// head below the size, its segments inside RAM (when checked at parse) and never wrapping
// past 2^64, readable and writable lengths their segments' sums, in all at most 4 GiB - 1,
// at most size + 1024 segments; no more chains than the available index said; every
// refusal a `VirtqueueError` whose claim holds (an address outside RAM is outside, a jump
// is more than the size).

import AxVMM
import Glibc

let ramBase: UInt64 = 0x1_0000
let ramSize = 64 << 10

final class FuzzRAM: @unchecked Sendable {  // one fuzzing thread
    let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: ramSize, alignment: 16)
    func contains(_ gpa: UInt64, _ length: UInt64) -> Bool {
        gpa >= ramBase && length <= UInt64(ramSize) && gpa - ramBase <= UInt64(ramSize) - length
    }
    func offset(_ gpa: UInt64, _ n: Int) throws(DeviceMemoryError) -> Int {
        guard contains(gpa, UInt64(n)) else { throw .outsideRAM(gpa: gpa, length: UInt64(n)) }
        return Int(gpa - ramBase)
    }
}

let ram = FuzzRAM()
let memory = DeviceMemory(read: { gpa, into throws(DeviceMemoryError) in
    let at = try ram.offset(gpa, into.count)
    into.copyMemory(from: UnsafeRawBufferPointer(rebasing: ram.bytes[at..<at + into.count]))
}, write: { gpa, from throws(DeviceMemoryError) in
    let at = try ram.offset(gpa, from.count)
    UnsafeMutableRawBufferPointer(rebasing: ram.bytes[at..<at + from.count]).copyMemory(from: from)
})

func place(_ v: UInt64) -> UInt64 { v >> 63 != 0 ? v : 0xc000 + v % (80 << 10) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let p = input.u64()
    let layout = VirtqueueLayout(size: UInt16(truncatingIfNeeded: p), descriptorTable: place(input.u64()),
                                 availableRing: place(input.u64()), usedRing: place(input.u64()))
    let maxSize = UInt16(truncatingIfNeeded: p >> 16)
    let features = (p >> 32 & 1 != 0 ? VirtioFeature.eventIndex : 0) | (p >> 33 & 1 != 0 ? VirtioFeature.indirectDescriptors : 0)
    let checked = p >> 34 & 1 != 0
    let serveRNG = p >> 35 & 1 != 0
    let last = UInt16(truncatingIfNeeded: p >> 48)
    let body = input.bytes.count > 32 ? UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: input.bytes[32...])) : UnsafeRawBufferPointer(start: nil, count: 0)
    ram.bytes.initializeMemory(as: UInt8.self, repeating: 0)
    if body.count > 0 { ram.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: body.prefix(ramSize))) }
    let record = "size \(layout.size) max \(maxSize), rings 0x\(String(layout.descriptorTable, radix: 16)) 0x\(String(layout.availableRing, radix: 16)) 0x\(String(layout.usedRing, radix: 16)), features 0x\(String(features, radix: 16)), checked \(checked)"

    var queue: Virtqueue
    let inRAM: @Sendable (UInt64, UInt64) -> Bool = { gpa, length in ram.contains(gpa, length) }
    do throws(VirtqueueError) {
        queue = try Virtqueue(layout: layout, maxSize: maxSize, features: features, memory: memory, contains: checked ? inRAM : nil)
    } catch {
        switch error {
        case let .badQueueSize(s, m):
            invariant(s == UInt32(layout.size) && m == maxSize && (s == 0 || s > UInt32(m) || s & (s - 1) != 0), "\(record): \(error)")
        case .misaligned, .areaOutsideRAM:
            break
        default:
            invariant(false, "\(record): a queue refused with \(error)")
        }
        return 0
    }
    let n = UInt64(layout.size)
    invariant(n != 0 && n <= UInt64(maxSize) && n & (n - 1) == 0, "\(record): accepted")
    if checked {
        invariant(ram.contains(layout.descriptorTable, 16 * n) && ram.contains(layout.availableRing, 6 + 2 * n)
                  && ram.contains(layout.usedRing, 6 + 8 * n), "\(record): accepted areas outside RAM")
    }
    queue.restore(lastAvailable: last, usedIndex: last, signalledUsed: last)

    if serveRNG {
        var rng = VirtioRNG()
        do throws(VirtqueueError) { try rng.process(queue: 0, &queue) } catch { check(error, record, checked) }
        return 0
    }
    var chains = 0
    while chains <= Int(layout.size) {
        do {
            guard let chain = try queue.pop() else { break }
            chains += 1
            invariant(chains <= Int(layout.size), "\(record): more chains than the ring holds")
            invariant(chain.head < layout.size, "\(record): head \(chain.head)")
            let segments = chain.readable + chain.writable
            invariant(segments.count <= Int(layout.size) + 1024, "\(record): \(segments.count) segments")
            var sums: (UInt64, UInt64) = (0, 0)
            for s in chain.readable { sums.0 += UInt64(s.length) }
            for s in chain.writable { sums.1 += UInt64(s.length) }
            invariant(sums == (chain.readableLength, chain.writableLength), "\(record): lengths \(sums) vs \(chain.readableLength), \(chain.writableLength)")
            invariant(sums.0 + sums.1 <= UInt64(UInt32.max), "\(record): \(sums.0 + sums.1) bytes")
            for s in segments {
                invariant(!s.gpa.addingReportingOverflow(UInt64(s.length)).overflow, "\(record): segment \(s) wraps")
                if checked { invariant(ram.contains(s.gpa, UInt64(s.length)), "\(record): segment \(s) outside RAM") }
            }
            // Move some bytes as a device would, then complete the chain.
            var buffer = [UInt8](repeating: 0xa5, count: 64)
            let r = Int(min(chain.readableLength, 64)), w = Int(min(chain.writableLength, 64))
            try buffer.withUnsafeMutableBytes { b in
                try queue.read(chain, offset: 0, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<r]))
                try queue.write(chain, offset: 0, from: UnsafeRawBufferPointer(rebasing: b[0..<w]))
            }
            try queue.addUsed(head: chain.head, written: UInt32(w))
            keep(try queue.needsInterrupt())
        } catch let error as VirtqueueError {
            check(error, record, checked)
            return 0
        } catch {
            invariant(false, "\(record): untyped \(error)")
        }
    }
    invariant(queue.lastAvailable == last &+ UInt16(chains) && queue.usedIndex == last &+ UInt16(chains), "\(record): indexes")
    return 0
}

/// A refusal's claim holds.
func check(_ error: VirtqueueError, _ record: String, _ checked: Bool) {
    switch error {
    case let .descriptorOutsideRAM(_, gpa, length):
        invariant(!ram.contains(gpa, UInt64(length)), "\(record): \(error), but it is RAM")
    case let .areaOutsideRAM(_, gpa, length):
        invariant(!ram.contains(gpa, length), "\(record): \(error), but it is RAM")
    case let .availableIndexJump(last, available, size):
        invariant(available &- last > size, "\(record): \(error)")
    case let .headOutOfRange(head, size):
        invariant(head >= size, "\(record): \(error)")
    case let .nextOutOfRange(_, next, size):
        invariant(UInt32(next) >= size, "\(record): \(error)")
    case let .chainTooLarge(_, bytes):
        invariant(bytes > UInt64(UInt32.max), "\(record): \(error)")
    case let .badIndirectLength(_, length):
        invariant(length == 0 || length % 16 != 0 || length / 16 > Virtqueue.maxIndirectDescriptors, "\(record): \(error)")
    case .badQueueSize, .misaligned, .beyondChain, .memory, .brokenInSnapshot:
        invariant(false, "\(record): \(error) while serving")
    default:
        break
    }
}
