// AArch64 guest: reads UNMAPPED (0x20000000), which no memory or device covers, with a plain
// 32-bit ldr (a valid instruction syndrome: KVM exits to the VMM as MMIO). The VMM must
// report the GPA and stop.
    .include "defs.inc"
    .text
    HEADER
entry:
    bl install_vectors
    cbnz x1, 1f                     // only vCPU 0 prints
    adr x0, msg
    bl puts
1:  mov x9, #UNMAPPED
    ldr w10, [x9]
    mov w0, #2                      // not reached
    b exit

    .include "lib.inc"
msg: .asciz "outside: reading GPA 0x20000000\n"
