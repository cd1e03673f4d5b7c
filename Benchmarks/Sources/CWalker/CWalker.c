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
}

void cwalker_store_fence(void) { _mm_sfence(); }

#include <string.h>
uint64_t cwalker_populate(uint8_t *base, uint64_t root, uint64_t gpa, uint64_t *bump, uint64_t *tables,
                          int zeroing) {
    /* Tables come from *tables, growing down; frames from *bump, growing up. */
    const uint64_t mask = 0x000ffffffffff000ULL;
    uint64_t table = root;
    for (int level = 0; level < 3; level++) {
        uint64_t *t = (uint64_t *)(base + table);
        uint64_t *slot = &t[(gpa >> (39 - 9 * level)) & 511];
        uint64_t e = *slot;
        if (!(e & 7)) {
            *tables -= 4096;
            uint64_t pa = *tables;
            memset(base + pa, 0, 4096);
            e = pa | 7;
            *slot = e;
        } else if (e & 0x80) {
            return 0;
        }
        table = e & mask;
    }
    uint64_t *slot = &((uint64_t *)(base + table))[(gpa >> 12) & 511];
    if (*slot & 7) return 0;
    uint64_t pa = *bump;
    *bump += 4096;
    if (zeroing == 1) {
        memset(base + pa, 0, 4096);
    } else if (zeroing == 2) {
        cwalker_zero_frame_nt(base + pa);
        if ((pa >> 12) % 32 == 31) cwalker_store_fence();  /* one fence per 32 frames */
    }
    *slot = pa | 7 | (6 << 3);
    return pa;
}

static void unmap_level(uint8_t *base, uint64_t table, int level, uint64_t *free_slots, int64_t *free_count) {
    const uint64_t mask = 0x000ffffffffff000ULL;
    uint64_t *t = (uint64_t *)(base + table);
    for (int i = 0; i < 512; i++) {
        uint64_t e = t[i];
        if (!(e & 7)) continue;
        t[i] = 0;
        if (level < 3 && !(e & 0x80)) unmap_level(base, e & mask, level + 1, free_slots, free_count);
        free_slots[(*free_count)++] = e & mask;  /* the frame, or the emptied table */
    }
}

void cwalker_unmap_all(uint8_t *base, uint64_t root, uint64_t *free_slots, int64_t *free_count) {
    unmap_level(base, root, 0, free_slots, free_count);
}
