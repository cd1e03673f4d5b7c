/// virtio-blk (virtio 1.2 §5.2, device ID 2) over a raw image file: one request queue,
/// requests served synchronously with pread/pwrite/fdatasync/fallocate on the caller's
/// descriptor, data copied through a bounded buffer between the file and guest RAM.

import CKVM
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// Feature bits, request types and status values (§5.2.3, §5.2.6).
public enum VirtioBlockFeature {
    public static let sizeMax: UInt64 = 1 << 1, segMax: UInt64 = 1 << 2, readOnly: UInt64 = 1 << 5
    public static let blockSize: UInt64 = 1 << 6, flush: UInt64 = 1 << 9
    public static let discard: UInt64 = 1 << 13, writeZeroes: UInt64 = 1 << 14
}

enum VirtioBlockRequest {
    static let input: UInt32 = 0, output: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8
    static let discard: UInt32 = 11, writeZeroes: UInt32 = 13
    static let ok: UInt8 = 0, ioError: UInt8 = 1, unsupported: UInt8 = 2
    /// §5.2.6: the unmap flag of a discard / write-zeroes segment.
    static let unmap: UInt32 = 1
}

public struct VirtioBlock: VirtioDevice {
    public let deviceID: UInt32 = 2
    public let queueMaxSizes: [UInt16] = [256]
    public let features: UInt64
    public let fd: Int32
    public let readOnly: Bool
    /// Capacity in 512-byte sectors.
    public let sectors: UInt64
    /// GET_ID's answer: at most 20 bytes, zero-padded (§5.2.6).
    public let serial: [UInt8]
    /// Keeps an image opened by `init(image:)` (and its lock) for as long as the device.
    let image: DiskImage?
    var negotiated: UInt64 = 0

    /// Largest segment (SIZE_MAX) and segment count (SEG_MAX) advertised; a request's data
    /// is bounded by `maxRequestBytes` (larger ones get IOERR) and moves straight between the
    /// file and guest RAM; write-zeroes writes `chunk`-byte pieces of zeroes.
    static let sizeMax: UInt32 = 1 << 20, segMax: UInt32 = 128
    static let maxRequestBytes: UInt64 = 128 << 20
    static let chunk = 128 << 10
    /// DISCARD / WRITE_ZEROES limits (config fields, in sectors and segments).
    static let maxRangeSectors: UInt32 = 0x3f_ffff, maxRangeSegments: UInt32 = 32

    /// A disk over `fd` (the caller opened it; it stays the caller's) of `bytes` bytes (a
    /// multiple of 512).
    public init(fd: Int32, bytes: UInt64, readOnly: Bool, serial: String = "axvm-disk") {
        self.init(fd: fd, bytes: bytes, readOnly: readOnly, serial: serial, image: nil)
    }

    /// A disk over an opened image, kept open (and locked) as long as the device.
    public init(image: DiskImage, serial: String = "axvm-disk") {
        self.init(fd: image.fd, bytes: image.size, readOnly: image.readOnly, serial: serial, image: image)
    }

    init(fd: Int32, bytes: UInt64, readOnly: Bool, serial: String, image: DiskImage?) {
        self.fd = fd
        self.readOnly = readOnly
        self.sectors = bytes / 512
        self.serial = Array(serial.utf8.prefix(20))
        self.image = image
        var f = VirtioBlockFeature.sizeMax | VirtioBlockFeature.segMax | VirtioBlockFeature.blockSize | VirtioBlockFeature.flush
        f |= readOnly ? VirtioBlockFeature.readOnly : VirtioBlockFeature.discard | VirtioBlockFeature.writeZeroes
        features = f
    }

    // MARK: Config space (§5.2.4)

    var config: [UInt8] {
        var w = VirtioStateWriter()
        w.u64(sectors)  // 0 capacity
        w.u32(Self.sizeMax)  // 8 size_max
        w.u32(Self.segMax)  // 12 seg_max
        w.u32(0)  // 16 geometry
        w.u32(512)  // 20 blk_size
        w.u64(0)  // 24 topology
        w.u32(0)  // 32 writeback, unused0, num_queues
        w.u32(Self.maxRangeSectors)  // 36 max_discard_sectors
        w.u32(Self.maxRangeSegments)  // 40 max_discard_seg
        w.u32(1)  // 44 discard_sector_alignment
        w.u32(Self.maxRangeSectors)  // 48 max_write_zeroes_sectors
        w.u32(Self.maxRangeSegments)  // 52 max_write_zeroes_seg
        w.u32(1)  // 56 write_zeroes_may_unmap, unused1
        return w.bytes
    }

    public func readConfig(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        let c = config
        for i in 0..<data.count {
            let (at, overflow) = offset.addingReportingOverflow(UInt64(i))
            data[i] = !overflow && at < UInt64(c.count) ? c[Int(at)] : 0
        }
    }

    public mutating func writeConfig(offset: UInt64, from data: UnsafeRawBufferPointer) {}  // all read-only without CONFIG_WCE

    public mutating func activate(features: UInt64) { negotiated = features }

    public mutating func reset() { negotiated = 0 }

    // MARK: Requests (§5.2.6)

    public mutating func process(queue index: Int, _ queue: inout Virtqueue) throws(VirtqueueError) {
        while let chain = try queue.pop() {
            let written = try serve(chain, queue)
            try queue.addUsed(head: chain.head, written: written)
        }
    }

    /// One request: the 16-byte header (type, reserved, sector) first in the readable part,
    /// the status byte last in the writable part, data between. Returns the bytes written.
    /// A chain too short for header and status is returned unanswered (0 bytes).
    func serve(_ chain: DescriptorChain, _ q: Virtqueue) throws(VirtqueueError) -> UInt32 {
        guard chain.readableLength >= 16, chain.writableLength >= 1 else { return 0 }
        var header = [UInt8](repeating: 0, count: 16)
        try withBytes(&header) { (b) throws(VirtqueueError) in try q.read(chain, offset: 0, into: b) }
        let type = header.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) }
        let sector = header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) }
        let dataIn = chain.writableLength - 1
        var written: UInt64 = 0
        let status: UInt8
        switch type {
        case VirtioBlockRequest.input:
            status = try transfer(chain, q, sector: sector, bytes: dataIn, toGuest: true)
            if status == VirtioBlockRequest.ok { written = dataIn }
        case VirtioBlockRequest.output:
            status = readOnly ? VirtioBlockRequest.ioError
                : try transfer(chain, q, sector: sector, bytes: chain.readableLength - 16, toGuest: false)
        case VirtioBlockRequest.flush:
            status = negotiated & VirtioBlockFeature.flush == 0 ? VirtioBlockRequest.unsupported
                : fdatasync(fd) == 0 ? VirtioBlockRequest.ok : VirtioBlockRequest.ioError
        case VirtioBlockRequest.getID:
            var id = serial + [UInt8](repeating: 0, count: 20 - serial.count)
            id.removeLast(20 - Int(min(20, dataIn)))
            try withBytes(&id) { (b) throws(VirtqueueError) in try q.write(chain, offset: 0, from: UnsafeRawBufferPointer(b)) }
            written = UInt64(id.count)
            status = VirtioBlockRequest.ok
        case VirtioBlockRequest.discard, VirtioBlockRequest.writeZeroes:
            let feature = type == VirtioBlockRequest.discard ? VirtioBlockFeature.discard : VirtioBlockFeature.writeZeroes
            status = negotiated & feature == 0 ? VirtioBlockRequest.unsupported
                : readOnly ? VirtioBlockRequest.ioError
                : try ranges(chain, q, discard: type == VirtioBlockRequest.discard)
        default:
            status = VirtioBlockRequest.unsupported
        }
        // The status byte last, after the data it reports on.
        var statusByte = [status]
        try withBytes(&statusByte) { (b) throws(VirtqueueError) in try q.write(chain, offset: dataIn, from: UnsafeRawBufferPointer(b)) }
        return UInt32(written + 1)  // ≤ the chain's length, which `walk` bounds to 32 bits
    }

    /// The byte offset of `sector`, if `bytes` from it are inside the disk.
    func range(sector: UInt64, bytes: UInt64) -> UInt64? {
        let (offset, o1) = sector.multipliedReportingOverflow(by: 512)
        let (end, o2) = offset.addingReportingOverflow(bytes)
        guard !o1, !o2, end <= sectors * 512 else { return nil }
        return offset
    }

    /// IN (file to the chain's writable part) or OUT (readable part after the header to the
    /// file), straight between the file and guest RAM (`Virtqueue.withBuffers`): one copy,
    /// made by the kernel.
    func transfer(_ chain: DescriptorChain, _ q: Virtqueue, sector: UInt64, bytes: UInt64, toGuest: Bool) throws(VirtqueueError) -> UInt8 {
        guard bytes % 512 == 0, bytes <= Self.maxRequestBytes, let start = range(sector: sector, bytes: bytes) else {
            return VirtioBlockRequest.ioError
        }
        var at = start
        let ok = try q.withBuffers(chain, deviceWrites: toGuest, offset: toGuest ? 0 : 16, count: Int(bytes)) { piece in
            defer { at += UInt64(piece.count) }
            return fileIO(piece, at: at, write: !toGuest)
        }
        return ok ? VirtioBlockRequest.ok : VirtioBlockRequest.ioError
    }

    /// pread/pwrite of the whole buffer at `offset`, retrying short transfers and EINTR.
    func fileIO(_ b: UnsafeMutableRawBufferPointer, at offset: UInt64, write: Bool) -> Bool {
        guard let base = b.baseAddress else { return true }
        var done = 0
        while done < b.count {
            let n = write ? pwrite(fd, base + done, b.count - done, off_t(offset) + off_t(done))
                : pread(fd, base + done, b.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }  // an error, or the file shrank under us
            done += n
        }
        return true
    }

    /// DISCARD or WRITE_ZEROES: 16-byte segments (sector, num_sectors, flags) after the
    /// header; each range punched out of the file (reads as zeroes, size kept).
    func ranges(_ chain: DescriptorChain, _ q: Virtqueue, discard: Bool) throws(VirtqueueError) -> UInt8 {
        let payload = chain.readableLength - 16
        guard payload > 0, payload % 16 == 0, payload / 16 <= UInt64(Self.maxRangeSegments) else { return VirtioBlockRequest.ioError }
        var segments = [UInt8](repeating: 0, count: Int(payload))
        try withBytes(&segments) { (b) throws(VirtqueueError) in try q.read(chain, offset: 16, into: b) }
        var checked: [(offset: UInt64, bytes: UInt64)] = []
        for i in 0..<Int(payload / 16) {
            let (sector, count, flags) = segments.withUnsafeBytes { b in
                (UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 16 * i, as: UInt64.self)),
                 UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 16 * i + 8, as: UInt32.self)),
                 UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 16 * i + 12, as: UInt32.self)))
            }
            // §5.2.6.2: UNSUPP for an unmap flag on a discard, or any unknown flag.
            guard flags & ~(discard ? 0 : VirtioBlockRequest.unmap) == 0 else { return VirtioBlockRequest.unsupported }
            guard count <= Self.maxRangeSectors, let start = range(sector: sector, bytes: UInt64(count) * 512) else {
                return VirtioBlockRequest.ioError
            }
            checked.append((start, UInt64(count) * 512))
        }
        for r in checked where r.bytes > 0 {
            if ckvm_punch_hole(fd, Int64(r.offset), Int64(r.bytes)) == 0 { continue }
            // Discard is a hint; zeroes must be written where the file cannot punch holes.
            if discard { continue }
            guard writeZeroes(at: r.offset, bytes: r.bytes) else { return VirtioBlockRequest.ioError }
        }
        return VirtioBlockRequest.ok
    }

    func writeZeroes(at offset: UInt64, bytes: UInt64) -> Bool {
        var zeroes = [UInt8](repeating: 0, count: Int(min(bytes, UInt64(Self.chunk))))
        var done: UInt64 = 0
        while done < bytes {
            let n = Int(min(bytes - done, UInt64(Self.chunk)))
            let ok = zeroes.withUnsafeMutableBytes { fileIO(UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: offset + done, write: true) }
            guard ok else { return false }
            done += UInt64(n)
        }
        return true
    }

    // MARK: State

    /// Version 1: u64 capacity in sectors, u8 read-only, u64 negotiated features.
    public func saveState() -> DeviceState {
        var w = VirtioStateWriter()
        w.u64(sectors)
        w.u8(readOnly ? 1 : 0)
        w.u64(negotiated)
        return DeviceState(version: 1, bytes: w.bytes)
    }

    public mutating func restoreState(_ state: DeviceState, path: String) throws(VMMError) {
        var r = VirtioStateReader(bytes: state.bytes, path: path, prefix: "virtio-blk: ")
        guard state.version == 1 else { throw r.error("version", "version \(state.version), this axvm reads 1") }
        let s = try r.u64("capacity")
        guard s == sectors else { throw r.error("capacity", "\(s) sectors, the disk has \(sectors)") }
        let ro = try r.u8("read-only")
        guard ro == (readOnly ? 1 : 0) else { throw r.error("read-only", "\(ro), the disk is \(readOnly ? "read-only" : "writable")") }
        let f = try r.u64("features")
        let offered = features | VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
        guard f & ~offered == 0 else { throw r.error("features", "0x\(String(f, radix: 16)) beyond the offered 0x\(String(offered, radix: 16))") }
        try r.end()
        negotiated = f
    }
}
