/// Typed reads and writes of guest memory by guest-physical address, across pages and
/// areas (the Rust crate's `GuestMemoryAccessor`, and rust-vmm `vm-memory`'s view).
///
/// An implementor says where the host bytes of a guest address are; the reads and writes
/// split at every host discontinuity. Unlike the Rust trait, objects may straddle pages.
public protocol GuestMemoryAccessor {
    /// The host bytes starting at `gpa`, up to the end of their contiguous host run.
    func hostSpan(at gpa: GuestPhysAddr) throws(AddrSpaceError) -> UnsafeMutableRawBufferPointer
}

extension GuestMemoryAccessor {
    /// Copies `buffer.count` bytes from guest memory at `gpa`.
    public func read(_ gpa: GuestPhysAddr, into buffer: UnsafeMutableRawBufferPointer) throws(AddrSpaceError) {
        var done = 0
        while done < buffer.count {
            let span = try hostSpan(at: gpa + UInt64(done))
            let n = min(span.count, buffer.count - done)
            // Sound: both ranges hold at least n bytes; guest and VMM memory never overlap.
            (buffer.baseAddress.unsafelyUnwrapped + done).copyMemory(from: span.baseAddress.unsafelyUnwrapped, byteCount: n)
            done += n
        }
    }

    /// Copies `bytes` into guest memory at `gpa`.
    public func write(_ gpa: GuestPhysAddr, from bytes: UnsafeRawBufferPointer) throws(AddrSpaceError) {
        var done = 0
        while done < bytes.count {
            let span = try hostSpan(at: gpa + UInt64(done))
            let n = min(span.count, bytes.count - done)
            span.baseAddress.unsafelyUnwrapped.copyMemory(from: bytes.baseAddress.unsafelyUnwrapped + done, byteCount: n)
            done += n
        }
    }

    /// Reads a plain value (little-endian host layout) at `gpa`.
    public func readObject<T: BitwiseCopyable>(_ gpa: GuestPhysAddr, as: T.Type = T.self) throws(AddrSpaceError) -> T {
        let span = try hostSpan(at: gpa)
        if span.count >= MemoryLayout<T>.size { return span.loadUnaligned(as: T.self) }
        return try withUnsafeTemporaryAllocation(byteCount: MemoryLayout<T>.size,
                                                 alignment: MemoryLayout<T>.alignment) { tmp throws(AddrSpaceError) in
            try read(gpa, into: tmp)
            return tmp.loadUnaligned(as: T.self)
        }
    }

    /// Writes a plain value at `gpa`.
    public func writeObject<T: BitwiseCopyable>(_ value: T, at gpa: GuestPhysAddr) throws(AddrSpaceError) {
        var v = value
        try withUnsafeBytes(of: &v) { bytes throws(AddrSpaceError) in try write(gpa, from: bytes) }
    }
}
