#include <stdint.h>
// 16550 transmit register of QEMU virt; volatile so every byte reaches the device.
void uart_putc(char c) { *(volatile uint8_t *)0x10000000 = (uint8_t)c; }

extern char guest_start[], guest_end[];
uint64_t guest_code_start(void) { return (uint64_t)guest_start; }
uint64_t guest_code_end(void) { return (uint64_t)guest_end; }
