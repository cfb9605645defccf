/* heap.h - where a board's model RAM comes from: an allocator the front end supplies (ESP-IDF:
   heap_caps_malloc; host, rv32, tests: tl_regions below), and the placement of a model's blocks.

   A chip's heap is several separate regions (the ESP32's 8-bit DRAM is four), so its largest block is
   far below its free total. The device asks for the model's blocks largest first, each in one piece,
   and when one does not fit it says which block and how far short the largest free block is. */
#ifndef TL_HEAP_H
#define TL_HEAP_H

#include <stdint.h>

#include "engine.h"
#include "error.h"

typedef struct {
    void *ctx;
    void *(*alloc)(void *ctx, uint32_t bytes);  /* one block, 4-byte aligned, or NULL */
    void (*release_all)(void *ctx);             /* frees every block alloc gave (the model changes) */
    uint32_t (*largest_free)(void *ctx);        /* the largest block alloc could give now */
    uint64_t (*free_bytes)(void *ctx);          /* free heap now, all regions */
} tl_allocator;

/* Allocates the plan's blocks largest first (ties: block order). On failure releases everything,
   sets *failed to the block that did not fit and *largest to the largest free block at that moment. */
tl_err tl_heap_place(const tl_allocator *a, const tl_plan *p, void *blocks[TL_N_BLOCKS], int *failed,
                     uint32_t *largest);

/* --- tl_regions: a heap of a few fixed regions, first fit in region order, freed all at once -------- */

#define TL_MAX_REGIONS 8u

typedef struct {
    uint8_t *base;
    uint32_t size, used;
} tl_region;

typedef struct {
    tl_region r[TL_MAX_REGIONS];
    uint32_t n;
} tl_regions;

/* Carves mem (4-byte aligned) into n <= TL_MAX_REGIONS regions of sizes[i] bytes (rounded down to 4),
   one after another: mem must hold their sum. */
void tl_regions_init(tl_regions *h, uint8_t *mem, const uint32_t *sizes, uint32_t n);
/* The allocator over h (h must outlive it). */
tl_allocator tl_regions_allocator(tl_regions *h);

#endif
