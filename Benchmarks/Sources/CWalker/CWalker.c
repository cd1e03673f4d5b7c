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
