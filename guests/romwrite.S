// Long-mode guest: reads the read-only area at 0xe0000000 (expects "AXVMROM!"), then
// writes to it. KVM_MEM_READONLY turns the write into an MMIO exit the VMM reports.
    .code64
    .include "defs.inc"
    .text
    HEADER 64
entry:
    mov $0xe0000000, %ebx
    mov (%rbx), %rax
    movabs $0x214d4f524d565841, %rcx   // "AXVMROM!" little-endian
    cmp %rcx, %rax
    jne bad
    lea msg_ok(%rip), %rsi
    call puts
    movq $0, (%rbx)                 // must exit to the VMM
    mov $3, %al                     // not reached
    jmp exit
bad:
    mov $4, %al
    jmp exit

    .include "lib.inc"
msg_ok: .asciz "romwrite: read-only area reads AXVMROM!, now writing to it\n"
