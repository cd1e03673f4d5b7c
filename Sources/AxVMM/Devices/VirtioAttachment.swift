#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// A virtio-mmio transport attached to a VM (`VirtioMMIO`): on the MMIO bus at its slot, its
/// queue notifications arriving through ioeventfds (one per queue on QueueNotify, matched by
/// the queue's index: the vCPU never exits to userspace for them) and its interrupt going
/// out through an edge-triggered irqfd, one edge per interrupt the transport raises (as the
/// firmware tables say: ACPI `Edge`, device tree `IRQ_TYPE_EDGE_RISING`). Linux's virtio_mmio
/// acknowledges InterruptStatus before it reads the rings, so an edge sent while it handles
/// one is never lost; and no resample has to wake this thread at every end of interrupt.
/// One thread of its own serves it: a notification makes it process that queue; a device
/// with a `tickMillis` gets its `tick` that often.
final class VirtioAttachment<D: VirtioDevice>: BusDevice, @unchecked Sendable {  // fds immutable; `thread` set by start/stop on the run's thread
    let slot: VirtioSlot
    let transport: VirtioMMIO<D>
    private let vm: VirtualMachine
    private let irq: EventFD
    private let stopEvent: EventFD
    private let notifies: [EventFD]
    private var thread: OSThread?

    init(_ device: D, slot: VirtioSlot, memory: DeviceMemory, vm: VirtualMachine) throws(VMMError) {
        self.slot = slot
        self.vm = vm
        let irq = try EventFD()
        self.irq = irq
        stopEvent = try EventFD()
        var notifies: [EventFD] = []
        for _ in device.queueMaxSizes { notifies.append(try EventFD()) }
        self.notifies = notifies
        // Each interrupt is a write to the irqfd: an edge on the GSI.
        transport = VirtioMMIO(device: device, memory: memory, interrupt: InterruptLine(trigger: { irq.signal() }))
        do {
            try vm.assignIRQFD(irq.fd, gsi: slot.gsi)
            for (q, e) in notifies.enumerated() {
                try vm.assignIOEventFD(e.fd, address: slot.base + VirtioMMIORegister.queueNotify, length: 4, dataMatch: UInt64(q))
            }
        } catch {
            detach()
            throw .kvm(error)
        }
    }

    /// Undoes the KVM side (best effort: what was not assigned is refused, and ignored).
    private func detach() {
        for (q, e) in notifies.enumerated() {
            try? vm.deassignIOEventFD(e.fd, address: slot.base + VirtioMMIORegister.queueNotify, length: 4, dataMatch: UInt64(q))
        }
        try? vm.deassignIRQFD(irq.fd, gsi: slot.gsi)
    }

    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        transport.read(offset: offset, data: data)
        return .handled
    }

    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        transport.write(offset: offset, data: data)
        return .handled
    }

    /// Starts the device thread.
    func start() throws(VMMError) {
        let fds = [stopEvent.fd] + notifies.map { $0.fd }
        let transport = self.transport
        let period = UInt64(max(0, transport.withDevice { $0.tickMillis })) * 1_000_000
        thread = try OSThread(.device, name: "axvm-virtio") {
            var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            var nextTick = nowNanos() &+ period
            while true {
                var wait: Int32 = -1
                if period > 0 {
                    let now = nowNanos()
                    if now >= nextTick {
                        transport.tick()
                        nextTick = now &+ period
                    }
                    wait = Int32((nextTick &- now) / 1_000_000 + 1)
                }
                let r = poll(&polls, nfds_t(polls.count), wait)
                if r < 0 { if errno == EINTR { continue }; return }
                if polls[0].revents != 0 { return }
                for q in 1..<polls.count where polls[q].revents != 0 {
                    drainEventFD(fds[q])
                    transport.notify(queue: UInt32(q - 1))
                }
            }
        }
    }

    /// Sends an edge if the interrupt status has a bit set (a restored transport: the edge the
    /// snapshot caught may be gone with the interrupt controller's state).
    func resendPendingInterrupt() {
        if transport.interruptPending { irq.signal() }
    }

    /// `start`, its error as a value (for a list of devices of several types).
    func startReportingError() -> VMMError? {
        do { try start() } catch { return error }
        return nil
    }

    /// Stops the device thread and detaches from KVM.
    func stop() {
        stopEvent.signal()
        thread?.join()
        thread = nil
        detach()
    }
}

/// Reads an eventfd's count (resetting it).
private func drainEventFD(_ fd: Int32) {
    var count: UInt64 = 0
    _ = read(fd, &count, 8)
}
