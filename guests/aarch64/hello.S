// AArch64 guest: vCPU 0 prints a line over the UART and every vCPU exits with code 0.
    .include "defs.inc"
    .text
    HEADER
entry:
    bl install_vectors
    cbnz x1, 1f                     // vCPU index: only vCPU 0 prints
    adr x0, msg
    bl puts
1:  mov w0, #0
    b exit

    .include "lib.inc"
msg: .asciz "Hello from an AArch64 guest on axvm\n"
