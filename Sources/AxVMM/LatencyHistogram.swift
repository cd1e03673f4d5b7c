/// Fault service times in constant memory: a log-linear histogram (the HdrHistogram
/// layout with 2 significant binary digits per power of two): values below 128 ns exact,
/// above that 64 buckets per power of two, so any percentile is within 1/64 (1.6 %) of
/// the true value. 4,096 counters cover 0 … 2^64 ns; recording is a few instructions and
/// never allocates, so a guest that faults forever cannot grow the VMM.
public struct LatencyHistogram: Sendable, Equatable {
    static let subBits = 6
    static let subCount = 1 << subBits  // 64
    private var counts = [UInt64](repeating: 0, count: 64 * 64)
    public private(set) var count: UInt64 = 0
    public private(set) var sum: UInt64 = 0
    public private(set) var min: UInt64 = .max
    public private(set) var max: UInt64 = 0

    public init() {}

    /// Bucket of `v`: values with their top bit at position `e` ≥ 6 go to bucket
    /// (e − 5) · 64 + the 6 bits below the top bit; smaller values to bucket `v` itself.
    @inline(__always) static func bucket(_ v: UInt64) -> Int {
        let e = 63 - v.leadingZeroBitCount  // -1 for 0 → handled by the `< 64` case
        if v < UInt64(subCount) { return Int(v) }
        let sub = Int((v >> UInt64(e - subBits)) & UInt64(subCount - 1))
        return (e - subBits + 1) * subCount + sub
    }
    /// The smallest value of bucket `b`.
    static func lowerBound(_ b: Int) -> UInt64 {
        if b < subCount { return UInt64(b) }
        let e = b / subCount + subBits - 1, sub = UInt64(b % subCount)
        return (1 << UInt64(e)) | sub << UInt64(e - subBits)
    }
    static func width(_ b: Int) -> UInt64 {
        b < subCount ? 1 : 1 << UInt64(b / subCount - 1)
    }

    public mutating func record(_ v: UInt64) {
        counts[Self.bucket(v)] &+= 1
        count &+= 1
        sum &+= v
        if v < min { min = v }
        if v > max { max = v }
    }

    /// The value at quantile `q` (0…1): the middle of the bucket holding the ⌈q·count⌉-th
    /// smallest value, clamped to the exact min and max (q = 1: the exact max). 0 when
    /// empty.
    public func percentile(_ q: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let clamped = q.isNaN ? 0 : Swift.min(1, Swift.max(0, q))
        let rank = Swift.max(1, UInt64((clamped * Double(count)).rounded(.up)))
        if rank >= count { return max }
        var seen: UInt64 = 0
        for (b, c) in counts.enumerated() where c > 0 {
            seen += c
            if seen >= rank {
                let mid = Self.lowerBound(b) + (Self.width(b) - 1) / 2
                return Swift.min(max, Swift.max(min, mid))
            }
        }
        return max
    }

    public var mean: UInt64 { count == 0 ? 0 : sum / count }

    public mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
        count &+= other.count
        sum &+= other.sum
        if other.count > 0 {
            min = Swift.min(min, other.min)
            max = Swift.max(max, other.max)
        }
    }
}
