// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM
import Synchronization

/// Re-delivers a level-triggered device interrupt that the guest has not serviced.
///
/// The 8250's interrupt output is a level that stays high until the guest reads IIR; axvm
/// gives it to KVM as an edge (a pulse on KVM_IRQ_LINE: ISA lines are edge-triggered). A real
/// line would still be high; this thread plays that part: when the output has stayed asserted
/// for a whole period without a new edge, it pulses the line again (a pulse the guest did not
/// need costs it one interrupt whose handler finds IIR "no interrupt") and kicks the vCPU, so
/// the run loop can look at where the interrupt stands (`LinuxBootResult.interruptWaits`)
/// and make a vCPU halted with it pending runnable. Through the 8259 PIC in virtual-wire
/// mode (`--no-mp-table`) KVM looks at a PIC interrupt again only when the PIC's output
/// rises, so a pending one can sit; through the IOAPIC this thread stays as the device
/// model's level (docs/linux.md, "Interrupts and stalls").
final class IRQResampler: Sendable {
    /// Written once by init and stop, on the owning thread.
    private nonisolated(unsafe) var thread: PeriodicThread?
    private let asserted = Atomic<Bool>(false)
    /// Counts edges given by the device model, so a period with a fresh edge is skipped.
    private let edges = Atomic<UInt64>(0)
    /// The edge count at the last tick (the ticking thread's alone).
    private let lastEdges = Atomic<UInt64>(.max)
    private let pulsesAdded = Atomic<Int>(0)

    /// Pulses `irq` on `vm` every `periodMillis` while `assert(true)` holds and no `edge()`
    /// came in between.
    /// `kick` is called with each added pulse: it brings the vCPU out of KVM_RUN, so that the
    /// run loop can look at a vCPU halted with the interrupt pending.
    init(vm: VirtualMachine, irq: UInt32, periodMillis: Int32 = 20, kick: @escaping @Sendable () -> Void) throws(VMMError) {
        thread = try PeriodicThread(name: "axvm-resample", periodMillis: periodMillis) { [self] in
            let e = edges.load(ordering: .acquiring)
            if asserted.load(ordering: .acquiring) && e == lastEdges.load(ordering: .relaxed) {
                try? vm.pulseIRQ(irq)
                kick()
                pulsesAdded.add(1, ordering: .relaxed)
            }
            lastEdges.store(e, ordering: .relaxed)
        }
    }

    /// The device's interrupt output now.
    func set(_ level: Bool) { asserted.store(level, ordering: .releasing) }
    /// The device model pulsed the line itself.
    func edge() { edges.add(1, ordering: .releasing) }
    /// Pulses this thread added.
    var resampled: Int { pulsesAdded.load(ordering: .relaxed) }

    func stop() {
        thread?.stop()
        thread = nil
    }
}
#endif
