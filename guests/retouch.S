// Long-mode guest: fills the test region, asks the VMM to reclaim it (port 0xf5: the
// library depopulates it and the memfd pages are punched), then reads it again: every
// qword must be zero (fresh frames on the second touch). Exit 0 if so, 1 otherwise.
    .code64
    .include "defs.inc"
    .text
    HEADER 64
entry:
    mov %rdi, %r15
    call enter_user
    mov P_BASE(%r15), %rbx
    mov P_SIZE(%r15), %r12
    add %rbx, %r12                  // end
    mov %rbx, %r13
1:  cmp %r12, %r13
    jae 2f
    mov %r13, %rdi
    call fill_page
    add $4096, %r13
    jmp 1b
2:  out %al, $RECLAIM
    xor %r10, %r10                  // non-zero qwords
    xor %r8, %r8                    // checksum of what is read
    mov %rbx, %rdi
3:  cmp %r12, %rdi
    jae 5f
    mov (%rdi), %rax
    add %rax, %r8
    test %rax, %rax
    jz 4f
    inc %r10
4:  add $8, %rdi
    jmp 3b
5:  lea msg(%rip), %rsi           // mismatches = non-zero qwords
    jmp finish

    .include "lib.inc"
msg:    .asciz "retouch: after reclaim, checksum 0x"
