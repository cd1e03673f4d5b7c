// RISC-V guest: reads the read-only area at ROM_BASE (expects "AXVMROM!"), then writes to it
// (a 64-bit sd). KVM_MEM_READONLY turns the write into an MMIO exit the VMM reports.
    .include "defs.inc"
    .text
    HEADER
entry:
    call install_trap
    li s1, ROM_BASE
    ld t1, 0(s1)
    li t0, 0x214d4f524d565841       // "AXVMROM!" little-endian
    bne t1, t0, bad
    bnez a1, 1f                     // only hart 0 prints
    lla a0, msg_ok
    call puts
1:  li t1, 0
    sd t1, 0(s1)                    // must exit to the VMM
    li a0, 3                        // not reached
    j exit
bad:
    li a0, 4
    j exit

    .include "lib.inc"
msg_ok: .asciz "romwrite: read-only area reads AXVMROM!, now writing to it\n"
