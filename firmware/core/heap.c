/* heap.c - placing a model's RAM blocks, and the region heap of boards without an OS allocator. */
#include "heap.h"

#include <stddef.h>

tl_err tl_heap_place(const tl_allocator *a, const tl_plan *p, void *blocks[TL_N_BLOCKS], int *failed,
                     uint32_t *largest) {
    int order[TL_N_BLOCKS], done[TL_N_BLOCKS] = {0};
    for (int i = 0; i < TL_N_BLOCKS; i++) { /* largest first: a small block must not split a big hole */
        int best = -1;
        for (int k = 0; k < TL_N_BLOCKS; k++)
            if (!done[k] && (best < 0 || p->bytes[k] > p->bytes[best])) best = k;
        done[best] = 1;
        order[i] = best;
    }
    for (int k = 0; k < TL_N_BLOCKS; k++) blocks[k] = NULL;
    for (int i = 0; i < TL_N_BLOCKS; i++) {
        int k = order[i];
        if (p->bytes[k] == 0) continue;
        blocks[k] = a->alloc(a->ctx, p->bytes[k]);
        if (!blocks[k]) {
            *failed = k;
            *largest = a->largest_free(a->ctx);
            a->release_all(a->ctx);
            for (int j = 0; j < TL_N_BLOCKS; j++) blocks[j] = NULL;
            return TL_E_NOMEM;
        }
    }
    return TL_OK;
}

void tl_regions_init(tl_regions *h, uint8_t *mem, const uint32_t *sizes, uint32_t n) {
    h->n = n < TL_MAX_REGIONS ? n : TL_MAX_REGIONS;
    for (uint32_t i = 0; i < h->n; i++) {
        h->r[i].base = mem;
        h->r[i].size = sizes[i] & ~3u;
        h->r[i].used = 0;
        mem += h->r[i].size;
    }
}

static void *regions_alloc(void *ctx, uint32_t bytes) {
    tl_regions *h = ctx;
    bytes = (bytes + 3u) & ~3u;
    for (uint32_t i = 0; i < h->n; i++) {
        tl_region *r = &h->r[i];
        if (bytes <= r->size - r->used) {
            void *p = r->base + r->used;
            r->used += bytes;
            return p;
        }
    }
    return NULL;
}

static void regions_release_all(void *ctx) {
    tl_regions *h = ctx;
    for (uint32_t i = 0; i < h->n; i++) h->r[i].used = 0;
}

static uint32_t regions_largest(void *ctx) {
    tl_regions *h = ctx;
    uint32_t best = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (h->r[i].size - h->r[i].used > best) best = h->r[i].size - h->r[i].used;
    return best;
}

static uint64_t regions_free(void *ctx) {
    tl_regions *h = ctx;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < h->n; i++) sum += h->r[i].size - h->r[i].used;
    return sum;
}

tl_allocator tl_regions_allocator(tl_regions *h) {
    tl_allocator a = {h, regions_alloc, regions_release_all, regions_largest, regions_free};
    return a;
}
