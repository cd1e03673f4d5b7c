import AxVMM
import CKVM
import Glibc
import Testing

/// axvm as a real process, with its standard streams where a test wants them.
struct AxvmProcess {
    let pid: pid_t
    /// The read end of a pipe on axvm's stderr.
    let stderr: Int32
    var errText = ""

    /// The axvm binary `swift build` put next to the tests (`AXVM_TEST_BINARY` names
    /// another, e.g. an older build, to see these tests fail against it).
    static var binary: String {
        if let p = getenv("AXVM_TEST_BINARY") { return String(cString: p) }
        let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        return "/" + root + "/.build/debug/axvm"
    }

    /// Starts axvm with `args`; `environment` is added to this process's; standard output
    /// goes to `stdoutPath` (opened for writing) or to /dev/null.
    /// `limitFileSize`: the largest file it may write (RLIMIT_FSIZE, with SIGXFSZ ignored, so
    /// a write past it fails with EFBIG), set by a shell that then execs axvm.
    init(_ args: [String], environment: [String] = [], stdoutPath: String = "/dev/null", stdoutFD: Int32? = nil,
         limitFileSize: Int? = nil) throws {
        try self.init(raw: args.map { Array($0.utf8) }, environment: environment, stdoutPath: stdoutPath, stdoutFD: stdoutFD,
                      limitFileSize: limitFileSize)
    }

    /// As `init(_:)`, with the arguments as bytes (which need not be UTF-8); `stdoutFD`, if
    /// given, is standard output instead of `stdoutPath`.
    init(raw args: [[UInt8]], environment: [String] = [], stdoutPath: String = "/dev/null", stdoutFD: Int32? = nil,
         limitFileSize: Int? = nil) throws {
        try #require(access(Self.binary, X_OK) == 0, "\(Self.binary) missing: run swift build first")
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let fd = stdoutFD {
            posix_spawn_file_actions_adddup2(&actions, fd, 1)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        posix_spawn_file_actions_addclose(&actions, fds[0])
        var env: [String] = []
        var e = environ
        while let p = e.pointee { env.append(String(cString: p)); e += 1 }
        // dash's `ulimit -f` counts 512-byte blocks.
        let shell = limitFileSize.map { ["/bin/sh", "-c", "trap '' XFSZ; ulimit -f \($0 / 512) && exec \"$0\" \"$@\""].map { Array($0.utf8) } } ?? []
        let program = limitFileSize == nil ? Self.binary : "/bin/sh"
        let argv = (shell + [Array(Self.binary.utf8)] + args).map { bytes -> UnsafeMutablePointer<CChar>? in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            for (i, b) in bytes.enumerated() { p[i] = CChar(bitPattern: b) }
            p[bytes.count] = 0
            return p
        } + [nil]
        let envp = (env + environment).map { strdup($0) } + [nil]
        defer { argv.forEach { $0?.deallocate() }; envp.forEach { free($0) } }
        var pid = pid_t()
        let r = posix_spawn(&pid, program, &actions, nil, argv, envp)
        close(fds[1])
        try #require(r == 0, "posix_spawn: \(r)")
        self.pid = pid
        self.stderr = fds[0]
    }

    /// Reads stderr until it contains `text` (true) or `seconds` pass or it closes (false).
    mutating func awaitStderr(_ text: String, seconds: Double = 30) -> Bool {
        let t0 = monotonicSeconds()
        while !errText.contains(text) {
            let left = seconds - (monotonicSeconds() - t0)
            if left <= 0 || !readStderr(wait: left) { return errText.contains(text) }
        }
        return true
    }

    /// One read of stderr within `wait` seconds; false at its end.
    @discardableResult
    mutating func readStderr(wait: Double) -> Bool {
        var p = pollfd(fd: stderr, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(wait * 1000)) > 0 else { return true }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = read(stderr, &buf, buf.count)
        if n <= 0 { return false }
        errText += String(decoding: buf[0..<n], as: UTF8.self)
        return true
    }

    /// Waits up to `seconds` for the exit: its status, or minus the signal that killed it;
    /// nil (and the process killed) if it did not end.
    mutating func wait(seconds: Double = 30) -> Int32? {
        let t0 = monotonicSeconds()
        var status: Int32 = 0
        while monotonicSeconds() - t0 < seconds {
            readStderr(wait: 0.05)
            if waitpid(pid, &status, WNOHANG) == pid {
                while readStderr(wait: 0.2) && monotonicSeconds() - t0 < seconds + 5 {}  // to its end
                close(stderr)
                return status & 0x7f == 0 ? (status >> 8) & 0xff : -(status & 0x7f)
            }
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        close(stderr)
        return nil
    }
}

/// Temporary files named after the test process, removed by `cleanup`.
func temporaryPath(_ name: String) -> String { "/tmp/axvm-test-\(getpid())-\(name)" }

func fileBytes(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return out
}

func writeFile(_ path: String, _ bytes: [UInt8]) -> Bool {
    guard let f = fopen(path, "wb") else { return false }
    defer { fclose(f) }
    return fwrite(bytes, 1, bytes.count, f) == bytes.count
}

/// Names in /tmp that start with `prefix` (left-over temporary files).
func filesInTmp(startingWith prefix: String) -> [String] {
    guard let d = opendir("/tmp") else { return [] }
    defer { closedir(d) }
    var out: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name.hasPrefix(prefix) { out.append(name) }
    }
    return out
}

/// Output files: never an input, never half-written, the old file kept when a run fails;
/// standard output checked.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here"), .serialized)
struct OutputFileTests {
    @Test func statsJSONThatIsAnInputIsRefusedAndLeftIntact() throws {
        // A copy of a guest, and a hard link to it under another name.
        let guest = temporaryPath("guest.bin"), link = temporaryPath("link.json")
        defer { unlink(guest); unlink(link) }
        let original = try #require(fileBytes(guestPath("hello")))
        try #require(writeFile(guest, original))
        try #require(Glibc.link(guest, link) == 0)
        for target in [guest, link] {
            var p = try AxvmProcess(["run", guest, "--stats-json", target])
            #expect(p.wait() == 2)
            #expect(p.errText.contains("is the guest image \(guest)"), "\(p.errText)")
            #expect(fileBytes(guest) == original)
        }
    }

    @Test func failedRunKeepsTheOldStatisticsAndLeavesNoTemporaryFile() throws {
        let json = temporaryPath("old.json")
        defer { unlink(json) }
        let old = Array("{\"previous\": true}\n".utf8)
        try #require(writeFile(json, old))
        // The run fails after the statistics file was checked: a guest that does not exist.
        var p = try AxvmProcess(["run", "/nonexistent.bin", "--stats-json", json])
        #expect(p.wait() == 2)
        #expect(fileBytes(json) == old)
        #expect(filesInTmp(startingWith: ".axvm-test-\(getpid())-old.json.axvm-").isEmpty)
        // A run that works replaces it whole, keeping its permissions.
        chmod(json, 0o640)
        var q = try AxvmProcess(["run", guestPath("hello"), "--stats-json", json])
        #expect(q.wait() == 0)
        let text = String(decoding: try #require(fileBytes(json)), as: UTF8.self)
        #expect(text.hasPrefix("{") && text.contains("\"exit_status\": 0") && text.hasSuffix("}\n"))
        var st = stat()
        #expect(stat(json, &st) == 0 && st.st_mode & 0o777 == 0o640)
        #expect(filesInTmp(startingWith: ".axvm-test-\(getpid())-old.json.axvm-").isEmpty)
    }

    @Test func failedWriteToStandardOutputIsAnError() throws {
        var p = try AxvmProcess(["run", guestPath("hello"), "--stats"], stdoutPath: "/dev/full")
        #expect(p.wait() == Frontend.outputFailureStatus)
        #expect(p.errText.contains("standard output: write failed: No space left on device"), "\(p.errText)")
        var c = try AxvmProcess(["check"], stdoutPath: "/dev/full")
        #expect(c.wait() == Frontend.outputFailureStatus)
    }

    @Test func closedStandardOutputEndsTheRunAsSIGPIPEWould() throws {
        // stdout a pipe whose reader has gone (as `axvm run … | head -0`): the guest's first
        // console byte gets EPIPE, and the run ends as SIGPIPE ends a tool (128 + 13) — not
        // killed by the signal — with the JSON written.
        let json = temporaryPath("pipe.json")
        defer { unlink(json) }
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        close(fds[0])
        var p = try AxvmProcess(["run", guestPath("hello"), "--stats-json", json], stdoutFD: fds[1])
        close(fds[1])
        #expect(p.wait() == 128 + SIGPIPE, "\(p.errText)")
        #expect(String(decoding: fileBytes(json) ?? [], as: UTF8.self).contains("\"exit_status\": 141"))
    }
}

/// Every terminating signal, at every phase of a run, ends it through one path: statistics
/// printed, the JSON written, exit status 128 + the signal — never a process killed by it.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here"), .serialized)
struct SignalTests {
    static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]

    /// The phases and the run that reaches each (`AXVM_PAUSE_AT` holds the run there until
    /// the signal arrives; "running" is a guest spinning with no pause at all).
    static let phases: [(String, [String])] = [
        ("setup", ["run", guestPath("hello")]),
        ("populate", ["run", guestPath("hello"), "--populate", "--memory", "256M"]),
        ("fault", ["run", guestPath("memtest"), "--memory", "64M"]),
        ("running", ["run", guestPath("spin"), "--timeout", "60"]),
    ]

    @Test(arguments: signals)
    func signalEndsEveryPhaseWithStatistics(signal: Int32) throws {
        for (phase, args) in Self.phases {
            let out = temporaryPath("signal-\(signal)-\(phase).txt"), json = temporaryPath("signal-\(signal)-\(phase).json")
            defer { unlink(out); unlink(json) }
            var p = try AxvmProcess(args + ["--stats", "--stats-json", json],
                                    environment: phase == "running" ? [] : ["AXVM_PAUSE_AT=\(phase)"], stdoutPath: out)
            if phase == "running" {
                usleep(1_500_000)
            } else {
                let reached = p.awaitStderr("paused at \(phase)")
                #expect(reached, "never reached \(phase): \(p.errText)")
            }
            kill(p.pid, signal)
            let status = p.wait()
            #expect(status == 128 + signal, "\(phase), signal \(signal): status \(String(describing: status)); \(p.errText)")
            let text = String(decoding: fileBytes(out) ?? [], as: UTF8.self)
            #expect(text.contains("exit:") && text.contains("interrupted by SIG"), "\(phase): \(text)")
            let jsonText = String(decoding: fileBytes(json) ?? [], as: UTF8.self)
            #expect(jsonText.contains("\"exit_status\": \(128 + signal)"), "\(phase): \(jsonText)")
        }
    }
}

#if arch(x86_64)
extension SignalTests {
    /// A Linux boot ends the same way (the boot's set-up: KVM, memory, kernel and initrd
    /// loaded). A synthetic kernel; `--force-kvm-pvm` lets it past the kvm_pvm refusal.
    @Test(arguments: [(SIGTERM, "setup"), (SIGHUP, "setup"), (SIGINT, "load"), (SIGQUIT, "load")])
    func signalEndsALinuxBootsSetup(signal: Int32, phase: String) throws {
        let kernel = temporaryPath("signal-bzImage"), json = temporaryPath("signal-boot.json"), out = temporaryPath("signal-boot.txt")
        let initrd = temporaryPath("signal-initrd")
        defer { unlink(kernel); unlink(json); unlink(out); unlink(initrd) }
        try #require(writeFile(kernel, syntheticBzImage()))
        // A 32 MiB sparse initrd: several chunks of loading.
        let fd = open(initrd, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0 && ftruncate(fd, 32 << 20) == 0)
        close(fd)
        var p = try AxvmProcess(["boot", "--kernel", kernel, "--initrd", initrd, "--force-kvm-pvm", "--stats", "--stats-json", json],
                                environment: ["AXVM_PAUSE_AT=\(phase)"], stdoutPath: out)
        let reached = p.awaitStderr("paused at \(phase)")
        #expect(reached, "\(p.errText)")
        kill(p.pid, signal)
        #expect(p.wait() == 128 + signal, "\(p.errText)")
        #expect(String(decoding: fileBytes(json) ?? [], as: UTF8.self).contains("\"exit_status\": \(128 + signal)"))
        #expect(p.errText.contains("interrupted by SIG"), "\(p.errText)")
    }
}
#endif

/// Messages name the value the user gave and the rule, not a default or a raw number.
@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here"), .serialized)
struct MessageTests {
    func error(_ args: [String]) throws -> (Int32?, String) {
        var p = try AxvmProcess(args)
        let status = p.wait()
        return (status, p.errText)
    }

    @Test func negativeValuesAreNamedWithTheRule() throws {
        let cases: [(String, String)] = [
            ("--vcpus", "vCPUs -1: must be from 1 to 64"),
            ("--fault-threads", "fault threads -1: must be from 1 to 64"),
            ("--memory", "The value '-1' is invalid for '--memory <memory>': must be a size in bytes"),
            ("--timeout", "The value '-1' is invalid for '--timeout <timeout>': must be a number of seconds"),
            ("--stride", "The value '-1' is invalid for '--stride <stride>': must be a whole number"),
        ]
        for (option, message) in cases {
            let (status, text) = try error(["run", guestPath("hello"), option, "-1"])
            #expect(status == 64)
            #expect(text.contains(message), "\(option): \(text)")
            #expect(!text.contains("Missing value"), "\(option): \(text)")
        }
    }

    @Test func aDefaultThatDoesNotFitIsCalledADefault() throws {
        // Sequential order: the stride is not used, so not checked.
        #expect(try error(["run", guestPath("memtest"), "--memory", "16M", "--test-size", "4K"]).0 == 0)
        let (status, text) = try error(["run", guestPath("memtest"), "--memory", "16M", "--test-size", "4K", "--order", "strided"])
        #expect(status == 64)
        #expect(text.contains("the default stride; --stride sets it"), "\(text)")
        #expect(try error(["run", guestPath("memtest"), "--test-size", "0"]).1.contains("test size 0 (0x0): must be a 4 KiB multiple from 4 KiB"))
    }

    @Test func enumeratedOptionsListTheirNames() throws {
        let (status, text) = try error(["run", guestPath("hello"), "--order", "1"])
        #expect(status == 64)
        #expect(text.contains("Please provide one of 'sequential', 'random' or 'strided'"), "\(text)")
        var help = try AxvmProcess(["run", "--help"], stdoutPath: temporaryPath("help.txt"))
        defer { unlink(temporaryPath("help.txt")) }
        #expect(help.wait() == 0)
        let helpText = String(decoding: fileBytes(temporaryPath("help.txt")) ?? [], as: UTF8.self)
        #expect(helpText.contains("(default: sequential)") && helpText.contains("(default: split)"), "\(helpText)")
        #expect(!helpText.contains("(default: 0)"), "\(helpText)")
    }

    @Test func kvmPathIsNamed() throws {
        let (status, text) = try error(["run", guestPath("hello"), "--kvm", "/dev/null"])
        #expect(status == 2)
        #expect(text.contains("/dev/null is not a KVM device"), "\(text)")
        #if arch(x86_64)
        // boot opens the device before it looks at the host's KVM modules.
        let kernel = temporaryPath("kvm-path-bzImage")
        defer { unlink(kernel) }
        try #require(writeFile(kernel, syntheticBzImage()))
        for (path, message) in [("/nonexistent/kvm", "/nonexistent/kvm does not exist"), ("/dev/null", "/dev/null is not a KVM device")] {
            let (bootStatus, bootText) = try error(["boot", "--kernel", kernel, "--kvm", path])
            #expect(bootStatus == 2)
            #expect(bootText.contains(message), "\(bootText)")
        }
        #endif
    }

    @Test func nonUTF8ArgumentsAreRefusedNamingTheByte() throws {
        // A raw 0xff byte in the command line (Swift's String would make it U+FFFD, three
        // other bytes): refused, naming the argument, the byte and its offset.
        let args: [[UInt8]] = [Array("boot".utf8), Array("--kernel".utf8), Array(guestPath("hello").utf8),
                               Array("--cmdline".utf8), Array("console=ttyS0 ".utf8) + [0xff]]
        var p = try AxvmProcess(raw: args)
        #expect(p.wait() == 64)
        #expect(p.errText.contains("argument 5 has the byte 0xff at offset 14, which is not UTF-8"), "\(p.errText)")
        // A well-formed non-ASCII character is fine (the kernel's own check then applies).
        var q = try AxvmProcess(["run", guestPath("hello"), "--stats-json", temporaryPath("é.json")])
        defer { unlink(temporaryPath("é.json")) }
        #expect(q.wait() == 0)
    }

    @Test func maxResidentFailureDoesNotClaimPagesTouched() throws {
        let json = temporaryPath("resident.json")
        defer { unlink(json) }
        var p = try AxvmProcess(["run", guestPath("memtest"), "--memory", "64M", "--max-resident", "8M", "--stats-json", json])
        #expect(p.wait() == 3)
        let text = String(decoding: fileBytes(json) ?? [], as: UTF8.self)
        #expect(text.contains("\"pages_touched\": null"), "\(text)")
        #expect(text.contains("\"pages_planned\": 15872"), "\(text)")
    }
}
