// AArch64 guest, run by every vCPU (the counterpart of guests/memtest.S): writes a pattern
// over its test pages (split mode: its share; overlap mode: all of them; page k at
// page_addr(k)) in the order the VMM chose (0 sequential, 1 random permutation, 2 strided),
// reads them all back in page order, stores the checksum and mismatch count in its slot and
// exits with 0 (all matched) or 1. Runs at EL1 (x86's CPL-3 variant has no arm64 equivalent).
    .include "defs.inc"
    .text
    HEADER
entry:
    bl install_vectors
    bl vcpu_setup                   // x19 = parameter page, x20 = this vCPU's slot
    ldr x9, [x20, #S_INDEX]
    cbnz x9, 0f
    adr x0, msg_start
    bl puts
0:  ldr x0, [x19, #P_SIZE]
    lsr x0, x0, #12
    bl vcpu_share                   // this vCPU's pages, from S_FIRST(x20)
    mov x23, x0                     // n = pages
    str x23, [x20, #S_PAGES]
    // M = next power of two >= n, for the random permutation x' = (5x + c) mod M
    mov x24, #1
1:  cmp x24, x23
    b.hs 2f
    lsl x24, x24, #1
    b 1b
2:  sub x24, x24, #1                // x24 = M - 1 (mask)
    ldr x25, [x19, #P_SEED]         // c = seed + 2 * index: each vCPU its own order
    ldr x9, [x20, #S_INDEX]
    add x25, x25, x9, lsl #1
    orr x25, x25, #1                // c odd: full period (Hull-Dobell)
    mov x22, #0                     // k = pages written
    mov x26, #0                     // random state x / strided page p
    mov x27, #0                     // strided start s
    ldr x28, [x19, #P_ORDER]
write_loop:
    cmp x22, x23
    b.hs read_phase
    ldr x9, [x20, #S_INDEX]         // vCPU 0 announces the half-way point of its writes
    cbnz x9, pick_page              // (a place to take a snapshot: --snapshot-on halfway)
    cmp x22, x23, lsr #1
    b.ne pick_page
    adr x0, msg_half
    bl puts
pick_page:
    cmp x28, #1
    b.eq next_random
    cmp x28, #2
    b.eq next_strided
    mov x0, x22                     // sequential: page k
    b have_page
next_random:
    add x26, x26, x26, lsl #2       // x = 5x + c mod M, skipping values >= n
    add x26, x26, x25
    and x26, x26, x24
    cmp x26, x23
    b.hs next_random
    mov x0, x26
    b have_page
next_strided:
    mov x0, x26                     // current p, then p += stride; wrap to ++s
    ldr x9, [x19, #P_STRIDE]
    add x9, x26, x9
    cmp x9, x23
    b.lo 3f
    add x27, x27, #1
    mov x9, x27
3:  mov x26, x9
have_page:
    ldr x9, [x20, #S_FIRST]
    add x0, x0, x9
    bl page_addr
    bl fill_page
    add x22, x22, #1
    b write_loop
read_phase:
    mov x21, #0                     // checksum
    mov x22, #0                     // mismatches
    mov x27, #0                     // k = page being read
    ldr x13, =GOLDEN
    ldr x14, [x19, #P_SEED]
4:  cmp x27, x23
    b.hs done
    ldr x9, [x20, #S_FIRST]
    add x0, x27, x9
    bl page_addr
    add x10, x0, #4096              // end of the page
5:  ldr x11, [x0]
    add x21, x21, x11
    mul x12, x0, x13
    eor x12, x12, x14
    cmp x11, x12
    cinc x22, x22, ne
    add x0, x0, #8
    cmp x0, x10
    b.lo 5b
    add x27, x27, #1
    b 4b
done:
    adr x0, msg_sum
    b finish

    .include "lib.inc"
msg_start: .asciz "memtest: writing pattern\n"
msg_half:  .asciz "memtest: halfway\n"
msg_sum:   .asciz "memtest: checksum 0x"
