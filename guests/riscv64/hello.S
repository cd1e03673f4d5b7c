// RISC-V guest: hart 0 prints a line over the UART and every hart exits with code 0.
    .include "defs.inc"
    .text
    HEADER
entry:
    call install_trap
    bnez a1, 1f                     // hart index: only hart 0 prints
    lla a0, msg
    call puts
1:  li a0, 0
    j exit

    .include "lib.inc"
msg: .asciz "Hello from a RISC-V guest on axvm\n"
