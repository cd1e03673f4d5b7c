#include <stdint.h>
// PL011 data register of QEMU virt; volatile so every byte reaches the device.
void uart_putc(char c) { *(volatile uint32_t *)0x09000000 = (uint32_t)(unsigned char)c; }

// Bounds of the guest program (start.S), for the linear mapping of its code.
extern char guest_start[], guest_end[];
uint64_t guest_code_start(void) { return (uint64_t)guest_start; }
uint64_t guest_code_end(void) { return (uint64_t)guest_end; }
