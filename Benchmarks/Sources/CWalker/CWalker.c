#include "CWalker.h"

uint64_t cwalker_translate(const uint8_t *base, uint64_t root, uint64_t gpa) {
    const uint64_t mask = 0x000ffffffffff000ULL;
    uint64_t table = root;
    for (int level = 0; level < 4; level++) {
        int shift = 39 - 9 * level;
        uint64_t e = ((const uint64_t *)(base + table))[(gpa >> shift) & 511];
        if (!(e & 7)) return 0;
        if (level == 3 || (e & 0x80)) {
            uint64_t off = (1ULL << shift) - 1;
            return (e & mask & ~off) | (gpa & off);
        }
        table = e & mask;
    }
    return 0;
}

#include <emmintrin.h>
void cwalker_zero_frame_nt(void *p) {
    __m128i z = _mm_setzero_si128();
    __m128i *q = p;
    for (int i = 0; i < 256; i += 4) {
        _mm_stream_si128(q + i, z);
        _mm_stream_si128(q + i + 1, z);
        _mm_stream_si128(q + i + 2, z);
        _mm_stream_si128(q + i + 3, z);
    }
    _mm_sfence();
}
