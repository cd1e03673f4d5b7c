// AArch64 EL2 start-up, exception vectors and the EL1 guest program.
// QEMU -M virt,virtualization=on enters the ELF at EL2 with the MMU off.
    .section .text.boot, "ax"
    .globl _start
_start:
    ldr x0, =__stack_top
    mov sp, x0
    adr x0, vectors
    msr vbar_el2, x0
    mov x0, #0x33ff                 // CPTR_EL2: RES1 bits, no FP/SIMD trap at EL2
    msr cptr_el2, x0
    isb
    ldr x0, =__bss_start
    ldr x1, =__bss_end
1:  cmp x0, x1
    b.hs 2f
    str xzr, [x0], #8
    b 1b
2:  bl hv_main
3:  wfe
    b 3b

    .text
// System-register access for the Swift side (Embedded Swift has no inline assembly).
    .globl write_vtcr_el2, write_vttbr_el2, write_hcr_el2, tlbi_ipas2e1is, tlbi_vmalls12e1is, enter_guest
write_vtcr_el2:  msr vtcr_el2, x0;  isb; ret
write_vttbr_el2: msr vttbr_el2, x0; isb; ret
write_hcr_el2:   msr hcr_el2, x0;   isb; ret
// Stage 2 invalidation by IPA (Xt = IPA >> 12), then the combined stage 1+2 entries,
// which are not tagged by IPA (Arm ARM D8.13).
tlbi_ipas2e1is:
    dsb ishst
    tlbi ipas2e1is, x0
    dsb ish
    tlbi vmalle1is
    dsb ish
    isb
    ret
tlbi_vmalls12e1is:
    dsb ishst
    tlbi vmalls12e1is
    dsb ish
    isb
    ret
// enter_guest(entry, sp): EL1h, interrupts masked, MMU off at EL1.
enter_guest:
    msr elr_el2, x0
    msr sp_el1, x1
    mov x2, #0x3c5
    msr spsr_el2, x2
    ldr x2, =0x30d00800             // SCTLR_EL1: RES1 bits, M = C = I = 0
    msr sctlr_el1, x2
    isb
    eret

// Vectors: only "synchronous from a lower EL (AArch64)" is expected; anything else is fatal.
    .balign 0x800
vectors:
    .rept 8
    .balign 0x80
    b unexpected
    .endr
    .balign 0x80
    b lower_sync                     // 0x400
    .rept 7
    .balign 0x80
    b unexpected
    .endr

// Trap frame: x0..x30 at 0..240, ESR 248, FAR 256, HPFAR 264, ELR 272.
lower_sync:
    sub sp, sp, #288
    stp x0, x1, [sp, #0]
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    str x30, [sp, #240]
    mrs x0, esr_el2
    mrs x1, far_el2
    stp x0, x1, [sp, #248]
    mrs x0, hpfar_el2
    mrs x1, elr_el2
    stp x0, x1, [sp, #264]
    mov x0, sp
    bl hv_trap
    ldr x1, [sp, #272]
    msr elr_el2, x1
    ldp x0, x1, [sp, #0]
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    ldr x30, [sp, #240]
    add sp, sp, #288
    eret

unexpected:
    mrs x0, esr_el2
    mrs x1, elr_el2
    bl hv_unexpected
    b .

// Semihosting SYS_EXIT with ADP_Stopped_ApplicationExit and a status (x0 = 0x18).
    .globl semihost_exit
semihost_exit:
    sub sp, sp, #16
    mov x1, #0x26
    movk x1, #2, lsl #16            // 0x20026
    stp x1, x0, [sp]
    mov x0, #0x18
    mov x1, sp
    hlt #0xf000
    b .

// ---------------------------------------------------------------------------------------
// The EL1 guest: runs with its MMU off, so every access is an IPA translated by stage 2.
// Hypercalls: hvc #0 with x0 = 1 "case done" (x1 case, x2 result).
    .section .guest, "ax"
    .balign 4096
    .globl guest_start, guest_end
guest_start:
    // 1: fill the lazy area (1 MiB at 0x41000000) and checksum it
    mov x0, #0x41000000
    mov x1, #0x100000
    bl fill_sum
    mov x1, #1
    bl done
    // 2: the same over the populated area at 0x42000000
    mov x0, #0x42000000
    mov x1, #0x100000
    bl fill_sum
    mov x1, #2
    bl done
    // 3: write code into the lazy executable page at 0x43000000, run it
    mov x9, #0x43000000
    ldr w10, =0xd2800540            // movz x0, #42
    str w10, [x9]
    ldr w10, =0xd65f03c0            // ret
    str w10, [x9, #4]
    dsb sy
    ic iallu
    dsb sy
    isb
    blr x9
    mov x2, x0
    mov x1, #3
    bl done
    // 4: write to the read-only area at 0x44000000 (the hypervisor skips the store)
    mov x9, #0x44000000
    ldr x2, [x9]                    // reading is allowed
    str x9, [x9]
    mov x1, #4
    bl done
    // 5: call into the non-executable area at 0x45000000 (the hypervisor returns to lr)
    mov x2, #0
    mov x9, #0x45000000
    blr x9
    mov x1, #5
    bl done
    // 6: read outside every area: the hypervisor stops the guest
    mov x9, #0x48000000
    ldr x2, [x9]
    mov x1, #6
    bl done
    b .

// fill_sum(x0 = base, x1 = size) -> x2 = sum of (addr * golden) ^ 1 written then read back
fill_sum:
    ldr x5, =0x9e3779b97f4a7c15
    add x3, x0, x1
    mov x4, x0
1:  mul x6, x4, x5
    eor x6, x6, #1
    str x6, [x4], #8
    cmp x4, x3
    b.lo 1b
    mov x2, #0
    mov x4, x0
2:  ldr x6, [x4], #8
    add x2, x2, x6
    cmp x4, x3
    b.lo 2b
    ret

done:
    mov x0, #1
    hvc #0
    ret
    .ltorg
    .balign 4096
guest_end:
