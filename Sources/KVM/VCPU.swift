import CKVM
#if canImport(Glibc)
import Glibc
#endif


/// Why `KVM_RUN` returned (rust-vmm's `VcpuExit`). Data pointers are valid until the next run.
public enum VCPUExit {
    /// Port I/O: `data` holds `size * count` bytes (written by OUT; to fill for IN).
    case io(port: UInt16, isOut: Bool, size: Int, data: UnsafeMutableRawBufferPointer)
    /// An access to a guest-physical address without a writable memory slot.
    case mmio(gpa: UInt64, isWrite: Bool, data: UnsafeMutableRawBufferPointer)
    case hlt
    /// Triple fault or other shutdown of the guest.
    case shutdown
    case failEntry(hardwareReason: UInt64)
    /// KVM could not handle something itself (emulation failure, …).
    case internalError(suberror: UInt32, data: [UInt64])
    case systemEvent(type: UInt32)
    /// arm64: a data abort outside the memslots that KVM cannot emulate (no instruction
    /// syndrome, e.g. a load pair), with ESR_EL2's ISS bits and the IPA (KVM_EXIT_ARM_NISV;
    /// needs KVM_CAP_ARM_NISV_TO_USER).
    case armNISV(esrISS: UInt64, ipa: UInt64)
    /// riscv64: an SBI call KVM does not serve itself (KVM_EXIT_RISCV_SBI: the legacy
    /// console, the debug console, vendor extensions); answer with `setSBIReturn` before
    /// the next run.
    case riscvSBI(SBICall)
    /// KVM_RUN returned EINTR (a signal or `immediate_exit`): timeout, Ctrl-C, shutdown.
    case interrupted
    /// Any other exit reason (KVM_EXIT_*).
    case unsupported(reason: UInt32)
}

/// An SBI call (RISC-V Supervisor Binary Interface): extension id (a7), function id (a6),
/// arguments a0-a5.
public struct SBICall: Sendable, Equatable {
    public var extensionID: UInt64
    public var functionID: UInt64
    public var args: [UInt64]
    public init(extensionID: UInt64, functionID: UInt64, args: [UInt64]) {
        self.extensionID = extensionID
        self.functionID = functionID
        self.args = args
    }
}

/// A vCPU file descriptor and its mmap'd `kvm_run` (rust-vmm's `VcpuFd`).
///
/// Runs on one thread; another thread may only call `requestImmediateExit()`.
public final class VCPU: @unchecked Sendable {  // run area: one runner, immediate_exit is atomic
    public let fd: OwnedFD
    public let id: UInt
    private let runArea: UnsafeMutableRawPointer
    private let runSize: Int

    init(fd: OwnedFD, run: UnsafeMutableRawPointer, runSize: Int, id: UInt) {
        self.fd = fd
        self.runArea = run
        self.runSize = runSize
        self.id = id
    }
    deinit { munmap(runArea, runSize) }

    private var kvmRun: UnsafeMutablePointer<kvm_run> { runArea.assumingMemoryBound(to: kvm_run.self) }

    /// Enters the guest until the next exit. EINTR is `.interrupted`, never retried here.
    /// EAGAIN is entered again: x86 KVM returns it once when an application processor
    /// waiting for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED) has been started (x86.c,
    /// kvm_arch_vcpu_ioctl_run).
    public func run() throws(KVMError) -> VCPUExit {
        while true {
            do {
                _ = try check("KVM_RUN", retryOnInterrupt: false) { ckvm_ioctl_int(fd.raw, CKVM_KVM_RUN, 0) }
                break
            } catch {
                if case let .ioctl(_, e) = error, e == .resourceTemporarilyUnavailable { continue }
                if case let .ioctl(_, e) = error, e == .interrupted {
                    ckvm_run_set_immediate_exit(kvmRun, 0)
                    return .interrupted
                }
                throw error
            }
        }
        let reason = ckvm_run_exit_reason(kvmRun)
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let io = ckvm_run_io(kvmRun)
            // Sound: KVM puts the data inside the kvm_run mapping at data_offset.
            let data = UnsafeMutableRawBufferPointer(start: runArea + Int(io.data_offset), count: Int(io.size) * Int(io.count))
            return .io(port: io.port, isOut: io.direction == KVM_EXIT_IO_OUT, size: Int(io.size), data: data)
        case KVM_EXIT_MMIO:
            let m = ckvm_run_mmio(kvmRun)
            // Sound: the 8 data bytes live inside the kvm_run mapping.
            let data = UnsafeMutableRawBufferPointer(start: m.data, count: Int(min(m.len, 8)))
            return .mmio(gpa: m.phys_addr, isWrite: m.is_write != 0, data: data)
        case KVM_EXIT_HLT: return .hlt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_FAIL_ENTRY: return .failEntry(hardwareReason: ckvm_run_fail_entry_reason(kvmRun))
        case KVM_EXIT_INTERNAL_ERROR:
            let n = min(ckvm_run_internal_ndata(kvmRun), 16)
            return .internalError(suberror: ckvm_run_internal_suberror(kvmRun),
                                  data: (0..<n).map { ckvm_run_internal_data(kvmRun, $0) })
        case KVM_EXIT_SYSTEM_EVENT: return .systemEvent(type: ckvm_run_system_event_type(kvmRun))
        case KVM_EXIT_ARM_NISV:
            return .armNISV(esrISS: ckvm_run_arm_nisv_esr_iss(kvmRun), ipa: ckvm_run_arm_nisv_fault_ipa(kvmRun))
        case KVM_EXIT_RISCV_SBI:
            let c = ckvm_run_riscv_sbi(kvmRun)
            return .riscvSBI(SBICall(extensionID: c.extension_id, functionID: c.function_id,
                                     args: [c.args.0, c.args.1, c.args.2, c.args.3, c.args.4, c.args.5]))
        case KVM_EXIT_INTR: return .interrupted
        default: return .unsupported(reason: reason)
        }
    }

    /// riscv64: raises or lowers the hart's supervisor external interrupt line (what a
    /// platform interrupt controller in the VMM drives). Any thread may call it.
    public func setExternalInterrupt(_ high: Bool) throws(KVMError) {
        _ = try check("KVM_INTERRUPT(\(high ? "set" : "unset"))") { ckvm_riscv_external_interrupt(fd.raw, high ? 1 : 0) }
    }

    /// The answer to the `.riscvSBI` exit just taken: SBI error (0 success, -2 not
    /// supported, …) and value, which the guest finds in a0 and a1.
    public func setSBIReturn(error: Int64, value: UInt64) {
        ckvm_run_riscv_sbi_return(kvmRun, UInt64(bitPattern: error), value)
    }

    /// Makes the current or next KVM_RUN return `.interrupted` (pair with a signal to the
    /// vCPU thread to interrupt a running guest).
    public func requestImmediateExit() { ckvm_run_set_immediate_exit(kvmRun, 1) }

    // --- arm64 --------------------------------------------------------------------------

    /// KVM_ARM_VCPU_INIT: resets the vCPU to `target` (from
    /// `VirtualMachine.preferredTarget()`) with the feature bits set in `features[0]`.
    public func armInit(target: UInt32, features: UInt32) throws(KVMError) {
        var initArgs = ckvm_arm_vcpu_init()
        initArgs.target = target
        initArgs.features.0 = features
        _ = try ioctl(fd.raw, CKVM_KVM_ARM_VCPU_INIT, "KVM_ARM_VCPU_INIT(target \(target))", &initArgs)
    }

    /// KVM_SET_DEVICE_ATTR on the vCPU (arm64: its PMU's interrupt and initialization):
    /// `value` passed by address as a 32-bit integer, or no value (nil).
    public func setAttribute(group: UInt32, attribute: UInt64, value: Int32?, what: String) throws(KVMError) {
        var v = value ?? 0
        _ = try withUnsafeMutablePointer(to: &v) { (p) throws(KVMError) in
            try check("KVM_SET_DEVICE_ATTR(vCPU \(id): \(what))") {
                ckvm_device_attr(fd.raw, 1, group, attribute, value == nil ? 0 : UInt64(UInt(bitPattern: p)))
            }
        }
    }

    /// KVM_HAS_DEVICE_ATTR on the vCPU: whether it has the attribute (arm64: a PMU when
    /// KVM_ARM_VCPU_INIT enabled one).
    public func hasAttribute(group: UInt32, attribute: UInt64) -> Bool {
        ckvm_device_attr(fd.raw, 0, group, attribute, 0) == 0
    }

    /// KVM_SET_MP_STATE (0 runnable; riscv64 also 5 stopped).
    public func setMultiprocessingState(_ state: UInt32) throws(KVMError) {
        _ = try check("KVM_SET_MP_STATE(\(state))") { ckvm_set_mp_state(fd.raw, state) }
    }

    /// KVM_SET_ONE_REG: a 64-bit register by id (arm64 core and system registers).
    public func setRegister(_ id: UInt64, _ value: UInt64) throws(KVMError) {
        var v = value
        try withUnsafeMutablePointer(to: &v) { (p) throws(KVMError) in
            var reg = kvm_one_reg(id: id, addr: UInt64(UInt(bitPattern: p)))
            _ = try ioctl(fd.raw, CKVM_KVM_SET_ONE_REG, "KVM_SET_ONE_REG(0x\(String(id, radix: 16)))", &reg)
        }
    }

    /// KVM_GET_ONE_REG: a 64-bit register by id.
    public func register(_ id: UInt64) throws(KVMError) -> UInt64 {
        var v: UInt64 = 0
        try withUnsafeMutablePointer(to: &v) { (p) throws(KVMError) in
            var reg = kvm_one_reg(id: id, addr: UInt64(UInt(bitPattern: p)))
            _ = try ioctl(fd.raw, CKVM_KVM_GET_ONE_REG, "KVM_GET_ONE_REG(0x\(String(id, radix: 16)))", &reg)
        }
        return v
    }

    // --- the ONE_REG interface (arm64, riscv64): what a snapshot saves -------------------

    /// KVM_GET_REG_LIST: the id of every register KVM_GET_ONE_REG and KVM_SET_ONE_REG know
    /// for this vCPU, in KVM's order.
    public func registerList() throws(KVMError) -> [UInt64] {
        var capacity = 256
        while true {
            var ids = [UInt64](repeating: 0, count: capacity)
            let n = ids.withUnsafeMutableBufferPointer { ckvm_get_reg_list(fd.raw, $0.baseAddress, UInt64($0.count)) }
            guard n >= 0 else { throw .ioctl("KVM_GET_REG_LIST", .current) }
            if n <= Int64(capacity) { return Array(ids.prefix(Int(n))) }
            capacity = Int(n)  // too small: KVM said how many
        }
    }

    /// The bytes of a register of any size (the id's size field, KVM_REG_SIZE_*: 1 to 256).
    public static func registerSize(_ id: UInt64) -> Int { 1 << Int((id >> 52) & 0xf) }

    /// KVM_GET_ONE_REG of a register of any size, as its bytes.
    public func registerBytes(_ id: UInt64) throws(KVMError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.registerSize(id))
        let r = bytes.withUnsafeMutableBytes { ckvm_one_reg(fd.raw, 0, id, $0.baseAddress) }
        guard r == 0 else { throw .ioctl("KVM_GET_ONE_REG(0x\(String(id, radix: 16)))", .current) }
        return bytes
    }

    /// KVM_SET_ONE_REG of a register of any size; `bytes` must be its size.
    public func setRegisterBytes(_ id: UInt64, _ bytes: [UInt8]) throws(KVMError) {
        guard bytes.count == Self.registerSize(id) else { throw .ioctl("KVM_SET_ONE_REG(0x\(String(id, radix: 16)))", .invalidArgument) }
        var copy = bytes
        let r = copy.withUnsafeMutableBytes { ckvm_one_reg(fd.raw, 1, id, $0.baseAddress) }
        guard r == 0 else { throw .ioctl("KVM_SET_ONE_REG(0x\(String(id, radix: 16)))", .current) }
    }

    /// KVM_GET_MP_STATE: 0 runnable, 3 halted, 5 stopped (a PSCI CPU off, a hart before SBI
    /// HSM starts it), 8 suspended, … (include/uapi/linux/kvm.h).
    public func multiprocessingState() throws(KVMError) -> UInt32 {
        UInt32(try check("KVM_GET_MP_STATE") { ckvm_get_mp_state(fd.raw) })
    }

    #if arch(x86_64)
    // --- x86 (struct kvm_regs and kvm_sregs are x86's here) ----------------------------

    /// Gives the vCPU the CPUID that `system` supports (KVM_GET_SUPPORTED_CPUID →
    /// KVM_SET_CPUID2), as Firecracker and crosvm do before the first run.
    public func setSupportedCPUID(from system: KVMSystem) throws(KVMError) {
        _ = try check("KVM_SET_CPUID2", retryOnInterrupt: true) { ckvm_set_supported_cpuid(system.fd.raw, fd.raw) }
    }

    public func registers() throws(KVMError) -> kvm_regs {
        try get(CKVM_KVM_GET_REGS, "KVM_GET_REGS", kvm_regs())
    }
    public func setRegisters(_ regs: kvm_regs) throws(KVMError) {
        try set(regs, CKVM_KVM_SET_REGS, "KVM_SET_REGS")
    }
    public func specialRegisters() throws(KVMError) -> kvm_sregs {
        try get(CKVM_KVM_GET_SREGS, "KVM_GET_SREGS", kvm_sregs())
    }
    public func setSpecialRegisters(_ sregs: kvm_sregs) throws(KVMError) {
        try set(sregs, CKVM_KVM_SET_SREGS, "KVM_SET_SREGS")
    }

    #endif

    /// An ioctl that fills a register struct (plain bytes: the kernel writes them).
    private func get<T: BitwiseCopyable>(_ request: UInt, _ name: String, _ empty: T) throws(KVMError) -> T {
        var value = empty
        _ = try withUnsafeMutableBytes(of: &value) { b throws(KVMError) in try ioctl(fd.raw, request, name, b.baseAddress) }
        return value
    }
    /// An ioctl that reads a register struct (plain bytes: the kernel reads them).
    private func set<T: BitwiseCopyable>(_ value: T, _ request: UInt, _ name: String) throws(KVMError) {
        var v = value
        _ = try withUnsafeMutableBytes(of: &v) { b throws(KVMError) in try ioctl(fd.raw, request, name, b.baseAddress) }
    }
}
