import AxAddrSpace

/// `--fault-map FILE.svg`: guest RAM as a grid of cells coloured by when a fault first
/// populated them, and faults per time slice beside it. Its size is bounded by the layout's
/// cell count and the timeline's slices, however large the guest or long the run. The root
/// element carries the totals for tools: `data-faults`, `data-pages-mapped`,
/// `data-populated-bytes`, `data-cells`, `data-cell-bytes`, `data-run-ns`.
public enum FaultMapSVG {
    static let columns = 64
    static let pitch = 10
    static let gridX = 20, gridY = 100
    static let chartX = 720, chartW = 440, chartH = 240

    public static func render(_ report: RunReport) -> String {
        let s = report.statistics
        guard let map = s.faultMap else {
            // A run that ended during set-up has no record.
            return svgOpen(width: 640, height: 60, faults: 0, pagesMapped: 0, populated: 0, cells: 0, cellBytes: 0, runNanos: 0)
                + text(20, 34, "axvm fault map: the run ended before the guest started (\(report.exitDescription))", size: 14)
                + "</svg>\n"
        }
        let layout = map.layout
        let rows = (layout.cellCount + columns - 1) / columns
        let gridH = rows * pitch
        let tableY = gridY + gridH + 24
        let legendY = tableY + layout.areas.count * 18 + 28
        let height = max(legendY + 70, gridY + chartH + 150)
        let populated = map.populatedPages.reduce(0, +)
        var out = svgOpen(width: chartX + chartW + 30, height: height, faults: s.faults, pagesMapped: s.pagesMappedByFaults,
                          populated: UInt64(populated) * 4096, cells: layout.cellCount, cellBytes: layout.cellBytes,
                          runNanos: map.runNanos)
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        let what = report.linux != nil ? "axvm boot" : "axvm run"
        out += text(gridX, 28, "\(what): guest memory by first touch", size: 16, bold: true)
        out += text(gridX, 50, "\(StatsFormat.mib(s.memoryBytes)) \(report.lazy ? "lazy" : "populated") RAM, fault-around \(size(report.faultAround)); "
                    + "\(s.faults) faults mapped \(s.pagesMappedByFaults) pages; \(StatsFormat.mib(UInt64(populated) * 4096)) populated; "
                    + "run \(StatsFormat.fixed(Double(map.runNanos) / 1e9, 2)) s" + balloonNote(report), size: 12)
        out += text(gridX, 70, "one cell = \(size(layout.cellBytes)) of guest-physical memory, \(columns) cells a row, areas end to end "
                    + "(each starts on a dark mark); colour: when a fault first populated the cell,", size: 11, fill: "#555")
        out += text(gridX, 86, "grey: populated before the run (loaded, --populate), pale: never touched; "
                    + "a partly populated cell is lighter", size: 11, fill: "#555")
        out += grid(map, runNanos: map.runNanos)
        out += areaTable(layout, y: tableY)
        out += legend(y: legendY, runNanos: map.runNanos)
        out += chart(map.timeline, runNanos: map.runNanos, statistics: s)
        out += "</svg>\n"
        return out
    }

    /// With a virtio-balloon: what went back to the host and came back (returned pages show
    /// as never touched if they did not come back).
    static func balloonNote(_ report: RunReport) -> String {
        guard let b = report.linux?.balloon else { return "" }
        return "; balloon: \(b.reports) free page reports, \(StatsFormat.mib(b.returnedBytes)) back to the host, "
            + "\(report.statistics.refaultedPages) pages faulted in again"
    }

    // MARK: Parts

    static func svgOpen(width: Int, height: Int, faults: Int, pagesMapped: Int, populated: UInt64, cells: Int,
                        cellBytes: UInt64, runNanos: UInt64) -> String {
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            + "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" "
            + "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" data-faults=\"\(faults)\" data-pages-mapped=\"\(pagesMapped)\" "
            + "data-populated-bytes=\"\(populated)\" data-cells=\"\(cells)\" data-cell-bytes=\"\(cellBytes)\" data-run-ns=\"\(runNanos)\">\n"
    }

    /// Each area's cells as a pale band (never touched), then every cell with populated
    /// pages coloured by its first fault (grey: none, the pages came before the run), its
    /// opacity by how much of it is populated.
    static func grid(_ map: FaultMapData, runNanos: UInt64) -> String {
        let layout = map.layout
        let pagesPerCell = Int(layout.cellBytes / 4096)
        var out = "<g stroke=\"none\">\n"
        for a in layout.areas {
            for (x, y, w) in rowSegments(first: a.firstCell, count: a.cells) {
                out += "<rect x=\"\(x)\" y=\"\(y)\" width=\"\(w)\" height=\"\(pitch - 1)\" fill=\"#eceff1\"/>\n"
            }
        }
        // Cells grouped by (colour step, opacity step): one path each, so the file stays
        // small (about 17 bytes a cell) however the colours spread.
        var groups: [Int: String] = [:]
        for a in layout.areas {
            let areaPages = Int((a.range.size + 4095) / 4096)
            for c in a.firstCell..<(a.firstCell + a.cells) where map.populatedPages[c] > 0 {
                // The area's last cell may be partly outside it.
                let capacity = min(pagesPerCell, areaPages - (c - a.firstCell) * pagesPerCell)
                let fraction = min(1, Double(map.populatedPages[c]) / Double(max(1, capacity)))
                let step = map.timeline.firstTouchNanos(c).map { min(colourSteps - 1, Int(Double($0) / Double(max(1, runNanos)) * Double(colourSteps))) } ?? -1
                let key = step * 4 + min(3, Int(fraction * 4))
                groups[key, default: ""] += "M\(gridX + (c % columns) * pitch) \(gridY + (c / columns) * pitch)h\(pitch - 1)v\(pitch - 1)h-\(pitch - 1)z"
            }
        }
        for key in groups.keys.sorted() {
            let step = key >= 0 ? key / 4 : -1, fill = key >= 0 ? key % 4 : (key + 4) % 4
            let colour = step < 0 ? "#9e9e9e" : colourAt((Double(step) + 0.5) / Double(colourSteps))
            let opacity = fill == 3 ? "" : " fill-opacity=\"\(StatsFormat.fixed(0.3 + 0.2 * Double(fill), 1))\""
            out += "<path fill=\"\(colour)\"\(opacity) d=\"\(groups[key] ?? "")\"/>\n"
        }
        // Where each area starts: a dark mark left of its first cell.
        out += "</g>\n<g fill=\"#263238\">\n"
        for a in layout.areas {
            out += "<rect x=\"\(gridX + (a.firstCell % columns) * pitch - 3)\" y=\"\(gridY + (a.firstCell / columns) * pitch - 1)\" "
                + "width=\"3\" height=\"\(pitch + 1)\"/>\n"
        }
        return out + "</g>\n"
    }

    /// The rectangles (x, y, width) that cells first..<first+count cover, row by row.
    static func rowSegments(first: Int, count: Int) -> [(Int, Int, Int)] {
        var segments: [(Int, Int, Int)] = []
        var c = first
        let end = first + count
        while c < end {
            let row = c / columns, col = c % columns
            let n = min(columns - col, end - c)
            segments.append((gridX + col * pitch, gridY + row * pitch, n * pitch - 1))
            c += n
        }
        return segments
    }

    static func areaTable(_ layout: FaultMapLayout, y: Int) -> String {
        var out = text(gridX, y, "areas", size: 12, bold: true)
        for (i, a) in layout.areas.enumerated() {
            let last = a.firstCell + a.cells - 1
            out += text(gridX, y + 18 * (i + 1), "RAM \(a.lazy ? "lazy" : "populated")  GPA [0x\(String(a.range.start.raw, radix: 16)), "
                        + "0x\(String(a.range.end.raw, radix: 16)))  \(size(a.range.size))  cells \(a.firstCell)–\(last) "
                        + "(rows \(a.firstCell / columns)–\(last / columns))", size: 11)
        }
        return out
    }

    static func legend(y: Int, runNanos: UInt64) -> String {
        var out = "<defs><linearGradient id=\"time\" x1=\"0\" x2=\"1\" y1=\"0\" y2=\"0\">\n"
        for (i, c) in palette.enumerated() {
            out += "<stop offset=\"\(StatsFormat.fixed(Double(i) / Double(palette.count - 1), 2))\" stop-color=\"\(c)\"/>\n"
        }
        out += "</linearGradient></defs>\n"
        out += text(gridX, y, "first touch (s from the start of the run)", size: 11)
        out += "<rect x=\"\(gridX)\" y=\"\(y + 6)\" width=\"300\" height=\"12\" fill=\"url(#time)\"/>\n"
        let t = Double(runNanos) / 1e9
        out += text(gridX, y + 32, "0", size: 10)
        out += text(gridX + 150, y + 32, StatsFormat.fixed(t / 2, 2), size: 10, anchor: "middle")
        out += text(gridX + 300, y + 32, StatsFormat.fixed(t, 2), size: 10, anchor: "end")
        out += "<rect x=\"\(gridX + 330)\" y=\"\(y + 6)\" width=\"12\" height=\"12\" fill=\"#9e9e9e\"/>\n"
        out += text(gridX + 348, y + 16, "before the run", size: 10)
        out += "<rect x=\"\(gridX + 440)\" y=\"\(y + 6)\" width=\"12\" height=\"12\" fill=\"#eceff1\" stroke=\"#37474f\"/>\n"
        out += text(gridX + 458, y + 16, "never touched", size: 10)
        return out
    }

    /// Faults per slice up to the end of the run, with the service-time percentiles.
    static func chart(_ t: FaultTimeline, runNanos: UInt64, statistics s: RunStatistics) -> String {
        let used = max(1, min(FaultTimeline.sliceCount, Int((runNanos >> UInt64(t.sliceShift)) + 1)))
        let peak = max(1, t.slices.prefix(used).max() ?? 1)
        let x0 = chartX, y0 = gridY + 20, barW = Double(chartW) / Double(used)
        var out = text(x0, gridY, "faults per \(StatsFormat.fixed(Double(t.sliceNanos) / 1e6, 1)) ms", size: 12, bold: true)
        out += "<g fill=\"#3b528b\">\n"
        for (i, n) in t.slices.prefix(used).enumerated() where n > 0 {
            let h = max(1, Int(Double(n) / Double(peak) * Double(chartH)))
            out += "<rect x=\"\(StatsFormat.fixed(Double(x0) + Double(i) * barW, 1))\" y=\"\(y0 + chartH - h)\" "
                + "width=\"\(StatsFormat.fixed(max(1, barW - 0.5), 1))\" height=\"\(h)\"/>\n"
        }
        out += "</g>\n"
        out += "<path d=\"M\(x0) \(y0) V\(y0 + chartH) H\(x0 + chartW)\" fill=\"none\" stroke=\"#37474f\"/>\n"
        out += text(x0 - 4, y0 + 8, "\(peak)", size: 10, anchor: "end")
        out += text(x0 - 4, y0 + chartH, "0", size: 10, anchor: "end")
        out += text(x0, y0 + chartH + 14, "0 s", size: 10)
        let end = Double(UInt64(used) << UInt64(t.sliceShift)) / 1e9
        out += text(x0 + chartW, y0 + chartH + 14, "\(StatsFormat.fixed(end, 2)) s", size: 10, anchor: "end")
        let y = y0 + chartH + 40
        out += text(x0, y, "faults \(s.faults), pages mapped by faults \(s.pagesMappedByFaults), minor faults \(s.minorFaults)", size: 12)
        out += text(x0, y + 18, "fault service p50 \(micros(s.faultP50Nanos)), p99 \(micros(s.faultP99Nanos)), "
                    + "mean \(micros(s.faultMeanNanos))", size: 12)
        out += text(x0, y + 36, "populated \(StatsFormat.mib(s.populatedBytes)) of \(StatsFormat.mib(s.memoryBytes)); "
                    + "set-up \(StatsFormat.fixed(s.setupSeconds, 2)) s, run \(StatsFormat.fixed(s.runSeconds, 2)) s", size: 12)
        return out
    }

    // MARK: Helpers

    /// First-touch times are drawn in this many colours.
    static let colourSteps = 32

    /// Viridis at five stops, from early (dark violet) to late (yellow).
    static let palette = ["#440154", "#3b528b", "#21908d", "#5dc963", "#fde725"]

    /// The palette at `f` (0…1), linearly between stops.
    static func colourAt(_ f: Double) -> String {
        let x = min(1, max(0, f)) * Double(palette.count - 1)
        let i = min(palette.count - 2, Int(x))
        let (a, b) = (rgb(palette[i]), rgb(palette[i + 1]))
        let w = x - Double(i)
        func mix(_ p: Int, _ q: Int) -> Int { Int((Double(p) + (Double(q) - Double(p)) * w).rounded()) }
        return "#" + hex2(mix(a.0, b.0)) + hex2(mix(a.1, b.1)) + hex2(mix(a.2, b.2))
    }

    static func rgb(_ hex: String) -> (Int, Int, Int) {
        let v = Int(hex.dropFirst(), radix: 16) ?? 0
        return ((v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
    }

    static func hex2(_ v: Int) -> String {
        let s = String(v, radix: 16)
        return s.count < 2 ? "0" + s : s
    }

    static func size(_ bytes: UInt64) -> String {
        if bytes >= 1 << 30 && bytes % (1 << 30) == 0 { return "\(bytes >> 30) GiB" }
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes % 1024 == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) bytes"
    }

    static func micros(_ ns: UInt64) -> String { StatsFormat.fixed(Double(ns) / 1e3, 1) + " µs" }

    /// A text element; `s` is escaped for XML.
    static func text(_ x: Int, _ y: Int, _ s: String, size: Int, bold: Bool = false, fill: String = "#212121",
                     anchor: String = "start") -> String {
        "<text x=\"\(x)\" y=\"\(y)\" font-size=\"\(size)\"\(bold ? " font-weight=\"bold\"" : "") fill=\"\(fill)\""
            + "\(anchor == "start" ? "" : " text-anchor=\"\(anchor)\"")>\(escape(s))</text>\n"
    }

    static func escape(_ s: String) -> String {
        var o = ""
        for c in s.unicodeScalars {
            switch c {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            default: o.unicodeScalars.append(c)
            }
        }
        return o
    }
}
