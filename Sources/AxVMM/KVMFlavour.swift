#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// Which KVM implementation serves /dev/kvm, from the loaded modules in /sys/module, and
/// how it translates guest memory: hardware nested paging (AMD NPT, Intel EPT) or shadow
/// paging (kvm_pvm, or kvm_amd/kvm_intel with nested paging off).
public struct KVMFlavour: Sendable, Equatable, CustomStringConvertible {
    public enum Module: String, Sendable { case kvmAMD = "kvm_amd", kvmIntel = "kvm_intel", kvmPVM = "kvm_pvm", unknown }
    public var module: Module
    /// `npt` (kvm_amd) or `ept` (kvm_intel) parameter is Y; always false for kvm_pvm.
    public var nestedPaging: Bool

    /// This host's, read once: what a run asks after its set-up, when the sandbox no longer
    /// lets it look in /sys (`Sandbox.confineMain` reads it first).
    public static let current = detect()

    public static func detect(sysModule: String = "/sys/module") -> KVMFlavour {
        func exists(_ p: String) -> Bool { access(p, F_OK) == 0 }
        func flag(_ p: String) -> Bool {
            guard let f = fopen(p, "r") else { return false }
            defer { fclose(f) }
            let c = fgetc(f)
            return c == Int32(UInt8(ascii: "Y")) || c == Int32(UInt8(ascii: "1"))
        }
        if exists(sysModule + "/kvm_amd") {
            return KVMFlavour(module: .kvmAMD, nestedPaging: flag(sysModule + "/kvm_amd/parameters/npt"))
        }
        if exists(sysModule + "/kvm_intel") {
            return KVMFlavour(module: .kvmIntel, nestedPaging: flag(sysModule + "/kvm_intel/parameters/ept"))
        }
        if exists(sysModule + "/kvm_pvm") { return KVMFlavour(module: .kvmPVM, nestedPaging: false) }
        return KVMFlavour(module: .unknown, nestedPaging: false)
    }

    public var description: String {
        switch module {
        case .kvmAMD: "kvm_amd (AMD SVM), nested paging (NPT) \(nestedPaging ? "enabled" : "disabled: shadow paging")"
        case .kvmIntel: "kvm_intel (Intel VMX), nested paging (EPT) \(nestedPaging ? "enabled" : "disabled: shadow paging")"
        case .kvmPVM: "kvm_pvm (PVM: software virtualization, shadow paging, no SVM/VMX)"
        case .unknown: "unknown (no kvm_amd, kvm_intel or kvm_pvm module in /sys/module)"
        }
    }
}
