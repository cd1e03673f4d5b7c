/// An 8250/16450 UART, enough for Linux's 8250 driver and console=ttyS0: at COM1 on x86
/// (ports 0x3f8–0x3ff, IRQ 4), an ns16550a on MMIO on arm64 (register i at port base + i
/// here, level-triggered SPI): transmit, the transmitter-empty interrupt, the divisor latch,
/// scratch register and loopback (the driver's probe checks both). No receive path, no FIFO.
/// Register map: National Semiconductor PC16550D data sheet, table II.
final class UART8250 {
    static let base: UInt16 = 0x3f8
    static let ports: ClosedRange<UInt16> = 0x3f8...0x3ff

    /// IER bit 1: interrupt when the transmit holding register is empty.
    private static let ierTHRI: UInt8 = 0x02
    private static let lcrDLAB: UInt8 = 0x80
    private static let mcrLoop: UInt8 = 0x10

    private var ier: UInt8 = 0
    private var lcr: UInt8 = 0x03       // 8N1
    private var mcr: UInt8 = 0x08       // OUT2
    private var scratch: UInt8 = 0
    private var divisor: UInt16 = 12    // 9600 baud
    /// A transmitter-empty interrupt is pending (cleared by reading IIR or by writing THR).
    private var thrEmptyPending = false
    /// Bytes the guest sent (the console).
    let sink: (UInt8) -> Void
    /// Raises the UART's interrupt (an edge on IRQ 4).
    let interrupt: () -> Void
    /// Told after every register access whether the interrupt output is asserted (a THR-empty
    /// interrupt pending and enabled), for `IRQResampler`.
    let level: (Bool) -> Void

    init(sink: @escaping (UInt8) -> Void, interrupt: @escaping () -> Void, level: @escaping (Bool) -> Void = { _ in }) {
        self.sink = sink
        self.interrupt = interrupt
        self.level = level
    }

    /// The interrupt output: on a real 8250 a level that stays high until IIR is read.
    var asserted: Bool { thrEmptyPending && ier & Self.ierTHRI != 0 }

    func write(port: UInt16, _ value: UInt8) {
        defer { level(asserted) }
        let dlab = lcr & Self.lcrDLAB != 0
        switch port - Self.base {
        case 0 where dlab: divisor = divisor & 0xff00 | UInt16(value)
        case 0:
            // In loopback the byte goes back to the receiver (which we do not model), not out.
            if mcr & Self.mcrLoop == 0 { sink(value) }
            // Transmission is instantaneous: the holding register is empty again at once.
            thrEmptyPending = false
            raiseTHREmpty()
        case 1 where dlab: divisor = divisor & 0x00ff | UInt16(value) << 8
        case 1:
            let was = ier
            ier = value & 0x0f
            // Enabling THRI with the register empty interrupts at once (as on the chip).
            if ier & Self.ierTHRI != 0 && was & Self.ierTHRI == 0 { raiseTHREmpty() }
            if ier & Self.ierTHRI == 0 { thrEmptyPending = false }
        case 2: break                        // FCR: no FIFO
        case 3: lcr = value
        case 4: mcr = value & 0x1f
        case 7: scratch = value
        default: break                       // LSR, MSR: read-only
        }
    }

    func read(port: UInt16) -> UInt8 {
        defer { level(asserted) }
        let dlab = lcr & Self.lcrDLAB != 0
        switch port - Self.base {
        case 0 where dlab: return UInt8(divisor & 0xff)
        case 0: return 0                     // RBR: nothing received
        case 1 where dlab: return UInt8(divisor >> 8)
        case 1: return ier
        case 2:
            // IIR: 0x02 = THR empty, 0x01 = none pending; reading it clears THR empty.
            if thrEmptyPending && ier & Self.ierTHRI != 0 {
                thrEmptyPending = false
                return 0x02
            }
            return 0x01
        case 3: return lcr
        case 4: return mcr
        case 5: return 0x60                  // LSR: THR empty, transmitter empty, no data
        case 6:
            // MSR: in loopback the modem inputs follow MCR (CTS←RTS, DSR←DTR, RI←OUT1,
            // DCD←OUT2); otherwise carrier, data set ready and clear to send.
            if mcr & Self.mcrLoop != 0 {
                return (mcr & 0x02) << 3 | (mcr & 0x01) << 5 | (mcr & 0x04) << 4 | (mcr & 0x08) << 4
            }
            return 0xb0
        case 7: return scratch
        default: return 0xff
        }
    }

    /// The registers, for a snapshot: IER, LCR, MCR, scratch, divisor (2 bytes), THR-empty pending.
    var registers: [UInt8] {
        [ier, lcr, mcr, scratch, UInt8(divisor & 0xff), UInt8(divisor >> 8), thrEmptyPending ? 1 : 0]
    }
    /// The saved registers from a snapshot's loader bytes: 7 (`registers`), or none (a
    /// snapshot taken before the UART was made).
    static func readRegisters(_ r: inout ByteReader) throws(VMMError) -> [UInt8] {
        let b = try r.blob("uart registers", limit: 64)
        guard b.isEmpty || b.count == 7 else { throw r.error("uart registers", "\(b.count) bytes; the 8250 saves 7") }
        return b
    }

    /// Sets the registers a snapshot saved (7 bytes, as `registers` gives them) and tells
    /// `level` the interrupt output that follows.
    func restore(_ r: [UInt8]) {
        guard r.count == 7 else { return }
        ier = r[0] & 0x0f
        lcr = r[1]
        mcr = r[2] & 0x1f
        scratch = r[3]
        divisor = UInt16(r[4]) | UInt16(r[5]) << 8
        thrEmptyPending = r[6] != 0
        level(asserted)
    }

    /// For a report on a stuck guest: the interrupt enables and whether an interrupt waits.
    var state: String {
        "IER 0x\(String(ier, radix: 16)), THR-empty interrupt \(thrEmptyPending ? "pending" : "not pending")"
    }

    private func raiseTHREmpty() {
        guard ier & Self.ierTHRI != 0 else { return }
        thrEmptyPending = true
        interrupt()
    }
}

extension UART8250 {
    /// The UART as an MMIO device (an ns16550a: registers 0-7, one byte apart; the rest of
    /// its range reads 0), serving whichever UART `current` gives under `lock` (nil before
    /// the run starts and after it stops: reads 0, writes dropped).
    static func mmioDevice(lock: Lock, _ current: @escaping @Sendable () -> UART8250?) -> ClosureDevice {
        ClosureDevice(read: { offset, data in
            lock.withLock {
                guard offset < 8, let uart = current() else { return data.fill(0) }
                let port = UART8250.base + UInt16(offset)
                for i in 0..<data.count { data[i] = i == 0 ? uart.read(port: port) : 0 }
            }
            return .handled
        }, write: { offset, data in
            lock.withLock {
                guard offset < 8, let uart = current(), let b = data.first else { return }
                uart.write(port: UART8250.base + UInt16(offset), b)
            }
            return .handled
        })
    }
}
