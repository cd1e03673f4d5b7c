import CKVM
#if canImport(Glibc)
import Glibc
#endif


/// `/dev/kvm`: the system file descriptor (rust-vmm's `Kvm`).
public final class KVMSystem: @unchecked Sendable {  // immutable after init
    public let fd: OwnedFD
    public let path: String

    /// Opens the device and checks the API version (12).
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let raw = ckvm_open(path, O_RDWR | O_CLOEXEC)
        guard raw >= 0 else { throw .open(path: path, Errno.current) }
        fd = OwnedFD(raw)
        self.path = path
        let v: Int32
        do { v = try ioctl(raw, CKVM_KVM_GET_API_VERSION, "KVM_GET_API_VERSION", value: 0) } catch {
            if case let .ioctl(_, e) = error { throw .notKVM(path: path, e) }
            throw error
        }
        guard v == KVM_API_VERSION else { throw .apiVersion(v) }
    }

    /// KVM_CHECK_EXTENSION: 0 when absent, else a capability-specific value.
    public func checkExtension(_ cap: Int32) -> Int32 {
        (try? ioctl(fd.raw, CKVM_KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", value: UInt(cap))) ?? 0
    }

    /// Size of the shared `kvm_run` area of each vCPU.
    public func vcpuMmapSize() throws(KVMError) -> Int {
        Int(try ioctl(fd.raw, CKVM_KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", value: 0))
    }

    /// Capabilities worth reporting, by name.
    public static let interestingCapabilities: [(String, Int32)] = [
        ("KVM_CAP_USER_MEMORY", KVM_CAP_USER_MEMORY),
        ("KVM_CAP_READONLY_MEM", KVM_CAP_READONLY_MEM),
        ("KVM_CAP_NR_MEMSLOTS", KVM_CAP_NR_MEMSLOTS),
        ("KVM_CAP_NR_VCPUS", KVM_CAP_NR_VCPUS),
        ("KVM_CAP_IMMEDIATE_EXIT", KVM_CAP_IMMEDIATE_EXIT),
        ("KVM_CAP_SET_TSS_ADDR", KVM_CAP_SET_TSS_ADDR),
        ("KVM_CAP_IRQCHIP", KVM_CAP_IRQCHIP),
        ("KVM_CAP_EXT_CPUID", KVM_CAP_EXT_CPUID),
        ("KVM_CAP_ARM_VM_IPA_SIZE", KVM_CAP_ARM_VM_IPA_SIZE),
        ("KVM_CAP_ARM_NISV_TO_USER", KVM_CAP_ARM_NISV_TO_USER),
    ]

    /// KVM_CREATE_VM. `type`: 0, or on arm64 the IPA size in bits (KVM_VM_TYPE_ARM_IPA_SIZE).
    public func createVM(type: UInt = 0) throws(KVMError) -> VirtualMachine {
        let raw = try ioctl(fd.raw, CKVM_KVM_CREATE_VM, "KVM_CREATE_VM(type \(type))", value: type)
        return VirtualMachine(fd: OwnedFD(raw), system: self)
    }
}
