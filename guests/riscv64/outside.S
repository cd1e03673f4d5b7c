// RISC-V guest: reads UNMAPPED (0x20000000), which no memory or device covers, with a plain
// 32-bit lw (a G-stage fault on a load KVM can decode: it exits to the VMM as MMIO). The VMM
// must report the GPA and stop.
    .include "defs.inc"
    .text
    HEADER
entry:
    call install_trap
    bnez a1, 1f                     // only hart 0 prints
    lla a0, msg
    call puts
1:  li t0, UNMAPPED
    lw t1, 0(t0)
    li a0, 2                        // not reached
    j exit

    .include "lib.inc"
msg: .asciz "outside: reading GPA 0x20000000\n"
