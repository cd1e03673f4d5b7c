#if arch(x86_64)
import AxAddrSpace
import CKVM
#if canImport(Glibc)
import Glibc
#endif
import KVM

/// An x86_64 host: AMD (nested page tables, #NPF) or Intel (EPT, EPT violations).
struct X86Platform<Format: NestedPagingFormat>: Platform {
    enum Vendor: Sendable { case amd, intel }
    let format: Format
    let vendor: Vendor
    var arch: GuestArch { .x86_64 }

    func createVM(system: KVMSystem, vcpus count: Int, ramEnd: GuestPhysAddr, interrupts: InterruptModel) throws(VMMError) -> (VirtualMachine, [VCPU]) {
        do {
            let vm = try system.createVM()
            try vm.setTSSAddress(X86Layout.tss)
            if case .inKernel = interrupts {
                // PIC, IOAPIC and LAPIC in the kernel, the PIT too; the identity-map page
                // below the TSS (real-mode paging for vCPUs started in real mode).
                try vm.setIdentityMapAddress(X86Layout.tss - 0x1000)
                try vm.createIRQChip()
                try vm.createPIT2()
            }
            var vcpus: [VCPU] = []
            for i in 0..<count {
                let v = try vm.createVCPU(id: UInt(i))
                if case .inKernel = interrupts {
                    try v.setSupportedCPUIDWithHypervisorBit(from: system)
                    try v.setLocalInterruptsForVirtualWire()
                } else {
                    try v.setSupportedCPUID(from: system)
                }
                vcpus.append(v)
            }
            return (vm, vcpus)
        } catch {
            throw .kvm(error)
        }
    }

    func nestedFault(gpa: GuestPhysAddr, write: Bool) -> NestedPageFault {
        vendor == .amd ? X86Faults.npf(gpa: gpa, write: write) : X86Faults.eptViolation(gpa: gpa, write: write)
    }

    func programCounter(_ vcpu: VCPU) -> UInt64 { (try? vcpu.registers().rip) ?? 0 }

    /// RFLAGS.IF (bit 9) clear: no interrupt can end this halt.
    func halted(_ vcpu: VCPU) -> VCPUOutcome {
        let r = try? vcpu.registers()
        if let r, r.rflags & (1 << 9) == 0 { return .deadHalt(rip: r.rip) }
        return .halted(rip: r?.rip ?? 0)
    }

    func shutdownRegisters(_ vcpu: VCPU) -> ShutdownRegisters? {
        guard let r = try? vcpu.registers(), let s = try? vcpu.specialRegisters() else { return nil }
        // kvm_amd resets the vCPU on a shutdown intercept before exiting to us, so the
        // registers read back are the reset state (rip 0xfff0, CR0 = ET only): the last
        // state is lost there, and the report says so rather than show it.
        if r.rip == 0xfff0 && s.cr0 & 1 == 0 { return nil }
        return ShutdownRegisters(rip: r.rip, rsp: r.rsp, cr0: s.cr0, cr3: s.cr3)
    }

    func unemulatedAbort(esrISS: UInt64, ipa: UInt64, pc: UInt64) -> ExitReason {
        .unsupportedExit(reason: UInt32(KVM_EXIT_ARM_NISV), rip: pc)  // arm64 only
    }

    func describeHost(system: KVMSystem?) -> [String] {
        ["KVM flavour: \(KVMFlavour.detect())",
         vendor == .amd ? "host CPU: AMD (nested faults decoded as #NPF)" : "host CPU: Intel (nested faults decoded as EPT violations)"]
    }

    func ramRanges(size: UInt64) -> [GuestPhysRange] { X86Layout.ramRanges(size: size) }
    var romBase: GuestPhysAddr { GuestPhysAddr(X86Layout.romBase) }
    var paramsAddress: GuestPhysAddr { GuestPhysAddr(X86Layout.params) }
    func vcpuSlot(_ i: Int) -> GuestPhysAddr { GuestPhysAddr(X86Layout.vcpuSlot(i)) }

    func bootMemtest<F>(memory: GuestMemory<F>, params: GuestParams, image: GuestImage, vcpus: [VCPU]) throws(VMMError) {
        try X86Boot.writeBootData(memory, params: params)
        for (i, v) in vcpus.enumerated() {
            do { try X86Boot.setupVCPU(v, image: image, index: i) } catch { throw .kvm(error) }
        }
    }

    func attachMemtestDevices(_ buses: inout DeviceBuses, serial: Serial,
                              reclaim: @escaping @Sendable () throws(VMMError) -> Void) throws(VMMError) {
        try X86Devices.attachMemtest(&buses, serial: serial, reclaim: reclaim)
    }

    func snapshotRefusal(interrupts: InterruptModel) -> String? { nil }

    func withRestoredLinux<B: RestoredLoaderBody>(_ source: RestoreSource, config: LinuxBootConfig, t0: UInt64, _ body: B) throws(VMMError) -> B.R {
        try source.runLinux(LinuxLoader.restoring(platform: self, bytes: source.state.loader, path: source.statePath,
                                                  ram: source.savedRAM, base: config, t0: t0), body)
    }
    var fixedStateSizes: (vcpu: Int, vm: Int)? { (MemoryLayout<ckvm_x86_vcpu_state>.size, MemoryLayout<ckvm_x86_vm_state>.size) }

    func saveVCPU(_ vcpu: VCPU, system: KVMSystem) throws(VMMError) -> [UInt8] {
        try Self.withState(ckvm_x86_vcpu_state.self, from: nil) { p, step in ckvm_x86_save_vcpu(system.fd.raw, vcpu.fd.raw, p, step) }
    }
    func restoreVCPU(_ vcpu: VCPU, _ state: [UInt8], path: String) throws(VMMError) {
        var skipped: UInt32 = 0
        _ = try Self.withState(ckvm_x86_vcpu_state.self, from: state) { p, step in ckvm_x86_restore_vcpu(vcpu.fd.raw, p, &skipped, step) }
    }
    func saveVM(_ vm: VirtualMachine) throws(VMMError) -> [UInt8] {
        try Self.withState(ckvm_x86_vm_state.self, from: nil) { p, step in ckvm_x86_save_vm(vm.fd.raw, p, step) }
    }
    func restoreVM(_ vm: VirtualMachine, _ state: [UInt8]) throws(VMMError) {
        _ = try Self.withState(ckvm_x86_vm_state.self, from: state) { p, step in ckvm_x86_restore_vm(vm.fd.raw, p, step) }
    }

    /// Runs one of CKVM's state calls on a `T` filled from `bytes` (or zeroed), and returns
    /// the `T`'s bytes afterwards; a failure names the ioctl.
    private static func withState<T>(_: T.Type, from bytes: [UInt8]?,
                                      _ call: (UnsafeMutablePointer<T>, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Int32) throws(VMMError) -> [UInt8] {
        // Sound: T is a plain C struct of integers; the buffer is exactly one T, aligned for it.
        let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
        defer { p.deallocate() }
        let raw = UnsafeMutableRawBufferPointer(start: p, count: MemoryLayout<T>.size)
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        if let bytes { raw.copyBytes(from: bytes.prefix(raw.count)) }
        var step: UnsafePointer<CChar>?
        if call(p, &step) != 0 {
            let e = Errno(rawValue: errno)
            throw .kvm(.ioctl(step.map { String(cString: $0) } ?? "KVM state", e))
        }
        return Array(UnsafeRawBufferPointer(raw))
    }
}
#endif
