import CKVM

/// A device made in the kernel by KVM_CREATE_DEVICE (arm64's vGIC), configured through its
/// attributes (Documentation/virt/kvm/devices/).
public final class KVMDevice: @unchecked Sendable {  // immutable after init
    public let fd: OwnedFD
    public let name: String

    init(fd: OwnedFD, name: String) {
        self.fd = fd
        self.name = name
    }

    /// KVM_SET_DEVICE_ATTR with a value of `T`'s width (a vGIC's addresses and system
    /// registers 64-bit, its counts and MMIO registers 32-bit).
    public func set<T: FixedWidthInteger>(group: UInt32, attribute: UInt64, _ value: T, what: String) throws(KVMError) {
        var v = value
        try withUnsafeMutablePointer(to: &v) { (p) throws(KVMError) in
            try access(1, "KVM_SET_DEVICE_ATTR", group: group, attribute: attribute, address: UInt64(UInt(bitPattern: p)), what: what)
        }
    }

    /// KVM_GET_DEVICE_ATTR of a value of `T`'s width.
    public func get<T: FixedWidthInteger>(_: T.Type, group: UInt32, attribute: UInt64, what: String) throws(KVMError) -> T {
        var v: T = 0
        try withUnsafeMutablePointer(to: &v) { (p) throws(KVMError) in
            try access(2, "KVM_GET_DEVICE_ATTR", group: group, attribute: attribute, address: UInt64(UInt(bitPattern: p)), what: what)
        }
        return v
    }

    /// KVM_SET_DEVICE_ATTR without a value (commands such as the vGIC's CTRL_INIT).
    public func command(group: UInt32, attribute: UInt64, what: String) throws(KVMError) {
        try access(1, "KVM_SET_DEVICE_ATTR", group: group, attribute: attribute, address: 0, what: what)
    }

    /// KVM_HAS_DEVICE_ATTR: whether the device knows the attribute.
    public func has(group: UInt32, attribute: UInt64) -> Bool {
        ckvm_device_attr(fd.raw, 0, group, attribute, 0) == 0
    }

    private func access(_ op: Int32, _ request: String, group: UInt32, attribute: UInt64, address: UInt64, what: String) throws(KVMError) {
        _ = try check("\(request)(\(name): \(what))") { ckvm_device_attr(fd.raw, op, group, attribute, address) }
    }
}

extension VirtualMachine {
    /// KVM_CREATE_DEVICE of `type` (enum kvm_device_type), named `name` in errors.
    public func createDevice(type: UInt32, name: String) throws(KVMError) -> KVMDevice {
        let raw = try check("KVM_CREATE_DEVICE(\(name))") { ckvm_create_device(fd.raw, type) }
        return KVMDevice(fd: OwnedFD(raw), name: name)
    }

    /// KVM_IRQ_LINE: drives interrupt `irq` high or low (x86: a GSI, and an ISA device's edge
    /// is a high then a low, `pulseIRQ`; arm64: `ArmIRQ` encodes the line).
    public func setIRQLine(_ irq: UInt32, high: Bool) throws(KVMError) {
        _ = try check("KVM_IRQ_LINE(0x\(String(irq, radix: 16)), \(high ? 1 : 0))") { ckvm_irq_line(fd.raw, irq, high ? 1 : 0) }
    }
}
