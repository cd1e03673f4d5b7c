// A multiboot v1 kernel (ELF32, 32-bit protected mode) that checks what the loader handed
// it and prints it on COM1 for Tests/AxVMMTests/MultibootTests.swift: the bootloader magic
// in EAX, the information block's flags, command line, module and mem_upper, fw_cfg's
// signature and CPU count, and that its BSS (in memory, not in the file) reads as zeros.
// Ends through the isa-debug-exit port: 0 if every check passed, else the failed check's
// number. Built by scripts/build-guests.sh into guests/build/multiboot.elf.
        .code32
        .section .text
        .globl start
        .align 4
header:
        .long 0x1BADB002                 // multiboot header magic
        .long 0x00000003                 // modules page-aligned, memory information
        .long -(0x1BADB002 + 0x00000003) // checksum

start:
        mov $stack_top, %esp
        mov $2, %ecx                     // check 2: the bootloader magic
        cmp $0x2BADB002, %eax
        jne fail
        mov %ebx, %ebp                   // the information block
        mov $msg_magic, %esi
        call puts

        mov $3, %ecx                     // check 3: flags mem (0), cmdline (2), mmap (6)
        mov (%ebp), %eax
        and $0x45, %eax
        cmp $0x45, %eax
        jne fail

        mov $msg_cmdline, %esi           // the command line, between brackets
        call puts
        mov 16(%ebp), %esi
        call puts
        mov $msg_close, %esi
        call puts

        testl $8, (%ebp)                 // a module: its bytes up to the first newline
        jz 2f
        mov $msg_module, %esi
        call puts
        mov 24(%ebp), %edi
        mov (%edi), %esi
        mov 4(%edi), %ebx
1:      cmp %ebx, %esi
        jae 3f
        movb (%esi), %al
        cmp $10, %al
        je 3f
        call putc
        inc %esi
        jmp 1b
3:      mov $msg_close, %esi
        call puts
2:
        mov $msg_upper, %esi             // mem_upper in hex
        call puts
        mov 8(%ebp), %eax
        call puthex
        mov $msg_newline, %esi
        call puts

        mov $msg_fwcfg, %esi             // fw_cfg: the signature, then the CPU count
        call puts
        mov $0x510, %dx
        mov $0x0000, %ax
        outw %ax, %dx
        mov $4, %ecx
4:      mov $0x511, %dx
        inb %dx, %al
        call putc
        loop 4b
        mov $msg_cpus, %esi
        call puts
        mov $0x510, %dx
        mov $0x0005, %ax
        outw %ax, %dx
        mov $0x511, %dx
        inb %dx, %al
        movzbl %al, %eax
        call puthex
        mov $msg_newline, %esi
        call puts

        mov $4, %ecx                     // check 4: the BSS reads as zeros, end to end
        mov $bss_start, %esi
5:      cmpl $0, (%esi)
        jne fail
        add $4096, %esi
        cmp $bss_end, %esi
        jb 5b

        mov $msg_done, %esi
        call puts
        xor %ecx, %ecx
fail:   mov %ecx, %eax
        mov $0xf4, %dx
        outl %eax, %dx
6:      cli
        hlt
        jmp 6b

// putc: %al to COM1 (polling the line status register's THR-empty bit).
putc:   push %edx
        push %eax
        mov $0x3fd, %dx
7:      inb %dx, %al
        test $0x20, %al
        jz 7b
        pop %eax
        mov $0x3f8, %dx
        outb %al, %dx
        pop %edx
        ret

// puts: the NUL-terminated string at %esi (advanced past it).
puts:   push %eax
8:      movb (%esi), %al
        test %al, %al
        jz 9f
        call putc
        inc %esi
        jmp 8b
9:      pop %eax
        ret

// puthex: %eax as 0x and eight hex digits.
puthex: push %ecx
        push %ebx
        mov %eax, %ebx
        mov $'0', %al
        call putc
        mov $'x', %al
        call putc
        mov $8, %ecx
10:     rol $4, %ebx
        mov %bl, %al
        and $0xf, %al
        add $'0', %al
        cmp $'9', %al
        jbe 11f
        add $('a' - '9' - 1), %al
11:     call putc
        loop 10b
        pop %ebx
        pop %ecx
        ret

        .section .rodata
msg_magic:   .asciz "mbcheck: magic ok\n"
msg_cmdline: .asciz "mbcheck: cmdline ["
msg_module:  .asciz "mbcheck: module ["
msg_close:   .asciz "]\n"
msg_upper:   .asciz "mbcheck: mem_upper "
msg_fwcfg:   .asciz "mbcheck: fw_cfg "
msg_cpus:    .asciz " cpus "
msg_newline: .asciz "\n"
msg_done:    .asciz "mbcheck: bss zero, done\n"

        .section .bss
        .align 4096
bss_start:
        .skip 2 << 20                    // 2 MiB of zeros the file does not hold
bss_end:
        .skip 4096
stack_top:
