import AxVMM
import Glibc
import KVM
import Testing

/// Whether the KVM tests can run. With AXVM_REQUIRE_KVM=1 (set by CI where /dev/kvm
/// exists) they run even when KVM is unusable, and fail, instead of being skipped.
enum KVMGate {
    static let required = getenv("AXVM_REQUIRE_KVM").map { String(cString: $0) == "1" } ?? false
    static let usable: Bool = (try? KVMSystem()) != nil
    /// These tests run the x86 guests: on an arm64 host the AArch64 guest suite is the arm64
    /// rig's (scripts/kvm-rig.sh test aarch64), and the arm64 code's unit tests run anywhere.
    static var enabled: Bool { (required || usable) && GuestArch.host == .x86_64 }
}

/// guests/build, next to this package; built once (scripts/build-guests.sh, the Swift
/// toolchain's clang and ld.lld) if a fresh clone has none yet, so that a plain `swift test`
/// needs no step before it.
func guestPath(_ name: String) -> String {
    _ = Guests.built
    return Guests.root + "/guests/build/" + name + ".bin"
}

enum Guests {
    static let root = "/" + #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
    static let built: Bool = {
        if access(root + "/guests/build/memtest.bin", R_OK) == 0 && access(root + "/guests/build/multiboot-halt.elf", R_OK) == 0 { return true }
        return system("'\(root)/scripts/build-guests.sh' >/dev/null") == 0
    }()
}

/// Runs a guest; fails the test (instead of crashing) when the VMM throws.
func runGuest(_ name: String, _ configure: (inout VMConfig) -> Void = { _ in }) throws -> RunReport {
    var c = VMConfig(guestPath: guestPath(name))
    c.memorySize = 16 << 20
    c.timeout = 60
    configure(&c)
    return try Machine.run(c)
}

/// The checksum memtest must report: the sum of (address × golden) ^ seed over every
/// qword of the test region, worked out here independently of the guest.
func expectedChecksum(base: UInt64, size: UInt64, seed: UInt64) -> UInt64 {
    var sum: UInt64 = 0
    var a = base
    while a < base + size {
        sum &+= (a &* 0x9e37_79b9_7f4a_7c15) ^ seed
        a += 8
    }
    return sum
}

/// The same sum over the test pages the guest touches (page k at `testPageAddress(k)`).
func expectedChecksum(_ p: GuestParams) -> UInt64 {
    var sum: UInt64 = 0
    for k in 0..<p.testPages {
        sum &+= expectedChecksum(base: p.testPageAddress(k), size: 4096, seed: p.seed)
    }
    return sum
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func readFile(_ path: String) -> String? { fileBytes(path).map { String(decoding: $0, as: UTF8.self) } }

/// Open file descriptors of this process.
func openFDCount() -> Int {
    guard let d = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(d) }
    var n = 0
    while readdir(d) != nil { n += 1 }
    return n
}

/// Open file descriptors of this process on files under `prefix` (immune to what other
/// suites running alongside open).
func openFDs(under prefix: String) -> Int {
    var n = 0
    for fd in (try? listDirectory("/proc/self/fd")) ?? [] {
        var buf = [CChar](repeating: 0, count: 4096)
        let len = readlink("/proc/self/fd/" + fd, &buf, buf.count - 1)
        if len > 0 && String(decoding: buf[0..<len].map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix(prefix) { n += 1 }
    }
    return n
}

/// The names in a directory but `.` and `..`.
func listDirectory(_ path: String) throws -> [String] {
    guard let d = opendir(path) else { throw VMMError.host("opendir \(path)") }
    defer { closedir(d) }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: &e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// Whether the Debian tool at `path` (from `package`, installed by scripts/setup.sh) can run.
/// If not, the test skips with a note, or fails when the environment variable `required` is
/// 1 (CI sets it: the read-back must not quietly go away).
func toolAvailable(_ path: String, package: String, required: String) -> Bool {
    if access(path, X_OK) == 0 { return true }
    let name = path.split(separator: "/").last.map(String.init) ?? path
    if getenv(required).map({ String(cString: $0) }) == "1" {
        Issue.record("\(name) missing (apt-get install \(package)) and \(required)=1")
    } else {
        print("skipped: no \(name) (apt-get install \(package))")
    }
    return false
}
