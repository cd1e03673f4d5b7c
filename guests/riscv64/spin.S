// RISC-V guest that never exits: for --timeout.
    .include "defs.inc"
    .text
    HEADER
entry:
    call install_trap
1:  j 1b

    .include "lib.inc"
