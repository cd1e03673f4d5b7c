// Shared by the four decoder targets: what every decoded NestedPageFault must satisfy.

/// Exercises every public property of a decoded fault and checks what holds for all
/// decoders: the record's GPA comes through unchanged, the value equals itself.
func checkCommon(_ f: NestedPageFault, gpa expected: UInt64, _ record: @autoclosure () -> String) {
    invariant(f.gpa.raw == expected, "\(record()): fault GPA \(f.gpa) != \(expected)")
    invariant(f == f, "\(record()): fault not equal to itself")
    invariant(!f.description.isEmpty, "\(record()): empty description")
    keep(f.access.requiredFlags)
    keep(f.access.description)
    keep(f.kind.description)
    keep(f.gpa.pageOffset)
    // The access needs exactly one permission bit, the one named after it.
    let need = f.access.requiredFlags
    let expectedNeed: MappingFlags = f.access == .read ? .read : f.access == .write ? .write : .execute
    invariant(need == expectedNeed, "\(record()): \(f.access) requires \(need)")
}

func fuzzHex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
