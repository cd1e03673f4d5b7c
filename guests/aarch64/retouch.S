// AArch64 guest (the counterpart of guests/retouch.S), on every vCPU (each its share of the
// pages), two rounds of: fills the test pages (page_addr), asks the VMM to reclaim them (a
// 32-bit store to RECLAIM: the library depopulates the region and the memfd pages are
// punched), then reads them again: every u64 must be zero (fresh frames on the second
// touch). Exit 0 if so, 1 otherwise.
    .include "defs.inc"
    .text
    HEADER
entry:
    bl install_vectors
    bl vcpu_setup                   // x19 = parameter page, x20 = this vCPU's slot
    ldr x0, [x19, #P_SIZE]
    lsr x0, x0, #12
    bl vcpu_split                   // each vCPU its own share, whatever the mode
    mov x23, x0                     // n = this vCPU's pages
    mov x22, #0                     // non-zero u64s, over both rounds
    mov x21, #0                     // checksum of what is read
    mov x24, #2                     // rounds: a second reclaim must work like the first
round:
    mov x25, #0                     // k
1:  cmp x25, x23
    b.hs 2f
    ldr x9, [x20, #S_FIRST]
    add x0, x25, x9
    bl page_addr
    bl fill_page
    add x25, x25, #1
    b 1b
2:  dsb sy                          // the pattern is written before the reclaim
    ldr x9, =RECLAIM
    mov w10, #1
    str w10, [x9]
    mov x25, #0
3:  cmp x25, x23
    b.hs 5f
    ldr x9, [x20, #S_FIRST]
    add x0, x25, x9
    bl page_addr
    add x10, x0, #4096
4:  ldr x11, [x0], #8
    add x21, x21, x11
    cmp x11, #0
    cinc x22, x22, ne
    cmp x0, x10
    b.lo 4b
    add x25, x25, #1
    b 3b
5:  subs x24, x24, #1
    b.ne round
    adr x0, msg                     // mismatches = non-zero u64s
    b finish

    .include "lib.inc"
msg:    .asciz "retouch: after reclaim, checksum 0x"
