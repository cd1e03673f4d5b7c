// libFuzzer target: the snapshot decoder and everything a restore does before its VM exists
// (`Snapshots.inspect`: Sources/AxVMM/Snapshot/ — the state file read header first and
// decoded, its values checked against the machine, the memory file opened and its size
// checked, the guest's loader made from the snapshot and checked against it, held pages read
// and checked against their checksums). Built against the AxVMM module by scripts/fuzz.sh.
//
// Input: u32 state length S, u64 memory file length M, then S bytes of the state file, then
// the memory file's first bytes (the rest of M is a hole). Written to a directory of this
// process's under /dev/shm as `state` and `memory`.
//
// Oracle: every accepted snapshot describes a machine a restore can build — a known guest
// kind on this architecture; a memory size from 4 MiB to 64 GiB in 4 KiB steps; its RAM
// areas exactly the architecture's layout for that size and the loader's; memtest's ROM and
// nothing else read-only; areas in order and apart; 1 to 64 vCPUs, at least one of them
// running; no more pages checked than held, no more held than the areas have; a damaged page
// named with the memory file. Every refusal is a `VMMError.snapshot` naming a file of the
// snapshot (or, for a diff, the parent it names) and a field.

import AxAddrSpace
import AxVMM
import Glibc

let directory = "/dev/shm/axvm-fuzz-snapshot-\(getpid())"

func write(_ path: String, _ bytes: ArraySlice<UInt8>, length: Int? = nil) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    invariant(fd >= 0, "cannot create \(path): errno \(errno)")
    defer { close(fd) }
    var done = 0
    bytes.withUnsafeBytes { b in
        while done < b.count {
            let n = Glibc.write(fd, b.baseAddress! + done, b.count - done)
            invariant(n > 0, "write \(path): errno \(errno)")
            done += n
        }
    }
    if let length { invariant(ftruncate(fd, off_t(length)) == 0, "ftruncate \(path) to \(length): errno \(errno)") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let header = input.u64()
    let stateLength = Int(header & 0xffff_ffff)
    // The memory file's length: the next u64, bounded to what a snapshot may describe (sparse).
    var m = FuzzInput(data, size)
    m.offset = 4
    let memoryLength = Int(m.u64() % ((64 << 30) + (1 << 20)))
    let bytes = input.array
    let body = bytes.count > 12 ? bytes[12...] : []
    let state = body.prefix(stateLength)
    let memory = body.dropFirst(state.count)
    mkdir(directory, 0o755)
    write(directory + "/state", state)
    write(directory + "/memory", memory, length: max(memoryLength, memory.count))
    let record = "state of \(state.count) bytes, memory file of \(max(memoryLength, memory.count))"
    do {
        let s = try Snapshots.inspect(directory: directory, pageLimit: 64)
        invariant(["memtest", "linux"].contains(s.kind), "\(record): kind \(s.kind)")
        invariant(s.arch == GuestArch.host, "\(record): arch \(s.arch)")
        invariant(s.memorySize >= 4 << 20 && s.memorySize <= 64 << 30 && s.memorySize % 4096 == 0, "\(record): memory size \(s.memorySize)")
        let ram = s.areas.filter { !$0.readOnly }.map(\.range)
        invariant(ram == s.arch.ramRanges(size: s.memorySize), "\(record): RAM \(ram) for \(s.memorySize) bytes")
        invariant(ram == s.loaderRAM, "\(record): RAM \(ram), the loader's \(s.loaderRAM)")
        let rom = s.areas.filter(\.readOnly).map(\.range)
        if s.kind == "memtest" {
            invariant(rom == [GuestPhysRange(start: GuestPhysAddr(s.arch.romBase), size: 0x1_0000)].compactMap { $0 }, "\(record): ROM \(rom)")
        } else {
            invariant(rom.isEmpty, "\(record): a Linux snapshot with read-only areas \(rom)")
        }
        for (a, b) in zip(s.areas, s.areas.dropFirst()) { invariant(a.range.end <= b.range.start, "\(record): areas \(a.range), \(b.range)") }
        invariant(s.vcpus >= 1 && s.vcpus <= 64 && s.running >= 1 && s.running <= s.vcpus, "\(record): vCPUs \(s.running) of \(s.vcpus)")
        let pages = s.areas.reduce(0) { $0 + Int($1.range.size / 4096) }
        invariant(s.pagesChecked <= min(64, s.pagesHeld) && s.pagesHeld <= pages, "\(record): pages \(s.pagesChecked), \(s.pagesHeld), \(pages)")
        if let d = s.damagedPage { invariant(d.contains(directory + "/memory") && d.contains("page 0x"), "\(record): damaged page \(d)") }
    } catch {
        guard case let .snapshot(path, field, reason) = error else {
            invariant(false, "\(record): refused with \(error), not a snapshot error")
            return 0
        }
        invariant(!field.isEmpty && !reason.isEmpty, "\(record): refusal without a field or reason: \(error)")
        // The snapshot's own files, or the parent a diff names (which must then be refused for what it is).
        invariant(path.hasPrefix(directory) || path.hasSuffix("/state") || path.hasSuffix("/memory") || field == "parent",
                  "\(record): refusal names \(path): \(error)")
    }
    return 0
}
