/* fuzz_protocol.c - libFuzzer: arbitrary bytes into the device's line input (framing, parser,
   every command including uploads), with a small model loaded from TL_FUZZ_BLOB when set. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/device.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    uint8_t *region;   /* the "flash" */
    uint8_t *staging;
    uint32_t cap;
    uint64_t clock;
} fake;

static int f_read(void *ctx) { (void)ctx; return -1; }
static void f_write(void *ctx, const uint8_t *d, uint32_t n) { (void)ctx; (void)d; (void)n; }
static uint64_t f_time(void *ctx) { return ((fake *)ctx)->clock += 7; }
static const uint8_t *f_active(void *ctx) { return ((fake *)ctx)->region; }
static const uint8_t *f_staged(void *ctx) { return ((fake *)ctx)->staging; }
static tl_err f_begin(void *ctx, uint32_t size) { memset(((fake *)ctx)->staging, 0xFF, size); return TL_OK; }
static tl_err f_write_part(void *ctx, uint32_t off, const uint8_t *d, uint32_t n) {
    fake *f = ctx;
    if ((uint64_t)off + n > f->cap) return TL_E_IO;
    memcpy(f->staging + off, d, n);
    return TL_OK;
}
static tl_err f_commit(void *ctx, uint32_t size) {
    fake *f = ctx;
    memcpy(f->region, f->staging, size);
    return TL_OK;
}

#define CAP (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t *model;
    static size_t model_len;
    static int loaded;
    if (!loaded) {
        loaded = 1;
        const char *path = getenv("TL_FUZZ_BLOB");
        FILE *f = path ? fopen(path, "rb") : NULL;
        if (f) {
            model = malloc(CAP);
            model_len = model ? fread(model, 1, CAP, f) : 0;
            fclose(f);
        }
    }
    fake fk = {malloc(CAP), malloc(CAP), CAP, 0};
    static uint8_t arena[1u << 21] __attribute__((aligned(16)));
    static tl_device dev;
    if (!fk.region || !fk.staging) return 0;
    memset(fk.region, 0xFF, 16);
    if (model_len) memcpy(fk.region, model, model_len);
    tl_transport tp = {&fk, f_read, f_write, f_time, NULL, NULL, NULL, NULL};
    tl_partition part = {&fk, CAP, 0, f_active, f_begin, f_write_part, f_staged, f_commit, 0, NULL};
    tl_device_cfg cfg = {"fuzz", 0, 0, 0};
    static tl_regions heap;
    uint32_t arena_size = sizeof arena;
    tl_regions_init(&heap, arena, &arena_size, 1);
    tl_allocator mem = tl_regions_allocator(&heap);
    tl_device_init(&dev, &tp, &part, &cfg, &mem);
    tl_device_boot(&dev);
    for (size_t i = 0; i < size; i++) {
        tl_device_feed(&dev, data[i]);
        if (dev.gen_active && (i & 15) == 0) tl_device_poll(&dev);
    }
    for (int k = 0; k < 8 && dev.gen_active; k++) tl_device_poll(&dev);
    free(fk.region);
    free(fk.staging);
    return 0;
}
