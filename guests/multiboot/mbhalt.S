// A multiboot v1 kernel that halts for good at once (interrupts off, no other CPU started):
// axvm ends the run with status 4 (`HaltWatch`) instead of waiting for the timeout
// (Tests/AxVMMTests/MultibootTests.swift). Built into guests/build/multiboot-halt.elf.
        .code32
        .section .text
        .globl start
        .align 4
        .long 0x1BADB002, 0, -0x1BADB002  // multiboot header: magic, no flags, checksum
start:
        cli
1:      hlt
        jmp 1b
