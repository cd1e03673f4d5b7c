import CKVM

/// A seccomp-BPF program (classic BPF over `struct seccomp_data`): the architecture first,
/// then one comparison per allowed system call; an allowed call may also be restricted to
/// some values of one argument (ioctl's request number, prctl's option). Anything else
/// traps (`SECCOMP_RET_TRAP`: the SIGSYS handler reports it and ends the process).
///
/// The program is a straight line: each test jumps over at most its own block, so no jump
/// offset (8 bits in classic BPF) can overflow however long the list grows.
struct SeccompProgram {
    /// What an allowed system call may be called with.
    enum Rule: Equatable {
        /// Any arguments.
        case any
        /// Argument `index` (its low 32 bits: what the kernel reads for ioctl's `cmd` and
        /// prctl's `option`) must be one of `values`.
        case argument(index: Int, values: [UInt32])
        /// Not made: the call fails with `errno` (clone3, whose flags are in memory a filter
        /// cannot read: glibc then starts threads with clone, whose flags it can).
        case fails(errno: UInt16)
    }

    // <linux/filter.h>, <linux/seccomp.h> (the macros are C ints; these are their values).
    static let loadWordAbsolute: UInt16 = 0x20   // BPF_LD | BPF_W | BPF_ABS
    static let jumpIfEqual: UInt16 = 0x15        // BPF_JMP | BPF_JEQ | BPF_K
    static let jumpIfAtLeast: UInt16 = 0x35      // BPF_JMP | BPF_JGE | BPF_K
    static let returnConstant: UInt16 = 0x06     // BPF_RET | BPF_K
    static let allow: UInt32 = 0x7fff_0000       // SECCOMP_RET_ALLOW
    static let trap: UInt32 = 0x0003_0000        // SECCOMP_RET_TRAP
    static let error: UInt32 = 0x0005_0000       // SECCOMP_RET_ERRNO, the errno in the low 16 bits
    static let killProcess: UInt32 = 0x8000_0000 // SECCOMP_RET_KILL_PROCESS
    // struct seccomp_data: nr (0), arch (4), instruction_pointer (8), args[6] (16 + 8 i).
    static let numberOffset: UInt32 = 0
    static let archOffset: UInt32 = 4
    static func argumentOffset(_ index: Int) -> UInt32 { 16 + 8 * UInt32(index) }  // low word (little-endian hosts)

    private(set) var instructions: [sock_filter] = []

    /// `allowed`: system call number → rule. `arch`: the AUDIT_ARCH the program accepts (a call
    /// through another ABI kills the process: its numbers mean other calls). `abiLimit`: the
    /// first number of another ABI sharing `arch` (x86_64's x32), 0 if none.
    init(allowed: [Int32: Rule], arch: UInt32, abiLimit: UInt32) throws(VMMError) {
        emit(Self.loadWordAbsolute, k: Self.archOffset)
        emit(Self.jumpIfEqual, jt: 1, jf: 0, k: arch)
        emit(Self.returnConstant, k: Self.killProcess)
        emit(Self.loadWordAbsolute, k: Self.numberOffset)
        if abiLimit != 0 {
            emit(Self.jumpIfAtLeast, jt: 0, jf: 1, k: abiLimit)
            emit(Self.returnConstant, k: Self.trap)
        }
        for number in allowed.keys.sorted() {
            guard let rule = allowed[number] else { continue }
            switch rule {
            case .any:
                emit(Self.jumpIfEqual, jt: 0, jf: 1, k: UInt32(bitPattern: number))
                emit(Self.returnConstant, k: Self.allow)
            case let .fails(errno):
                emit(Self.jumpIfEqual, jt: 0, jf: 1, k: UInt32(bitPattern: number))
                emit(Self.returnConstant, k: Self.error | UInt32(errno))
            case let .argument(index, values):
                // ld arg; (jeq v, 0, 1; ret ALLOW) per value; ret TRAP — then the number again.
                let block = 2 + 2 * values.count
                guard (0..<6).contains(index), block <= 255 else {
                    throw .badValue(what: "seccomp rule", value: "system call \(number)", reason: "argument \(index) with \(values.count) values does not fit one BPF block")
                }
                emit(Self.jumpIfEqual, jt: 0, jf: UInt8(block), k: UInt32(bitPattern: number))
                emit(Self.loadWordAbsolute, k: Self.argumentOffset(index))
                for v in values.sorted() {
                    emit(Self.jumpIfEqual, jt: 0, jf: 1, k: v)
                    emit(Self.returnConstant, k: Self.allow)
                }
                emit(Self.returnConstant, k: Self.trap)
                emit(Self.loadWordAbsolute, k: Self.numberOffset)
            }
        }
        emit(Self.returnConstant, k: Self.trap)
        guard instructions.count <= 4096 else {  // BPF_MAXINSNS
            throw .badValue(what: "seccomp program", value: "\(instructions.count) instructions", reason: "above the kernel's 4096")
        }
    }

    private mutating func emit(_ code: UInt16, jt: UInt8 = 0, jf: UInt8 = 0, k: UInt32) {
        instructions.append(sock_filter(code: code, jt: jt, jf: jf, k: k))
    }

    /// What the program returns for system call `number` with `arguments` on `arch`: the
    /// classic BPF machine this program uses (loads, equality and ≥ tests, returns), for the
    /// tests to check a program without installing it.
    func evaluate(number: Int32, arch: UInt32, arguments: [UInt64] = []) -> UInt32 {
        var accumulator: UInt32 = 0
        var pc = 0
        while pc < instructions.count {
            let i = instructions[pc]
            switch i.code {
            case Self.loadWordAbsolute:
                switch i.k {
                case Self.numberOffset: accumulator = UInt32(bitPattern: number)
                case Self.archOffset: accumulator = arch
                default:
                    let index = Int((i.k - 16) / 8)
                    accumulator = index < arguments.count ? UInt32(truncatingIfNeeded: arguments[index]) : 0
                }
                pc += 1
            case Self.jumpIfEqual: pc += 1 + Int(accumulator == i.k ? i.jt : i.jf)
            case Self.jumpIfAtLeast: pc += 1 + Int(accumulator >= i.k ? i.jt : i.jf)
            case Self.returnConstant: return i.k
            default: return Self.killProcess
            }
        }
        return Self.killProcess
    }
}
