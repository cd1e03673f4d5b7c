#include <stdint.h>
/// Reference 4-level EPT walk: translates `gpa` through the tables at `root` (host-physical)
/// where host-physical `pa` lives at `base + pa`. Returns 0 if not mapped.
uint64_t cwalker_translate(const uint8_t *base, uint64_t root, uint64_t gpa);
/// Zeroes 4 KiB at `p` with non-temporal 16-byte stores (no read-for-ownership, no cache
/// pollution). The stores are weakly ordered: call `cwalker_store_fence` before anything
/// else may see the frame (once per batch of frames).
void cwalker_zero_frame_nt(void *p);
void cwalker_store_fence(void);
/// Reference fault path: maps the 4 KiB page `gpa` read/write/execute (WB) in the 4-level
/// EPT at `root`, creating zeroed tables on the way; frames come from the bump pointer
/// `*bump` (growing up), tables from `*tables` (growing down), as ArenaHAL does. Returns
/// the frame, or 0 if already mapped. `zeroing`: 0 none, 1 memset, 2 non-temporal stores
/// with a store fence every 32 frames (ArenaHAL's three modes).
/// What the Rust crate's `handle_page_fault` does, minus its area lookup.
uint64_t cwalker_populate(uint8_t *base, uint64_t root, uint64_t gpa, uint64_t *bump, uint64_t *tables,
                          int zeroing);
/// Reference unmap of everything below the 4-level EPT root `root`: clears every present
/// entry and pushes each leaf's frame and each emptied table onto the free stack
/// `free_slots[*free_count…]` (ArenaHAL's free list).
void cwalker_unmap_all(uint8_t *base, uint64_t root, uint64_t *free_slots, int64_t *free_count);
