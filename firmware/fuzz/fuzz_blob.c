/* fuzz_blob.c - libFuzzer: arbitrary bytes through the blob parser; a blob that parses is then run
   for a few steps (kernels, tokenizer) in a bounded arena, so out-of-bounds reads show up in ASan. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/engine.h"
#include "../core/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 22)) return 0;
    uint8_t *copy = malloc(size + 16); /* aligned, exactly-sized copy: ASan sees any overrun */
    if (!copy) return 0;
    memcpy(copy, data, size);
    tl_blob b;
    const char *msg;
    if (tl_blob_parse(&b, copy, (uint32_t)size, &msg) == TL_OK) {
        uint64_t need = tl_engine_arena_bytes(&b, b.seq_len < 8 ? b.seq_len : 8);
        if (need < (1u << 24)) {
            void *arena = malloc(need);
            tl_engine e;
            if (arena && tl_engine_init(&e, &b, b.seq_len < 8 ? b.seq_len : 8, arena, need, &msg) == TL_OK) {
                uint32_t prompt[2] = {0, b.vocab_size - 1}, tok;
                tl_gen_params p = {0.7f, 3, 0.9f, 1.2f, 1, 3};
                tl_gen_status st;
                if (tl_engine_begin(&e, &p, prompt, 2) == TL_OK)
                    while (tl_engine_next(&e, &tok, &st) == TL_OK && st == TL_GEN_TOKEN) {
                        uint32_t n;
                        tl_engine_last_bytes(&e, &n);
                    }
                uint32_t ids[16], n;
                tl_encode(&e.blob, (const uint8_t *)"hi \xc3\xa9!", 6, 1, ids, 16, &n);
            }
            free(arena);
        }
    }
    free(copy);
    return 0;
}
