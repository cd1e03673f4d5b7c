// RISC-V guest, run by every hart (the counterpart of guests/memtest.S and
// guests/aarch64/memtest.S): writes a pattern over its test pages (split mode: its share;
// overlap mode: all of them; page k at page_addr(k)) in the order the VMM chose
// (0 sequential, 1 random permutation, 2 strided), reads them all back in page order, stores
// the checksum and mismatch count in its slot and exits with 0 (all matched) or 1. Runs in
// (V)S-mode (x86's CPL-3 variant has no riscv64 equivalent).
    .include "defs.inc"
    .text
    HEADER
entry:
    call install_trap
    call vcpu_setup                 // s1 = parameter page, s2 = this hart's slot
    ld t0, S_INDEX(s2)
    bnez t0, 0f
    lla a0, msg_start
    call puts
0:  ld a0, P_SIZE(s1)
    srli a0, a0, 12
    call vcpu_share                 // this hart's pages, from S_FIRST(s2)
    mv s5, a0                       // n = pages
    sd s5, S_PAGES(s2)
    // M = next power of two >= n, for the random permutation x' = (5x + c) mod M
    li s6, 1
1:  bgeu s6, s5, 2f
    slli s6, s6, 1
    j 1b
2:  addi s6, s6, -1                 // s6 = M - 1 (mask)
    ld s7, P_SEED(s1)               // c = seed + 2 * index: each hart its own order
    ld t0, S_INDEX(s2)
    slli t0, t0, 1
    add s7, s7, t0
    ori s7, s7, 1                   // c odd: full period (Hull-Dobell)
    li s4, 0                        // k = pages written
    li s8, 0                        // random state x / strided page p
    li s9, 0                        // strided start s
    ld s10, P_ORDER(s1)
write_loop:
    bgeu s4, s5, read_phase
    ld t0, S_INDEX(s2)              // hart 0 announces the half-way point of its writes
    bnez t0, pick_page              // (a place to take a snapshot: --snapshot-on halfway)
    srli t0, s5, 1
    bne s4, t0, pick_page
    lla a0, msg_half
    call puts
pick_page:
    li t0, 1
    beq s10, t0, next_random
    li t0, 2
    beq s10, t0, next_strided
    mv a0, s4                       // sequential: page k
    j have_page
next_random:
    slli t0, s8, 2                  // x = 5x + c mod M, skipping values >= n
    add s8, s8, t0
    add s8, s8, s7
    and s8, s8, s6
    bgeu s8, s5, next_random
    mv a0, s8
    j have_page
next_strided:
    mv a0, s8                       // current p, then p += stride; wrap to ++s
    ld t0, P_STRIDE(s1)
    add t0, s8, t0
    bltu t0, s5, 3f
    addi s9, s9, 1
    mv t0, s9
3:  mv s8, t0
have_page:
    ld t0, S_FIRST(s2)
    add a0, a0, t0
    call page_addr
    call fill_page
    addi s4, s4, 1
    j write_loop
read_phase:
    li s3, 0                        // checksum
    li s4, 0                        // mismatches
    li s9, 0                        // k = page being read
    li t4, GOLDEN
    ld t5, P_SEED(s1)
4:  bgeu s9, s5, done
    ld t0, S_FIRST(s2)
    add a0, s9, t0
    call page_addr
    li t1, 4096
    add t1, a0, t1                  // end of the page
5:  ld t2, 0(a0)
    add s3, s3, t2
    mul t3, a0, t4
    xor t3, t3, t5
    xor t3, t3, t2                  // non-zero: not the pattern
    snez t3, t3
    add s4, s4, t3
    addi a0, a0, 8
    bltu a0, t1, 5b
    addi s9, s9, 1
    j 4b
done:
    lla a0, msg_sum
    j finish

    .include "lib.inc"
msg_start: .asciz "memtest: writing pattern\n"
msg_half:  .asciz "memtest: halfway\n"
msg_sum:   .asciz "memtest: checksum 0x"
