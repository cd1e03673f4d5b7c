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

// Heap for Swift's arrays, strings and objects: power-of-two size classes with free lists,
// carved from a static arena. Each block keeps its class and start just below the pointer
// handed out, so free() can return it to its list whatever alignment was asked for.
static uint8_t heap[2 << 20] __attribute__((aligned(16)));
static size_t heap_used;
static void *free_lists[48];

int posix_memalign(void **out, size_t align, size_t size) {
    if (align < 16) align = 16;
    size_t need = size + 16 + (align > 16 ? align : 0);
    unsigned cls = 5;
    while (((size_t)1 << cls) < need) cls++;
    if (cls >= 48) return 12;  // ENOMEM
    uint8_t *block = free_lists[cls];
    if (block) {
        free_lists[cls] = *(void **)block;
    } else {
        if (heap_used + ((size_t)1 << cls) > sizeof heap) return 12;
        block = heap + heap_used;
        heap_used += (size_t)1 << cls;
    }
    uintptr_t p = ((uintptr_t)block + 16 + align - 1) & ~(uintptr_t)(align - 1);
    ((uint64_t *)p)[-2] = cls;
    ((void **)p)[-1] = block;
    *out = (void *)p;
    return 0;
}
void *malloc(size_t size) { void *p; return posix_memalign(&p, 16, size) ? 0 : p; }
void free(void *p) {
    if (!p) return;
    unsigned cls = (unsigned)((uint64_t *)p)[-2];
    void *block = ((void **)p)[-1];
    *(void **)block = free_lists[cls];
    free_lists[cls] = block;
}
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
