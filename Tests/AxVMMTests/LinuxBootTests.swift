import AxAddrSpace
import AxVMM
import Glibc
import Testing

// Linux/x86 boot: compiled on x86_64 hosts only, as the code it tests.
#if arch(x86_64)
/// A synthetic bzImage: boot sector + `setupSects` setup sectors with a setup header as
/// boot.rst lays it out, then `kernelBytes` of "protected-mode kernel".
func syntheticBzImage(setupSects: UInt8 = 4, kernelBytes: Int = 64 << 10, version: UInt16 = 0x020f,
                      loadFlags: UInt8 = 0x01, xloadFlags: UInt16 = 0x03, cmdlineSize: UInt32 = 2047,
                      initrdAddrMax: UInt32 = 0x7fff_ffff, initSize: UInt32 = 16 << 20,
                      relocatable: Bool = true, prefAddress: UInt64 = 0x100_0000,
                      magic: String = "HdrS") -> [UInt8] {
    var b = [UInt8](repeating: 0, count: (Int(setupSects) + 1) * 512 + kernelBytes)
    func put<T: FixedWidthInteger>(_ v: T, _ o: Int) {
        withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[o + i] = x } }
    }
    b[0x1f1] = setupSects
    put(UInt32(kernelBytes / 16), 0x1f4)
    put(UInt16(0xaa55), 0x1fe)
    b[0x200] = 0xeb; b[0x201] = 0x6a          // jmp: the header ends at 0x202 + 0x6a = 0x26c
    for (i, c) in magic.utf8.prefix(4).enumerated() { b[0x202 + i] = c }
    put(version, 0x206)
    b[0x211] = loadFlags
    put(initrdAddrMax, 0x22c)
    put(UInt32(0x20_0000), 0x230)             // kernel_alignment
    b[0x234] = relocatable ? 1 : 0
    b[0x235] = 21
    put(xloadFlags, 0x236)
    put(cmdlineSize, 0x238)
    put(prefAddress, 0x258)                   // pref_address: 16 MiB unless told
    put(initSize, 0x260)
    for i in 0..<kernelBytes { b[(Int(setupSects) + 1) * 512 + i] = UInt8(truncatingIfNeeded: i &* 7) }
    return b
}

private func reason(_ bytes: [UInt8]) -> String {
    do {
        _ = try LinuxKernel(path: "k", bytes: bytes)
        return "accepted"
    } catch { return "\(error)" }
}

private func le<T: FixedWidthInteger>(_ p: [UInt8], _ o: Int, _: T.Type) -> T {
    var v = T.zero
    for i in 0..<MemoryLayout<T>.size { v |= T(p[o + i]) << (8 * i) }
    return v
}

/// Writes `bytes` to a file in /tmp named after this process and `name`; returns its path.
func writeTempFile(_ bytes: [UInt8], _ name: String) -> String {
    let path = "/tmp/axvm-boot-test-\(getpid())-\(name)"
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    return path
}

@Suite struct LinuxSetupHeaderTests {
    @Test func parsesAValidHeader() throws {
        let k = try LinuxKernel(path: "k", bytes: syntheticBzImage())
        #expect(k.header.version == 0x020f)
        #expect(k.header.setupBytes == 5 * 512)
        #expect(k.header.kernelBytes == 64 << 10)
        #expect(k.header.cmdlineSize == 2047)
        #expect(k.header.headerEnd == 0x26c)
        #expect(k.loadAddress == 0x10_0000)
        #expect(k.entryPoint == 0x10_0200)
        #expect(k.protectedModeKernel.count == 64 << 10)
        #expect(k.protectedModeKernel.first == 0 && k.protectedModeKernel.dropFirst().first == 7)
        // Runs from pref_address (16 MiB) for init_size.
        #expect(k.footprintEnd == 0x100_0000 + (16 << 20))
    }

    @Test func setupSectsZeroMeansFour() throws {
        var b = syntheticBzImage(setupSects: 4)
        b[0x1f1] = 0
        #expect(try LinuxKernel(path: "k", bytes: b).header.setupBytes == 5 * 512)
    }

    @Test func hostileHeaders() {
        #expect(reason([]) == "kernel k: not a bzImage: 0 bytes, too short for the boot sector and setup header")
        #expect(reason(Array("#!/bin/sh\necho hello\n".utf8)).contains("too short"))
        #expect(reason(syntheticBzImage(magic: "HdrX")) == "kernel k: not a bzImage (nor a multiboot kernel): no \"HdrS\" setup header magic at offset 0x202")
        #expect(reason(Array(syntheticBzImage().prefix(0x210))) == "kernel k: truncated: 528 bytes, shorter than the 0x264-byte setup header")
        #expect(reason(Array(syntheticBzImage().dropLast(1))).hasPrefix("kernel k: truncated: 68095 bytes, but the header promises 2560 bytes of setup and 65536 of kernel"))
        #expect(reason(syntheticBzImage(version: 0x0206)).contains("boot protocol 2.6 is too old: axvm needs 2.12 or later"))
        #expect(reason(syntheticBzImage(loadFlags: 0)).contains("a zImage, not a bzImage"))
        #expect(reason(syntheticBzImage(xloadFlags: 0)).contains("no 64-bit entry point"))
        #expect(reason(syntheticBzImage(initSize: 4096)).contains("init_size 0x1000 is smaller than"))
        var badBoot = syntheticBzImage()
        badBoot[0x1fe] = 0
        #expect(reason(badBoot).contains("boot flag 0xaa00"))
        var longJump = syntheticBzImage()
        longJump[0x201] = 0xff
        #expect(reason(longJump).contains("setup header ends at 0x301"))
        var noKernel = syntheticBzImage()
        noKernel[0x1f4] = 0; noKernel[0x1f5] = 0
        #expect(reason(noKernel).contains("syssize is 0"))
    }

    /// Every prefix of a valid image and every single-byte corruption of its header is
    /// either accepted or refused with a reason: never a crash.
    @Test func truncationsAndCorruptionsNeverCrash() {
        let good = syntheticBzImage(kernelBytes: 4096)
        for n in stride(from: 0, through: good.count, by: 37) { _ = reason(Array(good.prefix(n))) }
        for o in 0x1f1..<0x270 {
            for v: UInt8 in [0, 0xff, 0x80] {
                var b = good
                b[o] = v
                _ = reason(b)
            }
        }
    }

    @Test func missingAndNonRegularFiles() {
        func fileReason(_ path: String) -> String {
            do { _ = try LinuxKernel(path: path); return "accepted" } catch { return "\(error)" }
        }
        #expect(fileReason("/nonexistent/bzImage") == "kernel /nonexistent/bzImage: no such file")
        #expect(fileReason("/tmp") == "kernel /tmp: not a regular file")
        #expect(fileReason("/dev/null") == "kernel /dev/null: not a regular file")
    }
}

@Suite struct LinuxBootPlanTests {
    let kernel = try! LinuxKernel(path: "k", bytes: syntheticBzImage())
    let ram256 = X86Layout.ramRanges(size: 256 << 20)

    @Test func e820TilesTheAreasExactly() {
        for size: UInt64 in [64 << 20, 256 << 20, 3 << 30, 5 << 30] {
            let ram = X86Layout.ramRanges(size: size)
            let map = LinuxBootPlan.e820Map(ram: ram)
            // Entries are ordered, do not overlap, and their union is exactly the areas.
            var covered: [(UInt64, UInt64)] = []
            for e in map {
                if let last = covered.last, last.1 == e.address { covered[covered.count - 1].1 = e.end } else { covered.append((e.address, e.end)) }
            }
            #expect(covered.map { $0.0 } == ram.map { $0.start.raw })
            #expect(covered.map { $0.1 } == ram.map { $0.end.raw })
            for (a, b) in zip(map, map.dropFirst()) { #expect(a.end <= b.address) }
            // RAM adds up to the memory size minus the reserved EBDA..1 MiB hole.
            let ramBytes = map.filter { $0.kind == .ram }.reduce(0) { $0 + $1.size }
            #expect(ramBytes == size - (LinuxLayout.highMemory - LinuxLayout.ebda))
        }
        let map = LinuxBootPlan.e820Map(ram: ram256)
        #expect(map == [E820Entry(address: 0, size: 0x9_fc00, kind: .ram),
                        E820Entry(address: 0x9_fc00, size: 0x6_0400, kind: .reserved),
                        E820Entry(address: 0x10_0000, size: (256 << 20) - 0x10_0000, kind: .ram)])
    }

    @Test func zeroPageFields() throws {
        let plan = try LinuxBootPlan(kernel: kernel, ram: ram256, cmdline: "console=ttyS0", initrdSize: 1 << 20)
        let p = plan.zeroPage()
        #expect(p.count == 4096)
        // The kernel's own header is copied (magic, version), the loader's fields are set.
        #expect(Array(p[0x202..<0x206]) == Array("HdrS".utf8))
        #expect(le(p, 0x206, UInt16.self) == 0x020f)
        #expect(p[0x210] == 0xff)
        #expect(p[0x211] & 0x81 == 0x81)
        #expect(le(p, 0x228, UInt32.self) == UInt32(LinuxLayout.cmdline))
        #expect(le(p, 0x218, UInt32.self) == UInt32(plan.initrdAddress))
        #expect(le(p, 0x21c, UInt32.self) == 1 << 20)
        // The initrd: as high as RAM allows, page aligned, above the kernel's footprint.
        #expect(plan.initrdAddress == (256 << 20) - (1 << 20))
        #expect(plan.initrdAddress >= kernel.footprintEnd)
        #expect(plan.cmdline == Array("console=ttyS0".utf8) + [0])
        // e820 table at 0x2d0, count at 0x1e8.
        #expect(p[0x1e8] == 3)
        for (i, e) in plan.e820.enumerated() {
            let o = 0x2d0 + 20 * i
            #expect(le(p, o, UInt64.self) == e.address)
            #expect(le(p, o + 8, UInt64.self) == e.size)
            #expect(le(p, o + 16, UInt32.self) == e.kind.rawValue)
        }
        // Nothing past the table's three entries.
        #expect(p[(0x2d0 + 60)...].allSatisfy { $0 == 0 })
    }

    @Test func initrdPlacementRespectsInitrdAddrMax() throws {
        let k = try LinuxKernel(path: "k", bytes: syntheticBzImage(initrdAddrMax: 0x07ff_ffff))
        let plan = try LinuxBootPlan(kernel: k, ram: ram256, cmdline: "", initrdSize: 5000)
        #expect(plan.initrdAddress == (0x0800_0000 - 5000) & ~0xfff)
        #expect(plan.initrdAddress + 5000 <= 0x0800_0000)
    }

    @Test func badInputs() {
        func planError(_ cmdline: String = "", initrd: UInt64 = 0, memory: UInt64 = 256 << 20,
                       kernel k: LinuxKernel? = nil) -> String {
            do {
                _ = try LinuxBootPlan(kernel: k ?? kernel, ram: X86Layout.ramRanges(size: memory), cmdline: cmdline,
                                      initrdPath: "initrd.gz", initrdSize: initrd)
                return "accepted"
            } catch { return "\(error)" }
        }
        #expect(planError(String(repeating: "a", count: 2047)) == "accepted")
        #expect(planError(String(repeating: "a", count: 2048))
            == "kernel command line: 2048 bytes, longer than the 2047 bytes this kernel accepts (cmdline_size)")
        let small = try! LinuxKernel(path: "k", bytes: syntheticBzImage(cmdlineSize: 255))
        #expect(planError(String(repeating: "a", count: 256), kernel: small).contains("longer than the 255 bytes"))
        #expect(planError("a\u{0}b") == "kernel command line: contains a NUL byte")
        // 256 MiB of RAM, the kernel's footprint ends at 32 MiB: 224 MiB fit, 224 MiB + 1 do not.
        #expect(planError(initrd: 224 << 20) == "accepted")
        #expect(planError(initrd: (224 << 20) + 1).hasPrefix("initrd initrd.gz: 234881025 bytes do not fit in RAM: 234881024 bytes free"))
        #expect(planError(memory: 16 << 20).hasPrefix("guest memory: RAM below 4 GiB ends at 16 MiB, but this kernel needs RAM up to 0x2000000"))
    }

    @Test func identityMapCoversFourGiB() {
        let t = LinuxBootPlan.pageTables()
        #expect(t.pml4 == [LinuxLayout.pdpt | 3])
        #expect(t.pdpt.count == 4 && t.pdpt[3] == (LinuxLayout.pageDirectories + 0x3000) | 3)
        #expect(t.directories.count == 2048)
        #expect(t.directories[1] == 0x20_0000 | 0x83)
        #expect(t.directories.last == (0xffe0_0000 | 0x83))
        // The tables and the GDT sit in the first page frames below the command line.
        #expect(LinuxLayout.pageDirectories + 4 * 0x1000 <= LinuxLayout.cmdline)
        #expect(LinuxLayout.zeroPage + 0x1000 <= LinuxLayout.stack + 16)
        #expect(LinuxBootPlan.gdt[2] == 0x00af_9b00_0000_ffff && LinuxBootPlan.gdt[3] == 0x00cf_9300_0000_ffff)
    }
}

/// Crafted headers whose numbers made the loader's own arithmetic trap, or that it accepted
/// although they put the kernel over its own boot data (issue 17). Each is refused with a
/// reason that names the bad value; none may crash the process.
@Suite struct HostileKernelHeaderTests {
    func planReason(_ image: [UInt8], memory: UInt64 = 256 << 20, initrd: UInt64 = 0) -> String {
        do {
            let k = try LinuxKernel(path: "k", bytes: image)
            _ = try LinuxBootPlan(kernel: k, ram: X86Layout.ramRanges(size: memory), cmdline: "",
                                  initrdPath: "initrd", initrdSize: initrd)
            return "accepted"
        } catch { return "\(error)" }
    }

    /// A non-relocatable kernel linked at the top of the address space: the load address plus
    /// its size wrapped (trapped in `footprintEnd`).
    @Test func preferredAddressAtTheTopOfTheSpace() {
        let r = planReason(syntheticBzImage(relocatable: false, prefAddress: 0xffff_ffff_ffff_f000))
        #expect(r == "kernel k: pref_address 0xfffffffffffff000 + init_size 0x1000000 is past the end of the 64-bit address space")
    }

    /// A relocatable kernel runs from pref_address for init_size: the sum wrapped as well.
    @Test func relocatableWithPreferredAddressAtTheTop() {
        let r = planReason(syntheticBzImage(relocatable: true, prefAddress: .max))
        #expect(r == "kernel k: pref_address 0xffffffffffffffff + init_size 0x1000000 is past the end of the 64-bit address space")
    }

    /// A footprint that fits in 64 bits but not in RAM: the refusal's own rounding to MiB,
    /// `(footprint + 0xfffff) >> 20`, wrapped.
    @Test func footprintNearTheTopIsRefusedWithoutTrappingInTheMessage() {
        let r = planReason(syntheticBzImage(initSize: 0x00ff_ff00, prefAddress: 0xffff_ffff_ff00_0000))
        #expect(r.hasPrefix("guest memory: RAM below 4 GiB ends at 256 MiB, but this kernel needs RAM up to 0xffffffffffffff00 (17592186044416 MiB"))
    }

    /// A non-relocatable kernel linked at 0 would be loaded over the GDT, the zero page, the
    /// page tables and the command line.
    @Test func nonRelocatableAtZeroOverlapsTheBootData() {
        let r = planReason(syntheticBzImage(relocatable: false, prefAddress: 0))
        #expect(r == "kernel [0x0, 0x1000000) overlaps the GDT [0x500, 0x520)")
        // Linked just above the command line's buffer, it still covers the ACPI tables.
        let high = planReason(syntheticBzImage(initSize: 1 << 20, relocatable: false, prefAddress: 0x9_f000))
        #expect(high == "kernel [0x9f000, 0x19f000) overlaps the ACPI tables [0xe0000, 0xe0232)")
    }

    /// init_size need not be page aligned: the initrd, rounded down to a page, must still
    /// start above the kernel's footprint (it was put 0x800 bytes into it).
    @Test func initrdStaysAboveAnUnalignedFootprint() throws {
        let image = syntheticBzImage(initSize: (16 << 20) + 0x800)
        let footprint: UInt64 = (32 << 20) + 0x800
        // Fits only if the initrd may start inside the footprint's last page.
        let size = (256 << 20) - footprint - 0x100
        #expect(planReason(image, initrd: size).hasPrefix("initrd initrd: \(size) bytes do not fit in RAM"))
        let k = try LinuxKernel(path: "k", bytes: image)
        let plan = try LinuxBootPlan(kernel: k, ram: X86Layout.ramRanges(size: 256 << 20), cmdline: "",
                                     initrdSize: size - 0x1000)
        #expect(plan.initrdAddress >= footprint)
    }
}

/// Every accepted plan puts each range inside RAM and no two on top of each other; the
/// refusals name both ranges.
@Suite struct LinuxBootPlacementTests {
    func assertSound(_ plan: LinuxBootPlan, _ context: String) {
        for p in plan.placements {
            #expect(plan.ram.contains { $0.contains(p.range) }, "\(context): \(p) outside RAM")
            #expect(!p.range.isEmpty, "\(context): \(p) empty")
            for q in plan.placements where q.name != p.name {
                #expect(!p.range.overlaps(q.range), "\(context): \(p) overlaps \(q)")
            }
        }
    }

    @Test func placementsOfADefaultBoot() throws {
        let k = try LinuxKernel(path: "k", bytes: syntheticBzImage())
        let plan = try LinuxBootPlan(kernel: k, ram: X86Layout.ramRanges(size: 256 << 20), cmdline: "console=ttyS0",
                                     initrdSize: 5000)
        #expect(plan.placements.map(\.description) == [
            "kernel [0x100000, 0x2000000)", "initrd [0xfffe000, 0xffff388)", "GDT [0x500, 0x520)",
            "zero page [0x7000, 0x8000)", "stack [0x8000, 0x9000)", "page tables [0x9000, 0xf000)",
            "command line [0x20000, 0x2000e)", "ACPI tables [0xe0000, 0xe0232)",
        ])
        #expect(plan.firmwareTables == ACPITables.build(cpus: 1, at: LinuxLayout.acpiTables))
        #expect(plan.zeroPage()[0x70..<0x78].elementsEqual([0, 0, 0x0e, 0, 0, 0, 0, 0]), "acpi_rsdp_addr")
        let mp = try LinuxBootPlan(kernel: k, ram: X86Layout.ramRanges(size: 256 << 20), cmdline: "", firmware: .mpTable, cpus: 2)
        #expect(mp.firmwareTables == MPTable.build(cpus: 2, at: LinuxLayout.mpTable))
        #expect(mp.placements.last?.description == "MP table [0x9fc00, 0x9fd04)")
        #expect(mp.zeroPage()[0x70..<0x78].allSatisfy { $0 == 0 })
        let none = try LinuxBootPlan(kernel: k, ram: X86Layout.ramRanges(size: 256 << 20), cmdline: "", firmware: .none)
        #expect(none.firmwareTables.isEmpty && !none.placements.contains { ["MP table", "ACPI tables", "initrd"].contains($0.name) })
        assertSound(plan, "default")
    }

    /// Non-relocatable kernels linked anywhere in the first MiBs, with init_sizes of every
    /// alignment, RAM sizes around the footprint and initrds around the room left: each is
    /// planned soundly or refused with a `LinuxBootError`.
    @Test func sweepOfPreferredAddressesAndSizes() throws {
        var accepted = 0, refused = 0
        for relocatable in [false, true] {
            for pref: UInt64 in [0, 0x500, 0x7000, 0x1_0000, 0x9_f000, 0xa_0000, 0x10_0000, 0x40_0000, 0xbfff_f000, 0xffff_ffff_0000_0000] {
                for initSize: UInt32 in [0x1_0000, 0x10_0800, 16 << 20, 0xffff_ffff] {
                    for memory: UInt64 in [4 << 20, 64 << 20, 4 << 30] {
                        for initrd: UInt64 in [0, 1, 40 << 20, 3 << 30] {
                            let image = syntheticBzImage(kernelBytes: 0x1_0000, initSize: initSize, relocatable: relocatable,
                                                         prefAddress: pref)
                            let context = "relocatable \(relocatable) pref \(pref) init_size \(initSize) memory \(memory) initrd \(initrd)"
                            do {
                                let k = try LinuxKernel(path: "k", bytes: image)
                                let plan = try LinuxBootPlan(kernel: k, ram: X86Layout.ramRanges(size: memory), cmdline: "x",
                                                             initrdPath: "i", initrdSize: initrd)
                                assertSound(plan, context)
                                accepted += 1
                            } catch {
                                #expect(!"\(error)".isEmpty)
                                refused += 1
                            }
                        }
                    }
                }
            }
        }
        #expect(accepted > 100 && refused > 100, "\(accepted) accepted, \(refused) refused")
    }

    /// A RAM list that stops short of the command line's buffer: refused, naming the range.
    @Test func rangeOutsideRAMIsRefused() throws {
        let k = try LinuxKernel(path: "k", bytes: syntheticBzImage(kernelBytes: 0x800, initSize: 0x1000, relocatable: false,
                                                                   prefAddress: 0x1_0000))
        let ram = [GuestPhysRange(start: GuestPhysAddr(0), end: GuestPhysAddr(0x1_1000))]
        #expect(throws: LinuxBootError.self) { try LinuxBootPlan(kernel: k, ram: ram, cmdline: "") }
        do {
            _ = try LinuxBootPlan(kernel: k, ram: ram, cmdline: "")
        } catch {
            #expect("\(error)" == "command line [0x20000, 0x20001) is not inside guest RAM ([0x0, 0x11000))")
            guard case let .outsideRAM(p, _) = error else { Issue.record("\(error)"); return }
            #expect(p.name == "command line")
        }
    }

    /// The overlap is a typed error carrying both placements.
    @Test func overlapIsTyped() throws {
        let k = try LinuxKernel(path: "k", bytes: syntheticBzImage(relocatable: false, prefAddress: 0x7800))
        do {
            _ = try LinuxBootPlan(kernel: k, ram: X86Layout.ramRanges(size: 64 << 20), cmdline: "")
            Issue.record("accepted")
        } catch {
            guard case let .overlap(a, b) = error else { Issue.record("\(error)"); return }
            #expect(a.name == "kernel" && b.name == "zero page")
            #expect("\(error)" == "kernel [0x7800, 0x1007800) overlaps the zero page [0x7000, 0x8000)")
        }
    }

    /// A kernel too small to hold the 64-bit entry point at +0x200.
    @Test func kernelWithoutItsEntryPointIsRefused() {
        do {
            _ = try LinuxKernel(path: "k", bytes: syntheticBzImage(kernelBytes: 0x200))
            Issue.record("accepted")
        } catch {
            #expect("\(error)" == "kernel k: syssize 0x20: a 512-byte kernel has no 64-bit entry point at offset 0x200")
        }
    }
}

/// The initrd is copied from its file in chunks, with progress after each.
@Suite struct LinuxInitrdCopyTests {
    func file(_ name: String, _ bytes: [UInt8]) -> String { writeTempFile(bytes, "copy-" + name) }

    @Test func copiesInChunksWithProgress() throws {
        let bytes = (0..<(2 * 4096 + 5)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let path = file("chunks", bytes)
        defer { unlink(path) }
        let initrd = try LinuxInitrd(path: path, limit: 1 << 20) { "\($0) too large" }
        #expect(initrd.size == UInt64(bytes.count))
        var copied: [UInt8] = [], offsets: [UInt64] = [], calls: [UInt64] = []
        try initrd.copy(chunkSize: 4096, to: { chunk, offset in
            offsets.append(offset)
            copied += chunk
        }, progress: { done, total in
            #expect(total == UInt64(bytes.count))
            calls.append(done)
        })
        #expect(copied == bytes)
        #expect(offsets == [0, 4096, 8192])
        #expect(calls == [4096, 8192, 8197])
    }

    /// What progress throws ends the copy at once (the caller's way to stop a long load).
    @Test func progressCanAbort() throws {
        let path = file("abort", [UInt8](repeating: 7, count: 3 * 4096))
        defer { unlink(path) }
        let initrd = try LinuxInitrd(path: path, limit: 1 << 20) { "\($0) too large" }
        var chunks = 0
        #expect(throws: VMMError.self) {
            try initrd.copy(chunkSize: 4096, to: { _, _ in chunks += 1 }, progress: { _, _ throws(VMMError) in
                throw .host("stop")
            })
        }
        #expect(chunks == 1)
    }

    /// A file that shrank after it was measured: a typed error with the path and the offset.
    @Test func shrunkFileIsATypedErrorNamingTheOffset() throws {
        let path = file("shrink", [UInt8](repeating: 1, count: 3 * 4096))
        defer { unlink(path) }
        let initrd = try LinuxInitrd(path: path, limit: 1 << 20) { "\($0) too large" }
        truncate(path, 5000)
        do {
            try initrd.copy(chunkSize: 4096, to: { _, _ in }, progress: { _, _ in })
            Issue.record("copied a file that shrank")
        } catch {
            guard case let .input(p, offset, _) = error else { Issue.record("\(error)"); return }
            #expect(p == path && offset == 5000)
            #expect("\(error)" == "\(path): initrd ended early (it was 12288 bytes when measured: the file shrank) at offset 5000 (0x1388)")
        }
    }

    @Test func emptyAndTooLargeAreRefusedWhenOpened() throws {
        let empty = file("empty", [])
        defer { unlink(empty) }
        #expect(throws: LinuxBootError.self) { try LinuxInitrd(path: empty, limit: 1 << 20) { "\($0)" } }
        let two = file("two", [1, 2])
        defer { unlink(two) }
        do {
            _ = try LinuxInitrd(path: two, limit: 1) { "\($0) bytes, over 1" }
            Issue.record("accepted")
        } catch {
            #expect("\(error)" == "initrd \(two): 2 bytes, over 1")
        }
    }
}

/// `LinuxMachine.boot` end to end with a tiny "kernel" that checks the initrd the loader
/// copied: its entry point reads ramdisk_image and ramdisk_size from the zero page (RSI),
/// compares the initrd's first and last four bytes with "ITRD" and "END!", and resets
/// through the i8042 if both match (else it halts: a timeout). The initrd spans several
/// chunks and is sparse in between; the peak RSS shows it is not read into the heap.
@Suite(.serialized) struct LinuxInitrdLoadTests {
    static let entryCode: [UInt8] = [
        0x8b, 0x86, 0x18, 0x02, 0x00, 0x00,  // mov eax, [rsi+0x218]   ramdisk_image
        0x8b, 0x8e, 0x1c, 0x02, 0x00, 0x00,  // mov ecx, [rsi+0x21c]   ramdisk_size
        0x8b, 0x10,                          // mov edx, [rax]
        0x81, 0xfa, 0x49, 0x54, 0x52, 0x44,  // cmp edx, "ITRD"
        0x75, 0x10,                          // jne halt
        0x8b, 0x54, 0x08, 0xfc,              // mov edx, [rax+rcx-4]
        0x81, 0xfa, 0x45, 0x4e, 0x44, 0x21,  // cmp edx, "END!"
        0x75, 0x04,                          // jne halt
        0xb0, 0xfe,                          // mov al, 0xfe
        0xe6, 0x64,                          // out 0x64, al           i8042: pulse reset
        0xf4,                                // halt: hlt
        0xeb, 0xfd,                          // jmp halt
    ]

    /// The peak RSS is the process's: the boot has a process of its own (an exit test), where
    /// the suites `swift test` runs alongside neither add to it nor reset it.
    @Test(.enabled(if: KVMGate.enabled, "KVM unusable here")) func initrdReachesGuestMemory() async {
        await #expect(processExitsWith: .success) {
            var image = syntheticBzImage(kernelBytes: 0x1000)
            let entry = 5 * 512 + 0x200
            image.replaceSubrange(entry..<(entry + LinuxInitrdLoadTests.entryCode.count), with: LinuxInitrdLoadTests.entryCode)
            let kernel = writeTempFile(image, "load-kernel"), initrd = writeTempFile(Array("ITRD".utf8), "load-initrd")
            defer { unlink(kernel); unlink(initrd) }
            let size = (96 << 20) + 12  // 24 chunks and a bit, not a multiple of a page
            let fd = open(initrd, O_WRONLY)
            _ = pwrite(fd, "END!", 4, off_t(size - 4))  // sparse in between
            close(fd)
            var c = LinuxBootConfig(kernelPath: kernel)
            c.initrdPath = initrd
            c.allowKVMPVM = true
            c.timeout = 20
            c.memorySize = 256 << 20
            let rss0 = InitrdRefusalTests().status("VmRSS")
            InitrdRefusalTests().resetPeak()
            let r = try LinuxMachine.boot(c)
            let grown = InitrdRefusalTests().status("VmHWM") - rss0
            #expect(r.exit == .reset, "\(r.exit)")
            #expect(r.linux?.initrdSize == UInt64(size))
            // The guest RAM the copy populated is the memfd's, not the heap's; no 96 MiB buffer.
            #expect(r.statistics.populatedBytes >= UInt64(size))
            #expect(grown < 64 << 20, "peak RSS grew by \(grown >> 20) MiB")
        }
    }
}

/// `axvm boot`'s checks of the initrd work from its size (fstat), not its bytes. Each test
/// measures its process's peak RSS in a process of its own (an exit test), where nothing
/// else runs.
@Suite(.serialized) struct InitrdRefusalTests {
    /// A field of /proc/self/status in bytes (VmRSS: now; VmHWM: the peak since the last
    /// `resetPeak()`).
    func status(_ field: String) -> Int64 {
        let status = readFile("/proc/self/status") ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
            return (Int64(line.dropFirst(field.count + 1).filter { $0.isNumber }) ?? 0) << 10
        }
        return 0
    }

    /// Resets VmHWM to the current RSS (proc(5), /proc/pid/clear_refs, "5"), so that a buffer
    /// read and freed inside the measured call still shows.
    func resetPeak() {
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        if fd >= 0 { _ = write(fd, "5", 1); close(fd) }
    }

    /// Runs `LinuxMachine.plan` and returns its refusal, the seconds it took and how far the
    /// peak RSS rose above the RSS before it.
    func refusal(_ c: LinuxBootConfig) -> (reason: String, seconds: Double, grown: Int64) {
        resetPeak()
        let rss0 = status("VmRSS"), t0 = monotonicSeconds()
        var reason = "accepted"
        do { _ = try LinuxMachine.plan(c) } catch { reason = "\(error)" }
        return (reason, monotonicSeconds() - t0, status("VmHWM") - rss0)
    }

    /// Plans a boot of `image` in `memory` bytes of RAM with a sparse initrd of `size` bytes
    /// (ftruncate: nothing to read but zeros, and nothing on disk).
    func refusal(_ image: [UInt8], initrd size: Int, memory: UInt64)
        throws -> (initrd: String, reason: String, seconds: Double, grown: Int64) {
        let kernel = writeTempFile(image, "kernel"), initrd = writeTempFile([], "sparse-initrd")
        defer { unlink(kernel); unlink(initrd) }
        try #require(truncate(initrd, off_t(size)) == 0)
        var c = LinuxBootConfig(kernelPath: kernel)
        c.initrdPath = initrd
        c.memorySize = memory
        let (reason, seconds, grown) = refusal(c)
        return (initrd, reason, seconds, grown)
    }

    /// 1 GiB of sparse initrd, 2 GiB of RAM, but the kernel's initrd_addr_max is 256 MiB: it
    /// cannot fit, which the file's size says without reading it (it was read into the heap,
    /// 1 GiB of RSS, before the placement refused it).
    @Test func sparseInitrdPastInitrdAddrMaxIsRefusedWithoutReading() async {
        await #expect(processExitsWith: .success) {
            let r = try InitrdRefusalTests().refusal(syntheticBzImage(initrdAddrMax: 0x0fff_ffff), initrd: 1 << 30, memory: 2 << 30)
            #expect(r.reason.hasPrefix("initrd \(r.initrd): 1073741824 bytes do not fit in RAM"))
            #expect(r.reason.contains("initrd_addr_max 0xfffffff"))
            #expect(r.seconds < 2, "refused after \(r.seconds) s")
            #expect(r.grown < 64 << 20, "RSS grew by \(r.grown >> 20) MiB")
        }
    }

    /// Larger than the guest's RAM: refused from the size alone, as before.
    @Test func sparseInitrdLargerThanRAMIsRefusedWithoutReading() async {
        await #expect(processExitsWith: .success) {
            let r = try InitrdRefusalTests().refusal(syntheticBzImage(), initrd: 3 << 30, memory: 256 << 20)
            #expect(r.reason == "initrd \(r.initrd): 3221225472 bytes do not fit in RAM: larger than the 256 MiB of guest RAM")
            #expect(r.seconds < 2, "refused after \(r.seconds) s")
            #expect(r.grown < 64 << 20, "RSS grew by \(r.grown >> 20) MiB")
        }
    }
}

/// The MP table, read back the way Linux's mpparse.c reads it.
@Suite struct MPTableTests {
    let base: UInt64 = LinuxLayout.mpTable
    func sum(_ b: ArraySlice<UInt8>) -> UInt8 { b.reduce(0, &+) }

    @Test func floatingPointerAndHeaderAreValid() {
        for cpus in [1, 2, 8] {
            let t = MPTable.build(cpus: cpus, at: base)
            #expect(Array(t[0..<4]) == Array("_MP_".utf8))
            #expect(sum(t[0..<16]) == 0, "floating pointer checksum")
            #expect(t[8] == 1 && t[9] == 4 && t[11] == 0, "1 paragraph, rev 1.4, a configuration table")
            let config = Int(le(t, 4, UInt32.self) - UInt32(base))
            #expect(config == 16)
            #expect(Array(t[config..<config + 4]) == Array("PCMP".utf8))
            let length = Int(le(t, config + 4, UInt16.self))
            #expect(config + length == t.count)
            #expect(sum(t[config..<config + length]) == 0, "configuration table checksum")
            #expect(le(t, config + 36, UInt32.self) == 0xfee0_0000)
            // Entries: cpus processors (20 bytes), then 8-byte entries; their count matches.
            var o = config + 44, counts = [UInt8: Int](), ints: [(irq: UInt8, apic: UInt8, pin: UInt8)] = []
            var lints: [(type: UInt8, lint: UInt8)] = [], ioapicID: UInt8?
            for _ in 0..<Int(le(t, config + 34, UInt16.self)) {
                let type = t[o]
                counts[type, default: 0] += 1
                if type == 2 { ioapicID = t[o + 1]; #expect(le(t, o + 4, UInt32.self) == 0xfec0_0000 && t[o + 3] & 1 == 1) }
                if type == 3 { ints.append((t[o + 5], t[o + 6], t[o + 7])) }
                if type == 4 { lints.append((t[o + 1], t[o + 7])) }
                if type == 0 { #expect(t[o + 3] == (t[o + 1] == 0 ? 3 : 1), "CPU 0 is the bootstrap processor") }
                o += type == 0 ? 20 : 8
            }
            #expect(o == t.count)
            #expect(counts == [0: cpus, 1: 1, 2: 1, 3: 16, 4: 2])
            #expect(ioapicID == UInt8(cpus), "the IOAPIC's id is not a CPU's")
            #expect(ints.map { $0.irq } == Array(0..<16) && ints.allSatisfy { $0.pin == $0.irq && $0.apic == ioapicID })
            #expect(lints.map { $0.type } == [3, 1] && lints.map { $0.lint } == [0, 1], "LINT0 ExtINT, LINT1 NMI")
        }
    }

    @Test func fitsWhereLinuxLooks() {
        // mpparse.c scans [639 KiB, 640 KiB) for the floating pointer, on 16-byte boundaries;
        // the table (axvm boot has one vCPU) stays in that KiB, in the e820 "reserved" range.
        #expect(LinuxLayout.mpTable == 639 * 1024 && LinuxLayout.mpTable % 16 == 0)
        #expect(LinuxLayout.mpTable + UInt64(MPTable.build(cpus: 1, at: LinuxLayout.mpTable).count) <= 640 * 1024)
        let reserved = LinuxBootPlan.e820Map(ram: [GuestPhysRange(start: GuestPhysAddr(0), end: GuestPhysAddr(64 << 20))])[1]
        #expect(reserved.address == LinuxLayout.mpTable && reserved.kind == .reserved)
    }
}

/// `axvm boot` as a user runs it: bad input exits 2 at once with the reason on stderr, on any
/// host; on kvm_pvm a valid kernel is refused at once with the reason.
@Suite(.serialized) struct LinuxBootCommandLineTests {
    /// The axvm binary built next to the test bundle (any scratch path).
    var axvm: String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let exe = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        return String(exe[..<(exe.lastIndex(of: "/") ?? exe.endIndex)]) + "/axvm"
    }

    /// Runs axvm; returns its exit status, standard error and the seconds it took.
    func run(_ args: [String]) throws -> (status: Int32, stderr: String, seconds: Double) {
        try #require(access(axvm, X_OK) == 0, "\(axvm) missing: build the axvm product first")
        let errPath = "/tmp/axvm-boot-test-\(getpid()).err"
        defer { unlink(errPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var pid = pid_t()
        let argv = ([axvm] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let t0 = monotonicSeconds()
        try #require(posix_spawn(&pid, axvm, &actions, nil, argv, environ) == 0)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f == 0 ? (status >> 8) & 0xff : -(status & 0x7f), readFile(errPath) ?? "", monotonicSeconds() - t0)
    }

    func write(_ bytes: [UInt8], _ name: String) -> String { writeTempFile(bytes, name) }

    @Test func badInputExitsTwoWithTheReason() throws {
        let good = write(syntheticBzImage(), "good")
        let truncated = write(Array(syntheticBzImage().prefix(4000)), "truncated")
        let big = write([UInt8](repeating: 1, count: 19_660_800), "initrd")  // 18.75 MiB
        defer { for p in [good, truncated, big] { unlink(p) } }

        var r = try run(["boot", "--kernel", "/etc/hostname"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("kernel /etc/hostname: not a bzImage"))
        r = try run(["boot", "--kernel", truncated])
        #expect(r.status == 2)
        #expect(r.stderr.contains("truncated: 4000 bytes, but the header promises"))
        r = try run(["boot", "--kernel", good, "--initrd", big, "--memory", "40M"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("initrd \(big): 19660800 bytes do not fit in RAM"))
        r = try run(["boot", "--kernel", good, "--initrd", big, "--memory", "16M"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("larger than the 16 MiB of guest RAM"))
        r = try run(["boot", "--kernel", good, "--cmdline", String(repeating: "x", count: 2048)])
        #expect(r.status == 2)
        #expect(r.stderr.contains("kernel command line: 2048 bytes, longer than the 2047 bytes"))
        r = try run(["boot", "--kernel", "/nonexistent"])
        #expect(r.status == 2 && r.stderr.contains("kernel /nonexistent: no such file"))
        r = try run(["boot", "--kernel", good, "--memory", "5000"])
        #expect(r.status == 64)
    }

    /// On kvm_pvm a kernel that passes every check is refused before a VM exists, fast,
    /// naming kvm_pvm; elsewhere this test has nothing to check.
    @Test(.enabled(if: KVMFlavour.detect().module == .kvmPVM, "the KVM here is not kvm_pvm"))
    func kvmPVMRefusesAtOnce() throws {
        let good = write(syntheticBzImage(), "pvm")
        defer { unlink(good) }
        let r = try run(["boot", "--kernel", good, "--timeout", "30"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("this host's KVM is kvm_pvm"))
        #expect(r.stderr.contains("cannot boot a stock Linux kernel"))
        #expect(r.seconds < 5)
    }
}
#endif
