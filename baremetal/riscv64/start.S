// RISC-V HS-mode start-up, trap entry and the VS-mode guest. OpenSBI enters at 0x80200000
// in HS-mode (S-mode with the H extension), a0 = hart id.
    .option norvc
    .section .text.boot, "ax"
    .globl _start
_start:
    la sp, __stack_top
    la t0, trap_entry
    csrw stvec, t0
    la t0, __trap_stack_top
    csrw sscratch, t0
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  call hv_main
3:  wfi
    j 3b

    .text
    .globl write_hgatp, hfence_gvma, hfence_gvma_all, enter_guest, sbi_shutdown
write_hgatp:
    csrw hgatp, a0
    hfence.gvma zero, zero
    ret
// HFENCE.GVMA rs1 = GPA >> 2, rs2 = VMID.
hfence_gvma:
    hfence.gvma a0, a1
    ret
hfence_gvma_all:
    hfence.gvma zero, a0
    ret
// enter_guest(entry): VS-mode (hstatus.SPV = 1, sstatus.SPP = 1), guest MMU off (vsatp = 0).
enter_guest:
    csrw sepc, a0
    csrw vsatp, zero
    li t0, 1 << 7                   // hstatus.SPV
    csrs hstatus, t0
    li t0, 1 << 8                   // sstatus.SPP
    csrs sstatus, t0
    li t0, 1 << 1                   // sstatus.SIE off
    csrc sstatus, t0
    sret
// SBI system reset (SRST): a0 = 0 shutdown, a1 = reason (0 none, 1 failure).
sbi_shutdown:
    mv a1, a0
    li a0, 0
    li a6, 0
    li a7, 0x53525354
    ecall
    j .

// Trap frame on the trap stack: x1..x31 at 8..248, scause 256, stval 264, htval 272, sepc 280.
    .balign 4
trap_entry:
    csrrw sp, sscratch, sp
    addi sp, sp, -288
    sd x1, 8(sp)
    sd x3, 24(sp)
    sd x4, 32(sp)
    sd x5, 40(sp)
    sd x6, 48(sp)
    sd x7, 56(sp)
    sd x8, 64(sp)
    sd x9, 72(sp)
    sd x10, 80(sp)
    sd x11, 88(sp)
    sd x12, 96(sp)
    sd x13, 104(sp)
    sd x14, 112(sp)
    sd x15, 120(sp)
    sd x16, 128(sp)
    sd x17, 136(sp)
    sd x18, 144(sp)
    sd x19, 152(sp)
    sd x20, 160(sp)
    sd x21, 168(sp)
    sd x22, 176(sp)
    sd x23, 184(sp)
    sd x24, 192(sp)
    sd x25, 200(sp)
    sd x26, 208(sp)
    sd x27, 216(sp)
    sd x28, 224(sp)
    sd x29, 232(sp)
    sd x30, 240(sp)
    sd x31, 248(sp)
    csrr t0, sscratch               // the guest's sp
    sd t0, 16(sp)
    csrr t0, scause
    sd t0, 256(sp)
    csrr t0, stval
    sd t0, 264(sp)
    csrr t0, htval
    sd t0, 272(sp)
    csrr t0, sepc
    sd t0, 280(sp)
    mv a0, sp
    call hv_trap
    ld t0, 280(sp)
    csrw sepc, t0
    ld t0, 16(sp)
    csrw sscratch, t0
    ld x1, 8(sp)
    ld x3, 24(sp)
    ld x4, 32(sp)
    ld x5, 40(sp)
    ld x6, 48(sp)
    ld x7, 56(sp)
    ld x8, 64(sp)
    ld x9, 72(sp)
    ld x10, 80(sp)
    ld x11, 88(sp)
    ld x12, 96(sp)
    ld x13, 104(sp)
    ld x14, 112(sp)
    ld x15, 120(sp)
    ld x16, 128(sp)
    ld x17, 136(sp)
    ld x18, 144(sp)
    ld x19, 152(sp)
    ld x20, 160(sp)
    ld x21, 168(sp)
    ld x22, 176(sp)
    ld x23, 184(sp)
    ld x24, 192(sp)
    ld x25, 200(sp)
    ld x26, 208(sp)
    ld x27, 216(sp)
    ld x28, 224(sp)
    ld x29, 232(sp)
    ld x30, 240(sp)
    ld x31, 248(sp)
    addi sp, sp, 288
    csrrw sp, sscratch, sp          // sscratch = trap stack again, sp = guest sp
    sret

// ---------------------------------------------------------------------------------------
// The VS-mode guest (vsatp = 0: guest physical = guest virtual). Hypercall: ecall with
// a0 = 1 "case done", a1 = case, a2 = result.
    .section .guest, "ax"
    .balign 4096
    .globl guest_start, guest_end
guest_start:
    li a0, 0x41000000               // 1: fill the lazy area and checksum it
    li a1, 0x100000
    jal fill_sum
    li a1, 1
    jal done
    li a0, 0x42000000               // 2: the populated area
    li a1, 0x100000
    jal fill_sum
    li a1, 2
    jal done
    li t1, 0x43000000               // 3: write code into a lazy page and run it
    li t2, 0x02a00513               // addi a0, zero, 42
    sw t2, 0(t1)
    li t2, 0x00008067               // ret
    sw t2, 4(t1)
    fence.i
    jalr ra, 0(t1)
    mv a2, a0
    li a1, 3
    jal done
    li t1, 0x44000000               // 4: read, then write the read-only area
    ld a2, 0(t1)
    sd t1, 0(t1)
    li a1, 4
    jal done
    li a2, 0                        // 5: call into the non-executable area
    li t1, 0x45000000
    jalr ra, 0(t1)
    li a1, 5
    jal done
    li t1, 0x48000000               // 6: read outside every area
    ld a2, 0(t1)
    li a1, 6
    jal done
    j .

// fill_sum(a0 = base, a1 = size) -> a2 = sum of (addr * golden) ^ 1 written then read back
fill_sum:
    li t5, 0x9e3779b97f4a7c15
    add t3, a0, a1
    mv t4, a0
1:  mul t6, t4, t5
    xori t6, t6, 1
    sd t6, 0(t4)
    addi t4, t4, 8
    bltu t4, t3, 1b
    li a2, 0
    mv t4, a0
2:  ld t6, 0(t4)
    add a2, a2, t6
    addi t4, t4, 8
    bltu t4, t3, 2b
    ret

done:
    li a0, 1
    ecall
    ret
    .balign 4096
guest_end:
