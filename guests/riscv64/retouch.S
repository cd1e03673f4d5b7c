// RISC-V guest (the counterpart of guests/retouch.S and guests/aarch64/retouch.S), on every
// hart (each its share of the pages), two rounds of: fills the test pages (page_addr), asks
// the VMM to reclaim them (a 32-bit store to RECLAIM: the library depopulates the region and
// the memfd pages are punched), then reads them again: every u64 must be zero (fresh frames
// on the second touch). Exit 0 if so, 1 otherwise.
    .include "defs.inc"
    .text
    HEADER
entry:
    call install_trap
    call vcpu_setup                 // s1 = parameter page, s2 = this hart's slot
    ld a0, P_SIZE(s1)
    srli a0, a0, 12
    call vcpu_split                 // each hart its own share, whatever the mode
    mv s5, a0                       // n = this hart's pages
    li s4, 0                        // non-zero u64s, over both rounds
    li s3, 0                        // checksum of what is read
    li s6, 2                        // rounds: a second reclaim must work like the first
round:
    li s7, 0                        // k
1:  bgeu s7, s5, 2f
    ld t0, S_FIRST(s2)
    add a0, s7, t0
    call page_addr
    call fill_page
    addi s7, s7, 1
    j 1b
2:  fence                           // the pattern is written before the reclaim
    li t0, RECLAIM
    li t1, 1
    sw t1, 0(t0)
    li s7, 0
3:  bgeu s7, s5, 5f
    ld t0, S_FIRST(s2)
    add a0, s7, t0
    call page_addr
    li t1, 4096
    add t1, a0, t1
4:  ld t2, 0(a0)
    addi a0, a0, 8
    add s3, s3, t2
    snez t3, t2
    add s4, s4, t3
    bltu a0, t1, 4b
    addi s7, s7, 1
    j 3b
5:  addi s6, s6, -1
    bnez s6, round
    lla a0, msg                     // mismatches = non-zero u64s
    j finish

    .include "lib.inc"
msg:    .asciz "retouch: after reclaim, checksum 0x"
