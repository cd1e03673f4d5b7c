// x86 only: the Linux/x86 boot and its PC devices.
#if arch(x86_64)
/// PCI configuration mechanism #1 with nothing behind it: the 32-bit address register at
/// 0xCF8 holds what was written (what Linux's `pci_check_type1` reads back), and the data
/// port 0xCFC–0xCFF reads all ones, "no device", at every address.
///
/// With `pci=conf1,noearly` on the command line (type 1, no sanity scan, no early scans)
/// Linux finds a configuration space, scans bus 0 (two exits per slot) and finds it empty;
/// without any configuration space it prints "PCI: Fatal: No config space access function
/// found", which `pci=off` does not silence.
struct EmptyPCIBus {
    static let addressPort: UInt16 = 0xcf8
    static let dataPorts: ClosedRange<UInt16> = 0xcfc...0xcff
    /// Bit 31 (enable) and the bus/device/function/register bits; bits 30–24 and 1–0 read 0.
    var address: UInt32 = 0

    static func claims(_ port: UInt16) -> Bool { port == addressPort || dataPorts.contains(port) }

    /// An access to a claimed port: `data` is the access's bytes (written or to be filled in).
    mutating func access(port: UInt16, isOut: Bool, data: UnsafeMutableRawBufferPointer) {
        if port == Self.addressPort && data.count == 4 {
            if isOut {
                address = data.loadUnaligned(as: UInt32.self) & 0x80ff_fffc
            } else {
                data.storeBytes(of: address, as: UInt32.self)
            }
            return
        }
        // The data port (and byte accesses to the address port): nothing answers.
        if !isOut { for i in 0..<data.count { data[i] = 0xff } }
    }
}
#endif
