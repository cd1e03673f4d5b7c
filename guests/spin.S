// Long-mode guest that never exits: for --timeout.
    .code64
    .include "defs.inc"
    .text
    HEADER 64
entry:
    jmp entry
