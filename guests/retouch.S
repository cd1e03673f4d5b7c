// Long-mode guest, on every vCPU (each its share of the pages), two rounds of: fills the test pages (page_addr), asks the VMM to reclaim it (port 0xf5: the
// library depopulates it and the memfd pages are punched), then reads it again: every
// qword must be zero (fresh frames on the second touch). Exit 0 if so, 1 otherwise.
    .code64
    .include "defs.inc"
    .text
    HEADER 64
entry:
    call vcpu_setup
    call enter_user
    mov P_SIZE(%r15), %rax
    shr $12, %rax
    call vcpu_split                 // each vCPU its own share, whatever the mode
    mov %rax, %r12                  // n = this vCPU's pages
    xor %r10, %r10                  // non-zero qwords, over both rounds
    xor %r8, %r8                    // checksum of what is read
    mov $2, %r14                    // rounds: a second reclaim must work like the first
round:
    xor %r13, %r13                  // k
1:  cmp %r12, %r13
    jae 2f
    mov %r13, %rax
    add S_FIRST(%rbp), %rax
    call page_addr
    mov %rax, %rdi
    call fill_page
    inc %r13
    jmp 1b
2:  out %al, $RECLAIM
    xor %r13, %r13
3:  cmp %r12, %r13
    jae 5f
    mov %r13, %rax
    add S_FIRST(%rbp), %rax
    call page_addr
    mov %rax, %rdi
    lea 4096(%rax), %rsi
4:  mov (%rdi), %rax
    add %rax, %r8
    test %rax, %rax
    jz 6f
    inc %r10
6:  add $8, %rdi
    cmp %rsi, %rdi
    jb 4b
    inc %r13
    jmp 3b
5:  dec %r14
    jnz round
    lea msg(%rip), %rsi           // mismatches = non-zero qwords
    jmp finish

    .include "lib.inc"
msg:    .asciz "retouch: after reclaim, checksum 0x"
