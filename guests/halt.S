// Long-mode guest that halts with interrupts disabled (cli; hlt): nothing can ever wake
// it, so the VMM must report a dead guest (exit status 4 with the rip), not an exit.
    .code64
    .include "defs.inc"
    .text
    HEADER 64
entry:
    lea msg(%rip), %rsi
    call puts
    cli
    hlt
    mov $2, %al                     // not reached
    jmp exit

    .include "lib.inc"
msg: .asciz "halt: cli; hlt\n"
