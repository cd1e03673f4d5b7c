// x86_64 bare-metal start-up for the AMD SVM hypervisor: a multiboot (v1, a.out kludge)
// flat binary entered by QEMU in 32-bit protected mode, paging off. Builds an identity map
// of the first 4 GiB with 2 MiB pages, enables long mode (EFER.LME, NXE for the NX bit of
// the nested tables), SSE for compiled code, and calls hv_main in 64-bit mode.
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010000            // addresses below are valid (a.out kludge)
    .section .text.boot, "ax"
    .code32
    .globl _start
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header                      // header_addr
    .long __image_start                  // load_addr
    .long 0                              // load_end_addr: the whole file
    .long __bss_end                      // bss_end_addr: QEMU zeroes up to here
    .long _start                         // entry_addr
_start:
    mov $__stack_top, %esp
    // PML4[0] -> PDPT; PDPT[0..3] -> PD0..3; PD entries: 2 MiB pages, P|RW|PS.
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $3, %eax
    xor %ecx, %ecx
1:  mov %eax, boot_pdpt(, %ecx, 8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jb 1b
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(, %ecx, 8)
    mov %ecx, %eax
    shr $11, %eax                        // high dword of (i << 21)
    mov %eax, boot_pd + 4(, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jb 2b
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0x620, %eax                     // CR4: PAE, OSFXSR, OSXMMEXCPT
    mov %eax, %cr4
    mov $0xC0000080, %ecx                // EFER: LME | NXE
    rdmsr
    or $0x900, %eax
    wrmsr
    mov $0x80000033, %eax                // CR0: PG | NE | ET | MP | PE
    mov %eax, %cr0
    lgdt gdt_ptr
    ljmp $0x08, $long_mode

    .code64
long_mode:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $__stack_top, %rsp
    call hv_main
3:  hlt
    jmp 3b

    .balign 8
gdt:
    .quad 0
    .quad 0x00af9b000000ffff             // 0x08: 64-bit code
    .quad 0x00cf93000000ffff             // 0x10: data
gdt_ptr:
    .word gdt_ptr - gdt - 1
    .long gdt

    .text
    .code64
// svm_run(vmcb_pa, regs): runs the guest until #VMEXIT. regs[0..14] hold the guest's
// rbx rcx rdx rsi rdi rbp r8..r15 (rax, rsp, rip live in the VMCB); VMRUN itself saves and
// restores only the host's rax, rsp and rip, so the other registers are swapped here.
    .globl svm_run, svm_enable, svm_outb
svm_run:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    push %rsi
    mov %rdi, %rax
    mov 0(%rsi), %rbx
    mov 8(%rsi), %rcx
    mov 16(%rsi), %rdx
    mov 32(%rsi), %rdi
    mov 40(%rsi), %rbp
    mov 48(%rsi), %r8
    mov 56(%rsi), %r9
    mov 64(%rsi), %r10
    mov 72(%rsi), %r11
    mov 80(%rsi), %r12
    mov 88(%rsi), %r13
    mov 96(%rsi), %r14
    mov 104(%rsi), %r15
    mov 24(%rsi), %rsi
    vmrun %rax
    push %rsi
    mov 8(%rsp), %rsi
    mov %rbx, 0(%rsi)
    mov %rcx, 8(%rsi)
    mov %rdx, 16(%rsi)
    mov %rdi, 32(%rsi)
    mov %rbp, 40(%rsi)
    mov %r8, 48(%rsi)
    mov %r9, 56(%rsi)
    mov %r10, 64(%rsi)
    mov %r11, 72(%rsi)
    mov %r12, 80(%rsi)
    mov %r13, 88(%rsi)
    mov %r14, 96(%rsi)
    mov %r15, 104(%rsi)
    pop %rax
    mov %rax, 24(%rsi)
    add $8, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
// svm_enable(hsave_pa): EFER.SVME, VM_HSAVE_PA.
svm_enable:
    mov %rdi, %r8
    mov $0xC0000080, %ecx
    rdmsr
    or $0x1000, %eax
    wrmsr
    mov $0xC0010117, %ecx
    mov %r8, %rax
    mov %r8, %rdx
    shr $32, %rdx
    wrmsr
    ret
// svm_outb(port, value)
svm_outb:
    mov %esi, %eax
    mov %edi, %edx
    out %al, %dx
    ret

// ---------------------------------------------------------------------------------------
// The guest: 32-bit protected mode, paging off, so every address is a GPA that the nested
// tables translate. Hypercall: vmmcall with eax = 1 "case done", ebx = case, ecx = result.
    .section .guest, "ax"
    .code32
    .balign 4096
    .globl guest_start, guest_end
guest_start:
    mov $0x41000000, %esi               // 1: fill the lazy area, checksum it
    call fill_sum
    mov $1, %ebx
    call done
    mov $0x42000000, %esi               // 2: the populated area
    call fill_sum
    mov $2, %ebx
    call done
    mov $0x43000000, %edi               // 3: write code into a lazy page, run it
    movl $0x00002ab8, (%edi)            // b8 2a 00 00 | 00 c3: mov $42, %eax; ret
    movw $0xc300, 4(%edi)
    call *%edi
    mov %eax, %ecx
    mov $3, %ebx
    call done
    mov $0x44000000, %edi               // 4: read, then write the read-only area
    mov (%edi), %ecx
    .byte 0x89, 0x07                    // mov %eax, (%edi): 2 bytes, skipped by the hypervisor
    mov $4, %ebx
    call done
    xor %ecx, %ecx                      // 5: jump into the non-executable area; esi = where to come back
    mov $0x45000000, %edi
    call 4f                             // esi = address of 1f, position-independent:
4:  pop %esi                            // the guest runs at GPA 0x40000000, not where it is linked
    add $(1f - 4b), %esi
    jmp *%edi
1:  mov $5, %ebx
    call done
    mov $0x48000000, %edi               // 6: read outside every area
    mov (%edi), %ecx
    mov $6, %ebx
    call done
    jmp .

// fill_sum(esi = base): 1 MiB of dwords (addr * 0x9e3779b9) ^ 1, then ecx = their 32-bit sum
fill_sum:
    mov %esi, %edi
    lea 0x100000(%esi), %ebp
2:  mov %edi, %eax
    imul $0x9e3779b9, %eax, %eax
    xor $1, %eax
    mov %eax, (%edi)
    add $4, %edi
    cmp %ebp, %edi
    jb 2b
    xor %ecx, %ecx
    mov %esi, %edi
3:  add (%edi), %ecx
    add $4, %edi
    cmp %ebp, %edi
    jb 3b
    ret

done:
    mov $1, %eax
    vmmcall
    ret
    .balign 4096
guest_end:
