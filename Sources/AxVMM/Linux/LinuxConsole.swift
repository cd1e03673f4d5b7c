/// A Linux guest's console, whichever UART carries it: each byte goes to the terminal
/// (unless quiet) and the report, and is watched for the init marker, whose time and the
/// guest RAM populated then are the boot's result. Not locked: the loader calls it under
/// its device lock.
final class LinuxConsole {
    private let serial: Serial
    private var marker: MarkerMatcher
    private let t0: UInt64
    /// Guest RAM populated now (set by the loader once memory exists).
    var populated: @Sendable () -> UInt64 = { 0 }
    /// Seconds from `t0` to the marker's first appearance, and RAM populated then.
    private(set) var initMarkerSeconds: Double?
    private(set) var populatedAtMarker: UInt64?

    init(config: LinuxBootConfig, t0: UInt64) {
        serial = Serial(toStdout: config.serialToStdout)
        marker = MarkerMatcher(config.initMarker)
        self.t0 = t0
    }

    func out(_ byte: UInt8) {
        serial.out(byte)
        if initMarkerSeconds == nil && marker.feed(byte) {
            initMarkerSeconds = Double(nowNanos() - t0) / 1e9
            populatedAtMarker = populated()
        }
    }

    var text: String { serial.text }

    /// The marker's time and RAM into `result`.
    func fill(_ result: inout LinuxBootResult) {
        result.initMarkerSeconds = initMarkerSeconds
        result.populatedAtMarker = populatedAtMarker
    }
}
