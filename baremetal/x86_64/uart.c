#include <stdint.h>
void svm_outb(uint32_t port, uint32_t value);
// COM1 transmit register.
void uart_putc(char c) { svm_outb(0x3f8, (uint8_t)c); }

extern char guest_start[], guest_end[];
uint64_t guest_code_start(void) { return (uint64_t)guest_start; }
uint64_t guest_code_end(void) { return (uint64_t)guest_end; }
// QEMU isa-debug-exit at port 0xf4: the exit status is (value << 1) | 1.
void qemu_exit(uint32_t value) { svm_outb(0xf4, value); for (;;) {} }
