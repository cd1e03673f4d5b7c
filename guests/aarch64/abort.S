// AArch64 guest, the counterpart of guests/triple.S: a load pair from UNMAPPED. The data
// abort has no instruction syndrome (ISV = 0: ldp is never emulated), so KVM cannot turn it
// into an MMIO exit; the VMM must report it as an error. Exit 0xEF if it ever continues.
    .include "defs.inc"
    .text
    HEADER
entry:
    bl install_vectors
    mov x4, #UNMAPPED
    ldp x2, x3, [x4]
    mov w0, #0xef                   // not reached
    b exit

    .include "lib.inc"
