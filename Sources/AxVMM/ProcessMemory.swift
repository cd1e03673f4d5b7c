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

    public static func current() -> ProcessMemory {
        var m = ProcessMemory()
        guard let f = fopen("/proc/self/status", "r") else { return m }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, 256, f) != nil {
            let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            func kB(_ prefix: String) -> UInt64? {
                guard s.hasPrefix(prefix) else { return nil }
                let digits = s.dropFirst(prefix.count).filter { $0.isNumber }
                return UInt64(digits).map { $0 * 1024 }
            }
            if let v = kB("VmRSS:") { m.rss = v }
            if let v = kB("RssShmem:") { m.shmem = v }
        }
        return m
    }
}
