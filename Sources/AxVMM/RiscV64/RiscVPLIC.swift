/// A RISC-V Platform-Level Interrupt Controller (riscv-plic-spec 1.0.0, the register map
/// QEMU's virt and Linux's sifive,plic-1.0.0 driver use), emulated in the VMM: RISC-V KVM
/// has no in-kernel one here. One context per hart, its supervisor external interrupt; the
/// context's output drives the hart's line through `output` (KVM_INTERRUPT).
///
///     0x000000 + 4·s       priority of source s (1...sources; 0 never interrupts)
///     0x001000             pending bits (read-only)
///     0x002000 + 0x80·c    enable bits of context c
///     0x200000 + 0x1000·c  threshold of context c; +4 claim (read) / complete (write)
///
/// Sources are level-triggered: a line held high is pending again after its completion.
/// Guest writes are taken as the hardware takes them: priorities and thresholds keep their
/// low 3 bits, enables only the sources there are, a complete of a source not claimed by
/// that context is ignored; nothing a guest writes can fail.
final class RiscVPLIC: BusDevice, @unchecked Sendable {  // state behind `lock`
    static let size: UInt64 = 0x400_0000
    static let priorityBits: UInt32 = 7
    let sources: Int
    let contexts: Int
    private let lock = Lock()
    private var priority: [UInt32]
    private var level: UInt64 = 0      // line levels, bit s
    private var pending: UInt64 = 0    // bit s
    private var inService: UInt64 = 0  // claimed, not yet completed
    private var enable: [UInt64]
    private var threshold: [UInt32]
    private var outputLevel: [Bool]
    private let output: @Sendable (_ context: Int, _ high: Bool) -> Void

    /// `sources` at most 63 (bits of one word); `output(c, high)` is called, under the
    /// PLIC's lock, whenever context c's interrupt output changes.
    init(sources: Int, contexts: Int, output: @escaping @Sendable (_ context: Int, _ high: Bool) -> Void) {
        self.sources = min(max(sources, 1), 63)
        self.contexts = max(contexts, 1)
        priority = [UInt32](repeating: 0, count: self.sources + 1)
        enable = [UInt64](repeating: 0, count: self.contexts)
        threshold = [UInt32](repeating: 0, count: self.contexts)
        outputLevel = [Bool](repeating: false, count: self.contexts)
        self.output = output
    }

    private var validSources: UInt64 { ((1 << UInt64(sources + 1)) - 1) & ~1 }

    /// A device's interrupt line (source 1...sources) goes high or low.
    func setLevel(source: Int, high: Bool) {
        guard source >= 1 && source <= sources else { return }
        lock.withLock {
            let bit: UInt64 = 1 << UInt64(source)
            if high { level |= bit; if inService & bit == 0 { pending |= bit } } else { level &= ~bit; pending &= ~bit }
            update()
        }
    }

    /// The pending, enabled source of the highest priority above the context's threshold
    /// (the lowest id among equals), or 0.
    private func best(_ c: Int) -> Int {
        var id = 0, top: UInt32 = 0
        let candidates = pending & enable[c] & ~inService
        guard candidates != 0 else { return 0 }
        for s in 1...sources where candidates >> UInt64(s) & 1 == 1 && priority[s] > threshold[c] && priority[s] > top {
            id = s
            top = priority[s]
        }
        return id
    }

    private func update() {
        for c in 0..<contexts {
            let high = best(c) != 0
            if high != outputLevel[c] {
                outputLevel[c] = high
                output(c, high)
            }
        }
    }

    func read(at offset: UInt64, into data: UnsafeMutableRawBufferPointer, vcpu: Int) -> BusEffect {
        let value: UInt32 = lock.withLock { read32(offset & ~3) }
        for i in 0..<data.count { data[i] = i < 4 ? UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) : 0 }
        return .handled
    }

    func write(at offset: UInt64, from data: UnsafeRawBufferPointer, vcpu: Int) -> BusEffect {
        var value: UInt32 = 0
        for i in 0..<min(data.count, 4) { value |= UInt32(data[i]) << (8 * UInt32(i)) }
        lock.withLock { write32(offset & ~3, value) }
        return .handled
    }

    private func read32(_ o: UInt64) -> UInt32 {
        switch o {
        case 0..<0x1000:
            let s = Int(o / 4)
            return s >= 1 && s <= sources ? priority[s] : 0
        case 0x1000..<0x1080:
            return word(pending, o - 0x1000)
        case 0x2000..<0x20_0000:
            let c = Int((o - 0x2000) / 0x80)
            return c < contexts && (o - 0x2000) % 0x80 < 8 ? word(enable[c], (o - 0x2000) % 0x80) : 0
        case 0x20_0000..<Self.size:
            let c = Int((o - 0x20_0000) / 0x1000), r = (o - 0x20_0000) % 0x1000
            guard c < contexts else { return 0 }
            if r == 0 { return threshold[c] }
            if r == 4 { return claim(c) }
            return 0
        default:
            return 0
        }
    }

    private func write32(_ o: UInt64, _ v: UInt32) {
        switch o {
        case 0..<0x1000:
            let s = Int(o / 4)
            if s >= 1 && s <= sources { priority[s] = v & Self.priorityBits }
        case 0x2000..<0x20_0000:
            let c = Int((o - 0x2000) / 0x80), r = (o - 0x2000) % 0x80
            guard c < contexts, r < 8 else { return }
            let shift = r == 0 ? 0 : 32 as UInt64
            enable[c] = (enable[c] & ~(0xffff_ffff << shift) | UInt64(v) << shift) & validSources
        case 0x20_0000..<Self.size:
            let c = Int((o - 0x20_0000) / 0x1000), r = (o - 0x20_0000) % 0x1000
            guard c < contexts else { return }
            if r == 0 { threshold[c] = v & Self.priorityBits }
            if r == 4 { complete(c, Int(v)) }
        default:
            return
        }
        update()
    }

    /// Claim: the best source for the context, now in service and no longer pending.
    private func claim(_ c: Int) -> UInt32 {
        let s = best(c)
        if s != 0 {
            pending &= ~(1 << UInt64(s))
            inService |= 1 << UInt64(s)
            update()
        }
        return UInt32(s)
    }

    /// Complete: the source may interrupt again; still high, it is pending at once.
    private func complete(_ c: Int, _ s: Int) {
        guard s >= 1 && s <= sources, enable[c] >> UInt64(s) & 1 == 1 else { return }
        let bit: UInt64 = 1 << UInt64(s)
        inService &= ~bit
        if level & bit != 0 { pending |= bit }
    }

    private func word(_ bits: UInt64, _ byteOffset: UInt64) -> UInt32 {
        byteOffset == 0 ? UInt32(truncatingIfNeeded: bits) : byteOffset == 4 ? UInt32(truncatingIfNeeded: bits >> 32) : 0
    }

    /// Where the controller stands, for a timeout report.
    var state: String {
        lock.withLock {
            "PLIC pending \(hex(pending)) in service \(hex(inService)) outputs \(outputLevel.map { $0 ? "1" : "0" }.joined())"
        }
    }
}
