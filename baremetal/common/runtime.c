// The few C symbols Embedded Swift needs on bare metal: memory functions, a bump heap,
// putchar (through the platform's uart_putc), and the frame pool for the HAL.
#include <stddef.h>
#include <stdint.h>

void uart_putc(char c);

void *memset(void *d, int c, size_t n) {
    unsigned char *p = d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--) *p++ = *q++;
    return d;
}
void *memmove(void *d, const void *s, size_t n) {
    unsigned char *p = d;
    const unsigned char *q = s;
    if (p < q) { while (n--) *p++ = *q++; }
    else { p += n; q += n; while (n--) *--p = *--q; }
    return d;
}
int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *p = a, *q = b;
    for (; n; n--, p++, q++) if (*p != *q) return *p - *q;
    return 0;
}
size_t strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

// Heap for Swift's arrays and objects: a bump allocator; free() only reclaims the most
// recent block. Enough for a hypervisor that runs a fixed script of cases.
static uint8_t heap[2 << 20] __attribute__((aligned(16)));
static size_t heap_used, last_block;
int posix_memalign(void **out, size_t align, size_t size) {
    if (align < 16) align = 16;
    size_t start = (heap_used + align - 1) & ~(align - 1);
    if (start + size > sizeof heap) return 12;  // ENOMEM
    last_block = start;
    heap_used = start + size;
    *out = heap + start;
    return 0;
}
void *malloc(size_t size) { void *p; return posix_memalign(&p, 16, size) ? 0 : p; }
void free(void *p) { if (p == heap + last_block) heap_used = last_block; }
void arc4random_buf(void *buf, size_t n) { memset(buf, 0x5a, n); }

int putchar(int c) {
    if (c == '\n') uart_putc('\r');
    uart_putc((char)c);
    return c;
}

// Frames for the HAL (guest memory and page tables), 16 KiB aligned for Sv39x4 roots.
static uint8_t frame_pool[8 << 20] __attribute__((aligned(16384)));
void *pool_base(void) { return frame_pool; }
uint64_t pool_size(void) { return sizeof frame_pool; }
