#include <stdint.h>
/// Reference 4-level EPT walk: translates `gpa` through the tables at `root` (host-physical)
/// where host-physical `pa` lives at `base + pa`. Returns 0 if not mapped.
uint64_t cwalker_translate(const uint8_t *base, uint64_t root, uint64_t gpa);
/// Zeroes 4 KiB at `p` with non-temporal 16-byte stores (no read-for-ownership, no cache
/// pollution): how a HAL may zero frames "with the widest stores the machine has".
void cwalker_zero_frame_nt(void *p);
