// AArch64 guest: reads the read-only area at ROM_BASE (expects "AXVMROM!"), then writes to it
// (a 64-bit str). KVM_MEM_READONLY turns the write into an MMIO exit the VMM reports.
    .include "defs.inc"
    .text
    HEADER
entry:
    bl install_vectors
    mov x19, #ROM_BASE
    ldr x10, [x19]
    ldr x9, =0x214d4f524d565841     // "AXVMROM!" little-endian
    cmp x10, x9
    b.ne bad
    cbnz x1, 1f                     // only vCPU 0 prints
    adr x0, msg_ok
    bl puts
1:  mov x10, #0
    str x10, [x19]                  // must exit to the VMM
    mov w0, #3                      // not reached
    b exit
bad:
    mov w0, #4
    b exit

    .include "lib.inc"
msg_ok: .asciz "romwrite: read-only area reads AXVMROM!, now writing to it\n"
