import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// axvm's sandbox: once set-up is done, every thread runs under a seccomp filter that allows
/// the system calls (and ioctl requests) of its role and nothing else (`SandboxPolicy`);
/// every thread has dropped its capabilities and set no_new_privs. A refused call ends the
/// process with SIGSYS after one line on standard error naming the thread and the call.
///
/// Each thread installs its own filter: a helper thread when it starts (`OSThread`), the
/// set-up thread at the end of set-up (`confineMain`). Threads started after that inherit the
/// set-up thread's filter under their own. Off unless `enable` was called (the command line
/// calls it unless `--no-sandbox`; a library user decides).
public enum Sandbox {
    private struct State {
        var policy: SandboxPolicy?
        var programs: [SandboxRole: [sock_filter]] = [:]
        /// The first thread that could not confine itself.
        var failure: String?
        /// Test hook (AXVM_SANDBOX_PROBE=ROLE:SYSCALL): the first thread of ROLE makes the
        /// refused call right after confining itself.
        var probe: (role: SandboxRole, number: Int32)?
        var reporterInstalled = false
    }
    private static let state = Locked(State())

    /// Turns the sandbox on for this process, before any thread of the run starts.
    public static func enable(_ policy: SandboxPolicy) throws(VMMError) {
        var programs: [SandboxRole: [sock_filter]] = [:]
        for role in SandboxRole.allCases { programs[role] = try policy.program(role).instructions }
        let probe = try probeRequest()
        ProcessMemory.keepStatusOpen()
        let first = state.withLock { s in
            let first = !s.reporterInstalled
            s = State(policy: policy, programs: programs, probe: probe, reporterInstalled: true)
            return first
        }
        if first { installReporter() }
    }

    /// The policy `enable` was given, nil if the sandbox is off.
    public static var policy: SandboxPolicy? { state.withLock { $0.policy } }

    /// The end of set-up: confines the calling thread (the one that set the VM up) as `main`.
    /// Throws if any thread could not confine itself.
    static func confineMain() throws(VMMError) {
        guard policy != nil else {
            throw .host("sandbox: the run's settings ask for it, but Sandbox.enable was not called before the run's threads started")
        }
        if let f = state.withLock({ $0.failure }) { throw .host("sandbox: \(f)") }
        // What the run may still ask of /sys after this (a report naming kvm_pvm, a
        // snapshot's header): read now, while the files may be opened.
        _ = KVMFlavour.current
        if let f = confine(.main, name: "axvm") { throw .host("sandbox: \(f)") }
        if let f = state.withLock({ $0.failure }) { throw .host("sandbox: \(f)") }
    }

    /// Called first thing on every thread `OSThread` starts: names it and, with the sandbox
    /// on, confines it to `role` (a failure is kept for `confineMain` to report).
    static func enterThread(_ role: SandboxRole, name: String) {
        if let f = confine(role, name: name) {
            state.withLock { if $0.failure == nil { $0.failure = f } }
        }
    }

    /// Names the calling thread; with the sandbox on drops its capabilities and installs its
    /// filter. Returns what failed, nil if nothing did.
    private static func confine(_ role: SandboxRole, name: String) -> String? {
        // Sound: a StaticString literal is NUL-terminated and lives as long as the process
        // (the SIGSYS handler may print it at any time).
        let roleName = UnsafeRawPointer(role.name.utf8Start).assumingMemoryBound(to: CChar.self)
        name.withCString { ckvm_sandbox_set_thread($0, roleName) }
        guard let program = state.withLock({ $0.programs[role] }) else { return nil }
        if ckvm_drop_capabilities() != 0 {
            return "\(name): dropping capabilities (capset): \(errnoString(ckvm_errno()))"
        }
        let r = program.withUnsafeBufferPointer { ckvm_seccomp_install($0.baseAddress, UInt16($0.count)) }
        if r != 0 { return "\(name): installing the \(role.name) filter (seccomp): \(errnoString(ckvm_errno()))" }
        let probe: Int32? = state.withLock { s in
            guard let p = s.probe, p.role == role else { return nil }
            s.probe = nil
            return p.number
        }
        if let probe { _ = ckvm_raw_syscall3(Int(probe), 0, 0, 0) }
        return nil
    }

    /// AXVM_SANDBOX_PROBE=ROLE:SYSCALL (a test hook; ROLE main, vcpu, fault, device, helper).
    private static func probeRequest() throws(VMMError) -> (role: SandboxRole, number: Int32)? {
        guard let p = getenv("AXVM_SANDBOX_PROBE") else { return nil }
        let text = String(cString: p)
        let parts = text.split(separator: ":").map(String.init)
        let roles: [String: SandboxRole] = ["main": .main, "vcpu": .vcpu, "fault": .fault, "device": .device, "helper": .helper,
                                            "control": .control]
        guard parts.count == 2, let role = roles[parts[0]],
              let call = Syscalls.all.first(where: { "\($0.name)" == parts[1] }) else {
            throw .badValue(what: "AXVM_SANDBOX_PROBE", value: text, reason: "expected ROLE:SYSCALL (ROLE main, vcpu, fault, device or helper; a system call the sandbox names)")
        }
        return (role, call.number)
    }

    /// The SIGSYS handler, with every name `Syscalls` knows (static strings, kept for good).
    private static func installReporter() {
        let all = Syscalls.all
        // Sound: both buffers live as long as the process (the handler may run at any time).
        let names = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: all.count)
        let numbers = UnsafeMutablePointer<Int32>.allocate(capacity: all.count)
        for (i, c) in all.enumerated() {
            names[i] = UnsafeRawPointer(c.name.utf8Start).assumingMemoryBound(to: CChar.self)
            numbers[i] = c.number
        }
        ckvm_sandbox_report_violations(names, numbers, Int32(all.count))
    }
}
