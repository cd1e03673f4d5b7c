#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// This process's resident memory, from /proc/self/status (Linux, values in kB there).
public struct ProcessMemory: Sendable {
    /// VmRSS: everything resident.
    public var rss: UInt64 = 0
    /// RssShmem: resident shared memory (the memfd's pages mapped here, each page once
    /// however many of our mappings reach it).
    public var shmem: UInt64 = 0

    /// /proc/self/status opened once for a sandboxed process (`keepStatusOpen`): the filters
    /// allow no `open` after set-up, and the results read it at the end. -1 otherwise.
    private static let statusFD = Locked<Int32>(-1)

    /// Opens /proc/self/status for good (the sandbox calls it before its filters go on).
    static func keepStatusOpen() {
        statusFD.withLock { fd in if fd < 0 { fd = ckvm_open("/proc/self/status", O_RDONLY | O_CLOEXEC) } }
    }

    public static func current() -> ProcessMemory {
        var text = [UInt8]()
        let kept = statusFD.withLock { $0 }
        let fd = kept >= 0 ? kept : ckvm_open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return ProcessMemory() }
        defer { if kept < 0 { _ = ckvm_close(fd) } }
        // A seq_file: read from offset 0 each time, it is generated afresh.
        var chunk = [UInt8](repeating: 0, count: 4096)
        while text.count < 1 << 16 {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(text.count)) }
            guard n > 0 else { break }
            text += chunk[0..<n]
        }
        return parse(String(decoding: text, as: UTF8.self))
    }

    /// VmRSS and RssShmem from the text of /proc/self/status ("Name:\t  value kB" lines).
    static func parse(_ status: String) -> ProcessMemory {
        var m = ProcessMemory()
        for line in status.split(separator: "\n") {
            func kB(_ prefix: String) -> UInt64? {
                guard line.hasPrefix(prefix) else { return nil }
                let digits = line.dropFirst(prefix.count).filter { $0.isNumber }
                return UInt64(String(digits)).map { $0 * 1024 }
            }
            if let v = kB("VmRSS:") { m.rss = v }
            if let v = kB("RssShmem:") { m.shmem = v }
        }
        return m
    }
}
