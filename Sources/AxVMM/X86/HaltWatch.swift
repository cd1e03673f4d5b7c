// x86 only: KVM's in-kernel LAPIC keeps a halted vCPU in the kernel, so userspace must look.
#if arch(x86_64)
import KVM

/// Ends a run whose guest can no longer go on by itself, at once rather than at the timeout:
/// a probe kicks the vCPUs every `periodMillis`, and the run ends (`.deadHalt`, status 4)
/// when every vCPU has been found twice in a row unable to go on by itself — halted with
/// interrupts off and no NMI pending, or an application processor never started — and at
/// least one halted: only another CPU could wake one, and none runs (Linux's `halt`, a
/// kernel's `cli; hlt`). Used by the x86 loaders (`LinuxLoader`, `MultibootLoader`).
final class HaltWatch: @unchecked Sendable {  // state behind `lock`
    static let periodMillis: Int32 = 200
    private let lock = Lock()
    private var stuckKicks: [Int]
    private var haltedForGood: [Bool]
    private var probe: PeriodicThread?

    init(vcpus: Int) {
        stuckKicks = Array(repeating: 0, count: max(1, vcpus))
        haltedForGood = Array(repeating: false, count: max(1, vcpus))
    }

    /// Starts the probe (`kick` stops every vCPU to look at it).
    func start(kick: @escaping @Sendable () -> Void) throws(VMMError) {
        let p = try PeriodicThread(name: "axvm-haltprobe", periodMillis: Self.periodMillis, tick: kick)
        lock.withLock { probe = p }
    }

    func stop() { lock.withLock { probe }?.stop() }

    /// A kicked vCPU's state counted: the end of the run if every vCPU is stuck.
    func kicked(_ vcpu: VCPU) -> ExitReason? {
        let state = (try? vcpu.haltState()) ?? .live
        let i = Int(vcpu.id)
        let allStuck = lock.withLock { () -> Bool in
            guard i < stuckKicks.count else { return false }
            stuckKicks[i] = state == .live ? 0 : stuckKicks[i] + 1
            haltedForGood[i] = state == .haltedForGood
            return stuckKicks.allSatisfy { $0 >= 2 } && haltedForGood.contains(true)
        }
        return allStuck ? .deadHalt(rip: (try? vcpu.registers().rip) ?? 0) : nil
    }
}
#endif
