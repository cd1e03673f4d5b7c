import AxAddrSpace
import CKVM
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// An initrd opened and measured (fstat) but not read. `LinuxMachine.plan` places it from its
/// size, so one that cannot fit is refused before a byte of it is read; `copy` then reads it
/// in chunks straight into guest memory: no copy of the whole file is ever in the heap.
public final class LinuxInitrd {
    public let path: String
    /// The file's size when it was opened: what the plan placed and the kernel is told.
    public let size: UInt64
    private let fd: Int32

    /// Bytes read per chunk.
    public static let chunkSize = 4 << 20

    /// Opens `path` (a regular file, O_NONBLOCK so a FIFO cannot block the open) and refuses
    /// it, from its size alone, if it is empty or larger than `limit` bytes.
    public init(path: String, limit: UInt64, tooLarge: (UInt64) -> String) throws(LinuxBootError) {
        do { (fd, size) = try openRegularFile(path, limit: limit, tooLarge: tooLarge) } catch {
            throw .initrd(path: path, reason: error.reason)
        }
        self.path = path
    }

    deinit { close(fd) }

    /// Reads the file from its start, `chunkSize` bytes at a time, and hands each chunk to
    /// `sink` with its offset in the file, then calls `progress(done, total)`. Whatever
    /// `sink` or `progress` throws ends the copy (the caller's way to abort a long load). A
    /// file that shrank since it was measured, or a read error, is `VMMError.input` with the
    /// path and the offset.
    public func copy(chunkSize: Int = LinuxInitrd.chunkSize,
                     to sink: (_ chunk: UnsafeRawBufferPointer, _ offset: UInt64) throws(VMMError) -> Void,
                     progress: (_ done: UInt64, _ total: UInt64) throws(VMMError) -> Void) throws(VMMError) {
        let capacity = Int(min(UInt64(max(chunkSize, 4096)), size))  // size >= 1 (an empty file is refused)
        // One buffer for every chunk, freed on every way out.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < size {
            let want = Int(min(UInt64(capacity), size - offset))
            var filled = 0
            while filled < want {
                let at = offset + UInt64(filled)
                // Sound: `filled < want <= capacity`, so [filled, want) is inside the buffer;
                // `at` is below `size`, an st_size, so it fits an off_t.
                let n = pread(fd, buffer.baseAddress! + filled, want - filled, off_t(at))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw .input(path: path, offset: at, reason: n == 0
                        ? "initrd ended early (it was \(size) bytes when measured: the file shrank)"
                        : "initrd read failed: \(errnoString(errno))")
                }
                filled += n
            }
            try sink(UnsafeRawBufferPointer(rebasing: buffer[0..<want]), offset)
            offset += UInt64(want)
            try progress(offset, size)
        }
    }
}

extension LinuxInitrd {
    /// Copies the initrd into guest memory at `address` (the plan checked that it fits
    /// there), through the address space: lazy pages are populated on the way, as a guest
    /// touch would. A large initrd shows a progress line on a terminal, and a terminating
    /// signal ends the load between chunks (`Termination.checkpoint`).
    func load<F>(into memory: GuestMemory<F>, at address: UInt64) throws(VMMError) {
        var line = LoadProgressLine(label: "axvm: loading initrd \(path)", total: size)
        var done: UInt64 = 0
        defer { line.finish(done, size) }
        try copy(to: { chunk, offset throws(VMMError) in
            // offset + count <= size: inside the placement the plan checked.
            try memory.write(chunk, at: GuestPhysAddr(address + offset))
        }, progress: { d, total throws(VMMError) in
            done = d
            line.update(d, total)
            try Termination.checkpoint("load")
        })
    }
}

/// One updating line on standard error for a long copy, shown only when standard error is a
/// terminal and the copy is large (`threshold`): "axvm: loading initrd PATH: N of M MiB (P%)".
struct LoadProgressLine {
    static let threshold: UInt64 = 64 << 20
    let label: String
    let shown: Bool
    private var lastPercent: UInt64 = .max

    init(label: String, total: UInt64) {
        self.label = label
        shown = total >= Self.threshold && isatty(2) == 1
    }

    mutating func update(_ done: UInt64, _ total: UInt64) {
        guard shown, total > 0 else { return }
        let d = min(done, total)
        let percent = total > UInt64.max / 100 ? d / (total / 100) : d * 100 / total
        guard percent != lastPercent else { return }
        lastPercent = percent
        emit("\r\(label): \(d >> 20) of \(total >> 20) MiB (\(percent)%)\u{1b}[K" + (d == total ? "\n" : ""))
    }

    /// Ends the line if the copy stopped before its end.
    func finish(_ done: UInt64, _ total: UInt64) {
        if shown && done < total { emit("\n") }
    }

    private func emit(_ text: String) {
        var t = text
        t.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
