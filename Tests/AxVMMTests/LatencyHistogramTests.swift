import AxVMM
import Testing

@Suite struct LatencyHistogramTests {
    /// Percentiles within 1/64 of the exact ones, over values from ns to seconds.
    @Test func percentilesAreWithinTheBucketWidth() {
        var h = LatencyHistogram()
        var values: [UInt64] = []
        var x: UInt64 = 0x1234_5678
        for _ in 0..<20_000 {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            let v = (x % 5_000_000_000) >> (x % 20)  // skewed towards small values
            values.append(v)
            h.record(v)
        }
        values.sort()
        for q in [0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let exact = values[max(0, Int((q * Double(values.count)).rounded(.up)) - 1)]
            let got = h.percentile(q)
            let tolerance = max(1, exact / 64)
            #expect(got >= exact - min(exact, tolerance) && got <= exact + tolerance, "q \(q): \(got) vs \(exact)")
        }
        #expect(h.count == 20_000)
        #expect(h.mean == values.reduce(0, +) / 20_000)
        #expect(h.percentile(1) == values.last)
    }

    @Test func smallValuesAreExactAndEmptyIsZero() {
        var h = LatencyHistogram()
        #expect(h.percentile(0.5) == 0)
        for v: UInt64 in [0, 1, 2, 127, 127, 127] { h.record(v) }
        #expect(h.percentile(0.5) == 2)   // the 3rd of 6
        #expect(h.percentile(0.9) == 127)
        #expect(h.percentile(0.01) == 0)
        h.record(.max)
        #expect(h.percentile(1) == .max)
    }
}
