// RISC-V guest, the counterpart of guests/triple.S and guests/aarch64/abort.S: jumps to
// UNMAPPED, an instruction fetch from a guest-physical address with no memory. KVM cannot
// emulate a fetch (a G-stage instruction guest-page fault outside every memslot), so KVM_RUN
// fails; the VMM must report it as an error. Exit 0xEF if it ever continues.
    .include "defs.inc"
    .text
    HEADER
entry:
    call install_trap
    li t0, UNMAPPED
    jalr t0                         // ra = the exit below, were the fetch ever to return
    li a0, 0xef                     // not reached
    j exit

    .include "lib.inc"
