import CKVM

/// Interrupts and notifications that bypass the VMM's vCPU threads: an eventfd the kernel
/// reads to raise a guest interrupt (KVM_IRQFD), and one it writes when the guest writes a
/// device register (KVM_IOEVENTFD), so a device served on its own thread costs no exit to
/// userspace per notification.
extension VirtualMachine {
    /// KVM_IRQFD: a write to `eventFD` raises interrupt `gsi` (x86: an IOAPIC pin; arm64: an
    /// SPI as its INTID minus 32). With `resampleFD`, the line is level-triggered: it stays
    /// asserted until the guest acknowledges it, then KVM lowers it and signals `resampleFD`
    /// (KVM_IRQFD_FLAG_RESAMPLE, for a device whose interrupt status may still be set).
    /// Needs an in-kernel interrupt controller.
    public func assignIRQFD(_ eventFD: Int32, gsi: UInt32, resampleFD: Int32? = nil) throws(KVMError) {
        var r = kvm_irqfd()
        r.fd = UInt32(bitPattern: eventFD)
        r.gsi = gsi
        if let resampleFD {
            r.flags = UInt32(KVM_IRQFD_FLAG_RESAMPLE)
            r.resamplefd = UInt32(bitPattern: resampleFD)
        }
        _ = try ioctl(fd.raw, CKVM_KVM_IRQFD, "KVM_IRQFD(gsi \(gsi))", &r)
    }

    /// Undoes `assignIRQFD`.
    public func deassignIRQFD(_ eventFD: Int32, gsi: UInt32) throws(KVMError) {
        var r = kvm_irqfd()
        r.fd = UInt32(bitPattern: eventFD)
        r.gsi = gsi
        r.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        _ = try ioctl(fd.raw, CKVM_KVM_IRQFD, "KVM_IRQFD(deassign gsi \(gsi))", &r)
    }

    /// KVM_IOEVENTFD: a guest write of `length` bytes (1, 2, 4 or 8) at `address` — MMIO, or
    /// an I/O port with `pio` — signals `eventFD` and returns to the guest at once instead of
    /// exiting; with `dataMatch`, only writes of that value do (a virtio queue's index).
    public func assignIOEventFD(_ eventFD: Int32, address: UInt64, length: UInt32, pio: Bool = false,
                                dataMatch: UInt64? = nil) throws(KVMError) {
        var r = ioeventfd(eventFD, address: address, length: length, pio: pio, dataMatch: dataMatch)
        _ = try ioctl(fd.raw, CKVM_KVM_IOEVENTFD, "KVM_IOEVENTFD(0x\(String(address, radix: 16)), \(length) bytes)", &r)
    }

    /// Undoes `assignIOEventFD` (the same arguments).
    public func deassignIOEventFD(_ eventFD: Int32, address: UInt64, length: UInt32, pio: Bool = false,
                                  dataMatch: UInt64? = nil) throws(KVMError) {
        var r = ioeventfd(eventFD, address: address, length: length, pio: pio, dataMatch: dataMatch)
        r.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_deassign)
        _ = try ioctl(fd.raw, CKVM_KVM_IOEVENTFD, "KVM_IOEVENTFD(deassign 0x\(String(address, radix: 16)))", &r)
    }

    private func ioeventfd(_ eventFD: Int32, address: UInt64, length: UInt32, pio: Bool, dataMatch: UInt64?) -> kvm_ioeventfd {
        var r = kvm_ioeventfd()
        r.addr = address
        r.len = length
        r.fd = eventFD
        if pio { r.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_pio) }
        if let dataMatch {
            r.flags |= UInt32(1 << kvm_ioeventfd_flag_nr_datamatch)
            r.datamatch = dataMatch
        }
        return r
    }
}
