import AxAddrSpace
@testable import AxVMM
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Glibc
import Testing

/// `--fault-map`: the layout and the per-thread record stay bounded, the SVG is well-formed
/// XML (read by Foundation's XMLParser) and small for a 64 GiB guest, and on KVM what it
/// shows agrees with the run's statistics and a real renderer (rsvg-convert) draws it.
struct FaultMapTests {
    static let gib: UInt64 = 1 << 30

    @Test func layoutIsBoundedAndAreasStartOnTheirOwnCell() throws {
        let big = FaultMapLayout(areas: [(try #require(GuestPhysRange(start: GuestPhysAddr(0), size: 64 * Self.gib)), true)])
        #expect(big.cellCount == FaultMapLayout.maxCells)
        #expect(big.cellBytes == 16 << 20)
        let small = FaultMapLayout(areas: [(try #require(GuestPhysRange(start: GuestPhysAddr(0), size: 1 << 20)), true)])
        #expect(small.cellCount == 256 && small.cellBytes == 4096)
        // Two areas with a hole between: laid end to end, the second on a cell of its own.
        let split = FaultMapLayout(areas: [(try #require(GuestPhysRange(start: GuestPhysAddr(0), size: 3 << 30)), true),
                                           (try #require(GuestPhysRange(start: GuestPhysAddr(4 << 30), size: (1 << 30) + 4096)), false)])
        #expect(split.cellCount <= FaultMapLayout.maxCells)
        #expect(split.areas[1].firstCell == split.areas[0].cells)
        #expect(split.cell(of: GuestPhysAddr(4 << 30)) == split.areas[1].firstCell)
        #expect(split.cell(of: GuestPhysAddr((5 << 30) + 4095)) == split.cellCount - 1)
        #expect(split.cell(of: GuestPhysAddr(3 << 30)) == nil)  // the hole
        #expect(split.cell(of: GuestPhysAddr(6 << 30)) == nil)
    }

    @Test func timelineCoarsensAndMerges() throws {
        let layout = FaultMapLayout(areas: [(try #require(GuestPhysRange(start: GuestPhysAddr(0), size: 1 << 20)), true)])
        var a = FaultTimeline(cells: layout.cellCount, start: 1000)
        var b = a
        func page(_ n: UInt64, pages: UInt64 = 1) -> GuestPhysRange {
            GuestPhysRange(start: GuestPhysAddr(n * 4096), size: pages * 4096)!
        }
        a.record(page(3), at: 1000 + 5, layout: layout)
        a.record(page(3), at: 1000 + 50, layout: layout)  // later: the first touch stays
        a.record(page(16, pages: 16), at: 1000 + 7, layout: layout)  // a 64 KiB window: 16 cells
        #expect(a.firstTouchNanos(3) == 5)
        #expect((16..<32).allSatisfy { a.firstTouchNanos($0) == 7 })
        #expect(a.firstTouchNanos(4) == nil)
        // 10 s into the run: beyond 120 slices of 16.8 ms, the slices double until it fits.
        b.record(page(3), at: 1000 + 2, layout: layout)
        b.record(page(100), at: 1000 + 10_000_000_000, layout: layout)
        #expect(b.sliceNanos >= 10_000_000_000 / UInt64(FaultTimeline.sliceCount))
        #expect(b.slices.reduce(0, +) == 2)
        a.merge(b)
        #expect(a.sliceShift == b.sliceShift)
        #expect(a.slices.reduce(0, +) == 5)
        #expect(a.firstTouchNanos(3) == 2 && a.firstTouchNanos(100) == 10_000_000_000)
        // Before the start (a fault recorded as the run begins) counts as time 0.
        a.record(page(200), at: 10, layout: layout)
        #expect(a.firstTouchNanos(200) == 0)
        // A run that goes on long after its last fault: the slices stretch to its end.
        a.cover(100_000_000_000)
        #expect(a.sliceNanos * UInt64(FaultTimeline.sliceCount) > 100_000_000_000)
        #expect(a.slices.reduce(0, +) == 6)
    }

    /// A report for a 64 GiB guest with every cell populated: the worst case for size.
    func syntheticReport() throws -> RunReport {
        let layout = FaultMapLayout(areas: [(try #require(GuestPhysRange(start: GuestPhysAddr(0), size: 64 * Self.gib)), true)])
        var timeline = FaultTimeline(cells: layout.cellCount, start: 0)
        var rng = SystemRandomNumberGenerator()
        for c in 0..<layout.cellCount {
            let gpa = GuestPhysAddr(UInt64(c) * layout.cellBytes)
            timeline.record(GuestPhysRange(start: gpa, size: 4096)!, at: UInt64.random(in: 0..<30_000_000_000, using: &rng), layout: layout)
        }
        var s = RunStatistics()
        s.memoryBytes = 64 * Self.gib
        s.faults = layout.cellCount
        s.pagesMappedByFaults = layout.cellCount
        s.populatedBytes = UInt64(layout.cellCount) * 4096
        s.faultMap = FaultMapData(layout: layout, timeline: timeline,
                                  populatedPages: Array(repeating: 1, count: layout.cellCount), runNanos: 30_000_000_000)
        let settings = RunSettings(memorySize: 64 * Self.gib, lazy: true, faultAround: 4096, timeout: nil)
        return RunReport(exit: .guestExit(code: 0), serialOutput: "", arch: .x86_64, settings: settings, statistics: s)
    }

    @Test func svgIsWellFormedAndSmallForA64GiBGuest() throws {
        let svg = FaultMapSVG.render(try syntheticReport())
        #expect(svg.utf8.count < 512 << 10, "\(svg.utf8.count) bytes")
        let attributes = try parse(svg)
        #expect(attributes["data-cells"] == "4096")
        #expect(attributes["data-cell-bytes"] == "\(16 << 20)")
        #expect(attributes["data-faults"] == "4096")
        #expect(attributes["data-populated-bytes"] == "\(4096 * 4096)")
        // A run that ended before the guest started still gets a (small) well-formed file.
        var early = try syntheticReport()
        early.statistics.faultMap = nil
        early.exit = .interrupted(signal: 15)
        #expect(try parse(FaultMapSVG.render(early))["data-faults"] == "0")
    }

    /// Parses `svg` with XMLParser (fails the test if it is not well-formed) and returns the
    /// root element's attributes.
    func parse(_ svg: String) throws -> [String: String] {
        final class Root: NSObject, XMLParserDelegate {
            var attributes: [String: String]?
            func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                        attributes: [String: String]) {
                if self.attributes == nil && name == "svg" { self.attributes = attributes }
            }
        }
        let parser = XMLParser(data: Data(svg.utf8))
        let root = Root()
        parser.delegate = root
        let ok = parser.parse()
        #expect(ok, "not well-formed XML: \(String(describing: parser.parserError)) at line \(parser.lineNumber)")
        return try #require(root.attributes, "no <svg> root element")
    }
}

@Suite(.enabled(if: KVMGate.enabled, "KVM is not usable here (set AXVM_REQUIRE_KVM=1 to fail instead)"), .serialized)
struct FaultMapKVMTests {
    /// rsvg-convert (Debian's librsvg2-bin, installed by scripts/setup.sh); with
    /// AXVM_REQUIRE_RSVG=1 (CI) its absence fails the test.
    static let rsvg = "/usr/bin/rsvg-convert"

    @Test func memtestMapAgreesWithTheStatisticsAndRenders() throws {
        let svgPath = temporaryPath("faults.svg"), jsonPath = temporaryPath("faults.json"), pngPath = temporaryPath("faults.png")
        defer { for p in [svgPath, jsonPath, pngPath] { unlink(p) } }
        var run = try AxvmProcess(["run", guestPath("memtest"), "--memory", "32M", "--order", "random", "--fault-around", "64K",
                                   "--stats-json", jsonPath, "--fault-map", svgPath])
        #expect(run.wait() == 0, "\(run.errText)")
        let svg = String(decoding: try #require(fileBytes(svgPath)), as: UTF8.self)
        let attributes = try FaultMapTests().parse(svg)
        let jsonBytes = try #require(fileBytes(jsonPath))
        let stats = try #require(JSONSerialization.jsonObject(with: Data(jsonBytes)) as? [String: Any])
        let populated = try #require((stats["populated_bytes"] as? NSNumber)?.uint64Value, "\(stats.keys.sorted())")
        let faults = try #require((stats["faults"] as? NSNumber)?.intValue)
        #expect(populated > 16 << 20)
        #expect(attributes["data-populated-bytes"] == "\(populated)")
        #expect(attributes["data-faults"] == "\(faults)")
        // 32 MiB drawn as 4096 cells (the most) of 8 KiB.
        #expect(attributes["data-cells"] == "4096" && attributes["data-cell-bytes"] == "8192")

        guard toolAvailable(Self.rsvg, package: "librsvg2-bin", required: "AXVM_REQUIRE_RSVG") else { return }
        let r = try runTool(Self.rsvg, ["-o", pngPath, svgPath])
        #expect(r.status == 0 && r.err.isEmpty, "rsvg-convert: \(r.err)")
        let png = try #require(fileBytes(pngPath))
        #expect(png.prefix(8) == [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
        #expect(png.count > 10_000, "\(png.count)-byte PNG")
    }

    @Test func mapFileIsCheckedBeforeTheRun() throws {
        let image = guestPath("hello")
        let before = try #require(fileBytes(image))
        let json = temporaryPath("map-and-stats.json")
        defer { unlink(json) }
        for (path, message) in [("/dev/full", "/dev/full"), (image, "is the guest image"), ("/nonexistent/dir/m.svg", "cannot create a file in /nonexistent/dir/"),
                                (json, "is also the statistics file")] {
            var run = try AxvmProcess(["run", image, "--stats-json", json, "--fault-map", path])
            #expect(run.wait() == 2, "\(path): \(run.errText)")
            #expect(run.errText.contains(message), "\(path): \(run.errText)")
        }
        #expect(fileBytes(image) == before)
    }
}
