/// virtio-rng, the entropy device (virtio 1.2 §5.4, device ID 4): one queue whose
/// device-writable buffers are filled from the host's getrandom (glibc's getentropy, 256
/// bytes a call), falling back to /dev/urandom.

import CKVM
import KVM
#if canImport(Glibc)
import Glibc
#endif

public struct VirtioRNG: VirtioDevice {
    public let deviceID: UInt32 = 4
    public let features: UInt64 = 0
    public let queueMaxSizes: [UInt16] = [256]
    /// Bytes given per request at most (the driver asks again for more).
    static let maxRequestBytes = 64 << 10

    public init() {}

    public func readConfig(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {}  // no config space
    public mutating func writeConfig(offset: UInt64, from data: UnsafeRawBufferPointer) {}
    public mutating func reset() {}

    public mutating func process(queue index: Int, _ queue: inout Virtqueue) throws(VirtqueueError) {
        while let chain = try queue.pop() {
            let n = Int(min(chain.writableLength, UInt64(Self.maxRequestBytes)))
            var bytes = [UInt8](repeating: 0, count: n)
            let filled = bytes.withUnsafeMutableBytes { Self.fill($0) }
            try withBytes(&bytes) { (b) throws(VirtqueueError) in
                try queue.write(chain, offset: 0, from: UnsafeRawBufferPointer(rebasing: b[0..<filled]))
            }
            try queue.addUsed(head: chain.head, written: UInt32(filled))
        }
    }

    /// Fills `b` with random bytes; returns how many (all, unless the host has no source).
    static func fill(_ b: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = b.baseAddress else { return 0 }
        var done = 0
        while done < b.count {
            let n = min(256, b.count - done)  // getentropy's limit
            guard getentropy(base + done, n) == 0 else { break }
            done += n
        }
        guard done < b.count else { return done }
        let fd = ckvm_open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return done }
        defer { close(fd) }
        while done < b.count {
            let n = read(fd, base + done, b.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            done += n
        }
        return done
    }

    /// Version 1, no bytes: the device keeps no state.
    public func saveState() -> DeviceState { DeviceState(version: 1, bytes: []) }

    public mutating func restoreState(_ state: DeviceState, path: String) throws(VMMError) {
        guard state.version == 1 else { throw .snapshot(path: path, field: "virtio-rng: version", reason: "version \(state.version), this axvm reads 1") }
        guard state.bytes.isEmpty else { throw .snapshot(path: path, field: "virtio-rng: length", reason: "\(state.bytes.count) bytes, expected none") }
    }
}
