// Long-mode guest, run by every vCPU: writes a pattern over its test pages (split mode:
// its share; overlap mode: all of them; page k at page_addr(k)) in the order the VMM chose (0 sequential, 1 random permutation, 2 strided), reads them all back
// in page order, stores the checksum and mismatch count in the parameter page and exits
// with 0 (all matched) or 1. Built twice: memtest.bin drops to CPL 3 for its loops (fast
// on kvm_pvm, which emulates guest kernel mode), memtest-kernel.bin (-DKERNEL_MODE) stays
// at CPL 0, as real kernels run.
    .code64
    .include "defs.inc"
    .text
    HEADER 64
entry:
    call vcpu_setup                 // r15 = parameter page, rbp = this vCPU's slot
#ifndef KERNEL_MODE
    call enter_user
#endif
    cmpq $0, S_INDEX(%rbp)
    jne 0f
    lea msg_start(%rip), %rsi
    call puts
0:  mov P_SIZE(%r15), %rax
    shr $12, %rax
    call vcpu_share                 // this vCPU's pages, from S_FIRST(%rbp)
    mov %rax, %r9                   // n = pages
    mov %r9, S_PAGES(%rbp)
    // M = next power of two >= n, for the random permutation x' = (5x + c) mod M
    mov $1, %r13
1:  cmp %r9, %r13
    jae 2f
    shl $1, %r13
    jmp 1b
2:  dec %r13                        // r13 = M - 1 (mask)
    mov P_SEED(%r15), %r14          // c = seed + 2 * index: each vCPU its own order
    mov S_INDEX(%rbp), %rax
    lea (%r14, %rax, 2), %r14
    or $1, %r14                     // c odd: full period (Hull-Dobell)
    xor %r10, %r10                  // k = pages written
    xor %r11, %r11                  // random state x / strided page p
    xor %r12, %r12                  // strided start s
    mov P_ORDER(%r15), %rbx
write_loop:
    cmp %r9, %r10
    jae read_phase
    cmpq $0, S_INDEX(%rbp)          // vCPU 0 announces the half-way point of its writes
    jne 7f                          // (a place to take a snapshot: --snapshot-on halfway)
    mov %r9, %rax
    shr $1, %rax
    cmp %rax, %r10
    jne 7f
    lea msg_half(%rip), %rsi
    call puts
7:
    cmp $1, %rbx
    je next_random
    cmp $2, %rbx
    je next_strided
    mov %r10, %rax                  // sequential: page k
    jmp have_page
next_random:
    lea (%r11, %r11, 4), %r11       // x = 5x + c mod M, skipping values >= n
    add %r14, %r11
    and %r13, %r11
    cmp %r9, %r11
    jae next_random
    mov %r11, %rax
    jmp have_page
next_strided:
    mov %r11, %rax                  // current p, then p += stride; wrap to ++s
    mov %r11, %rcx
    add P_STRIDE(%r15), %rcx
    cmp %r9, %rcx
    jb 3f
    inc %r12
    mov %r12, %rcx
3:  mov %rcx, %r11
have_page:
    add S_FIRST(%rbp), %rax
    call page_addr
    mov %rax, %rdi
    call fill_page
    inc %r10
    jmp write_loop
read_phase:
    xor %r8, %r8                    // checksum
    xor %r10, %r10                  // mismatches
    xor %r12, %r12                  // k = page being read
    movabs $GOLDEN, %rcx
4:  cmp %r9, %r12
    jae done
    mov %r12, %rax
    add S_FIRST(%rbp), %rax
    call page_addr
    mov %rax, %rdi
    lea 4096(%rax), %rsi            // end of the page
5:  mov (%rdi), %rax
    add %rax, %r8
    mov %rdi, %rdx
    imul %rcx, %rdx
    xor P_SEED(%r15), %rdx
    cmp %rdx, %rax
    je 6f
    inc %r10
6:  add $8, %rdi
    cmp %rsi, %rdi
    jb 5b
    inc %r12
    jmp 4b
done:
    lea msg_sum(%rip), %rsi
    jmp finish

    .include "lib.inc"
msg_start: .asciz "memtest: writing pattern\n"
msg_half:  .asciz "memtest: halfway\n"
msg_sum:   .asciz "memtest: checksum 0x"
