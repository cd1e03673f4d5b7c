// Long-mode guest: reads guest-physical 0xc0000000, which no area covers (RAM is below
// it, the read-only area at 0xe0000000). The VMM must report the GPA and stop.
    .code64
    .include "defs.inc"
    .text
    HEADER 64
entry:
    lea msg(%rip), %rsi
    call puts
    mov $0xc0000000, %eax
    mov (%rax), %eax
    mov $2, %al                     // not reached
    jmp exit

    .include "lib.inc"
msg: .asciz "outside: reading GPA 0xc0000000\n"
