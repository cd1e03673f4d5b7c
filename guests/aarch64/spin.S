// AArch64 guest that never exits: for --timeout.
    .include "defs.inc"
    .text
    HEADER
entry:
    bl install_vectors
1:  b 1b

    .include "lib.inc"
