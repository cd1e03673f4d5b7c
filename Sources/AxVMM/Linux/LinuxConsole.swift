/// A Linux guest's console, whichever UART carries it, and the boot's result: each byte goes
/// to the terminal (unless quiet) and the report, and is watched for the init marker, whose
/// time and the guest RAM populated then go into `result`. Not locked: the loader calls it
/// under its device lock.
final class LinuxConsole {
    private let serial: Serial
    private var marker: MarkerMatcher
    private let t0: UInt64
    /// Guest RAM populated now (set by the loader once memory exists).
    var populated: @Sendable () -> UInt64 = { 0 }
    /// What the report says of the boot (the loader adds its devices' counters).
    var result: LinuxBootResult

    init(config: LinuxBootConfig, placements: [BootPlacement], initrdAddress: UInt64, initrdSize: UInt64, t0: UInt64) {
        serial = Serial(toStdout: config.serialToStdout)
        marker = MarkerMatcher(config.initMarker)
        result = LinuxBootResult(config: config, placements: placements, initrdAddress: initrdAddress, initrdSize: initrdSize)
        self.t0 = t0
    }

    func out(_ byte: UInt8) {
        serial.out(byte)
        if result.initMarkerSeconds == nil && marker.feed(byte) {
            result.initMarkerSeconds = Double(nowNanos() - t0) / 1e9
            result.populatedAtMarker = populated()
        }
    }

    var text: String { serial.text }
    func watch(_ text: String, _ action: @escaping @Sendable () -> Void) { serial.watch(text, action) }
}
