/* sampler.h - next-token choice exactly per BLOB.md "Sampler" (xorshift64*, repetition penalty,
   temperature, top-k, top-p; ties broken by the lower token id). */
#ifndef TL_SAMPLER_H
#define TL_SAMPLER_H

#include <stdint.h>

typedef struct {
    float prob;
    uint32_t index;
} tl_probindex; /* 8 bytes: the sampler's scratch is 8 * vocab bytes */

typedef struct {
    uint32_t vocab;
    tl_probindex *scratch; /* [vocab], from the engine arena */
    float temperature;     /* 0 = greedy */
    uint32_t topk;         /* 0 or >= vocab = off */
    float topp;            /* <= 0 or >= 1 = off */
    float rep;             /* 1 = off */
    uint64_t rng;          /* xorshift64* state */
} tl_sampler;

void tl_rng_seed(uint64_t *state, uint64_t seed);
uint32_t tl_rng_u32(uint64_t *state);
float tl_rng_f32(uint64_t *state);

void tl_sampler_init(tl_sampler *s, tl_probindex *scratch, uint32_t vocab);
void tl_sampler_configure(tl_sampler *s, float temperature, uint32_t topk, float topp, float rep,
                          uint64_t seed);

/* Applies the repetition penalty (once per distinct id in history[0..n_history)) and picks the
   next token. logits[vocab] is modified in place. */
uint32_t tl_sample(tl_sampler *s, float *logits, const uint32_t *history, uint32_t n_history);

#endif
