// Long-mode guest that triple-faults: an empty IDT, then an invalid opcode.
    .code64
    .include "defs.inc"
    .text
    HEADER 64
entry:
    lidt idtr(%rip)
    ud2
    .p2align 3
idtr: .word 0
      .quad 0
