#if canImport(Glibc)
import Glibc
#endif
import KVM

/// A vCPU's whole state as KVM's ONE_REG interface names it (arm64 and riscv64, whose KVM has
/// no fixed register structures): every register `KVM_GET_REG_LIST` lists, by id with its
/// value, in KVM's order, and the vCPU's MP state (a CPU that PSCI turned off, or a hart SBI
/// HSM has not started, stays so). What the host's KVM lists decides the size, so a
/// snapshot's vCPU blocks have the size of the first one saved (`Platform.fixedStateSizes`
/// nil).
///
/// Bytes, little-endian: "ONER", version 1, MP state, count (u32 each), then per register its
/// id (u64) and its value, as many bytes as the id's size field says.
struct OneRegState: Equatable {
    static let magic: UInt32 = 0x5245_4e4f  // "ONER"
    static let version: UInt32 = 1
    /// The largest register KVM has (KVM_REG_SIZE_U2048: an SVE vector).
    static let maxRegisterBytes = 256

    var mpState: UInt32
    var registers: [(id: UInt64, value: [UInt8])]

    init(mpState: UInt32, registers: [(id: UInt64, value: [UInt8])]) {
        self.mpState = mpState
        self.registers = registers
    }

    static func == (a: OneRegState, b: OneRegState) -> Bool {
        a.mpState == b.mpState && a.registers.elementsEqual(b.registers) { $0.id == $1.id && $0.value == $1.value }
    }

    /// Reads every register of `vcpu` (on its own thread, outside KVM_RUN).
    static func save(_ vcpu: VCPU) throws(KVMError) -> OneRegState {
        var registers: [(id: UInt64, value: [UInt8])] = []
        for id in try vcpu.registerList() {
            registers.append((id, try vcpu.registerBytes(id)))
        }
        return OneRegState(mpState: try vcpu.multiprocessingState(), registers: registers)
    }

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.u32(Self.magic)
        w.u32(Self.version)
        w.u32(mpState)
        w.u32(UInt32(registers.count))
        for r in registers {
            w.u64(r.id)
            w.raw(r.value)
        }
        return w.bytes
    }

    /// The state `bytes` hold, every field checked; an error names the field and the value
    /// (`path`: what to call the bytes in it).
    init(decoding bytes: [UInt8], path: String) throws(VMMError) {
        var r = ByteReader(bytes, path: path)
        try r.header("register state", magic: Self.magic, tag: "ONER", version: Self.version)
        mpState = try r.u32("MP state")
        let count = try r.u32("register count")
        // Each register takes at least 9 bytes: a count beyond that is damage, not a list.
        guard Int(count) <= r.remaining / 9 else { throw r.error("register count", "\(count) registers cannot fit in the \(r.remaining) bytes left") }
        registers = []
        registers.reserveCapacity(Int(count))
        for i in 0..<Int(count) {
            let id = try r.u64("register \(i) id")
            let size = VCPU.registerSize(id)
            guard size <= Self.maxRegisterBytes else {
                throw r.error("register \(i) id", "0x\(String(id, radix: 16)) says \(size) bytes; KVM's registers have at most \(Self.maxRegisterBytes)")
            }
            registers.append((id, try r.raw(size, "register 0x\(String(id, radix: 16)) value")))
        }
        guard r.remaining == 0 else { throw r.error("register state", "\(r.remaining) bytes after the last register") }
    }

    /// Writes the state into `vcpu` (a fresh vCPU made as the saved one was, before it
    /// runs): each register must be one this vCPU has; one KVM refuses to set is accepted
    /// only if it already holds the saved value (an identification or read-only register).
    /// Then the MP state.
    func restore(_ vcpu: VCPU, path: String) throws(VMMError) {
        let known: Set<UInt64>
        do { known = Set(try vcpu.registerList()) } catch { throw .kvm(error) }
        for r in registers {
            let name = "register 0x\(String(r.id, radix: 16))"
            guard known.contains(r.id) else {
                throw .snapshot(path: path, field: name, reason: "this vCPU has no such register (a snapshot of another KVM or CPU model)")
            }
            do throws(KVMError) {
                try vcpu.setRegisterBytes(r.id, r.value)
            } catch {
                if (try? vcpu.registerBytes(r.id)) == r.value { continue }
                throw .snapshot(path: path, field: name, reason: "KVM refused the saved value: \(error)")
            }
        }
        do { try vcpu.setMultiprocessingState(mpState) } catch {
            throw .snapshot(path: path, field: "MP state", reason: "\(mpState): \(error)")
        }
    }
}

/// A platform whose vCPU state is KVM's ONE_REG registers (arm64, riscv64): snapshots save
/// `OneRegState`s, and no in-kernel device (the guests it snapshots have none: its
/// `snapshotRefusal` turns the others away).
protocol OneRegSnapshots: Platform {}

extension OneRegSnapshots {
    var fixedStateSizes: (vcpu: Int, vm: Int)? { nil }

    func saveVCPU(_ vcpu: VCPU, system: KVMSystem) throws(VMMError) -> [UInt8] {
        do { return try OneRegState.save(vcpu).encoded() } catch { throw .kvm(error) }
    }

    func restoreVCPU(_ vcpu: VCPU, _ state: [UInt8], path: String) throws(VMMError) {
        try OneRegState(decoding: state, path: path).restore(vcpu, path: path)
    }

    func saveVM(_ vm: VirtualMachine) throws(VMMError) -> [UInt8] { [] }

    func restoreVM(_ vm: VirtualMachine, _ state: [UInt8]) throws(VMMError) {
        guard state.isEmpty else {
            throw .badValue(what: "saved VM state", value: "\(state.count) bytes", reason: "\(arch) snapshots hold no in-kernel device state")
        }
    }
}
