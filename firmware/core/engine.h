/* engine.h - a loaded model: the blob read in place + RAM in a few separate blocks (no malloc).

   RAM: tl_engine_ram_needed() is BLOB.md "Runtime RAM" (= engine/config/budget.py runtime_ram) to the
   byte. It is the blocks the engine uses (tl_engine_plan: KV cache, activations, scratch — separate
   allocations, because a chip's heap is split in regions and its largest block is far smaller than
   its free total) plus TL_IO_BUFFER_BYTES, the protocol's line-in and line-out buffers, which the
   protocol device owns (they exist with or without a model). Generation is driven one token at a time
   (the prompt too: tl_engine_prefill) so the caller can poll for STOP and yield to its OS. */
#ifndef TL_ENGINE_H
#define TL_ENGINE_H

#include <stdint.h>

#include "blob.h"
#include "error.h"
#include "gru.h"
#include "kernels.h"
#include "sampler.h"
#include "transformer.h"

#define TL_IO_BUFFER_BYTES 1024u /* protocol line in (512) + line out (512) */

/* The RAM blocks of a model, each one allocation (budget.py BLOCKS names them the same way). */
enum { TL_BLOCK_KV = 0, TL_BLOCK_ACT, TL_BLOCK_SCRATCH, TL_N_BLOCKS };
extern const char *const TL_BLOCK_NAMES[TL_N_BLOCKS]; /* "kv_cache", "activations", "scratch" */

typedef struct {
    uint32_t bytes[TL_N_BLOCKS]; /* each a multiple of 4 (0 = not needed, e.g. a GRU's KV cache) */
} tl_plan;

typedef enum { TL_GEN_TOKEN = 0, TL_GEN_MAX, TL_GEN_EOS, TL_GEN_CTX } tl_gen_status;

typedef struct {
    float temperature; /* 0 = greedy */
    uint32_t topk;     /* 0 = off */
    float topp;        /* 0 or 1 = off */
    float rep;         /* 1 = off */
    uint64_t seed;
    uint32_t max_new;  /* tokens to generate */
} tl_gen_params;

typedef struct {
    tl_blob blob;          /* parsed header + in-place pointers */
    uint32_t ctx;          /* context in use (<= seq_len for a transformer) */
    uint32_t arena_bytes;  /* bytes carved from the arena */
    tl_qvec qv;            /* activation quantization scratch (int8 / ternary blobs) */
    tl_qvec *qvp;          /* &qv, or NULL for f32 blobs */
    tl_transformer tf;
    tl_gru gru;
    float *logits;         /* [vocab] */
    tl_sampler sampler;
    uint32_t *tokens;      /* [ctx] prompt + generated ids */
    uint32_t n_tokens, n_prompt, n_generated, max_new;
    uint32_t last, prev;   /* the last token produced and the one before it (for decoding) */
    uint32_t feed, pos;    /* the token to run next and its position */
    uint32_t prefilled;    /* prompt tokens run so far (tl_engine_prefill) */
    tl_gen_status pending; /* TL_GEN_EOS / TL_GEN_CTX once the last token ended the generation */
} tl_engine;

/* The blocks this blob needs at this context (0 = seq_len); TL_E_NOMEM if one exceeds 4 GB. */
tl_err tl_engine_plan(const tl_blob *b, uint32_t ctx, tl_plan *p);
/* Sum of the plan's blocks: the bytes tl_engine_init carves from one arena. */
uint64_t tl_engine_arena_bytes(const tl_blob *b, uint32_t ctx);
/* Runtime RAM of BLOB.md = arena + TL_IO_BUFFER_BYTES. */
uint64_t tl_engine_ram_needed(const tl_blob *b, uint32_t ctx);

/* What a blob needs beyond RAM: ctx <= seq_len, tensors the kernels take. TL_OK or why not. */
tl_err tl_engine_check(const tl_blob *b, uint32_t ctx, const char **msg);
/* Binds a parsed blob to its blocks: blocks[k] holds plan.bytes[k], 4-byte aligned (NULL if 0). */
tl_err tl_engine_init_blocks(tl_engine *e, const tl_blob *b, uint32_t ctx, void *const blocks[TL_N_BLOCKS],
                             const char **msg);
/* The same with the blocks carved one after another from one arena (4-byte aligned,
   >= tl_engine_arena_bytes): boards without a heap, tests, benches. */
tl_err tl_engine_init(tl_engine *e, const tl_blob *b, uint32_t ctx, void *arena, uint64_t arena_bytes,
                      const char **msg);

/* Starts a generation: stores the prompt (1..ctx ids < vocab); runs nothing yet. */
tl_err tl_engine_start(tl_engine *e, const tl_gen_params *p, const uint32_t *prompt, uint32_t n);
/* Runs the next prompt token (all but the last are run before sampling). *more is 0 once the
   prompt is done; the caller can then call tl_engine_next (which also finishes a prefill left). */
tl_err tl_engine_prefill(tl_engine *e, int *more);
/* tl_engine_start + every tl_engine_prefill: the whole prompt in one call. */
tl_err tl_engine_begin(tl_engine *e, const tl_gen_params *p, const uint32_t *prompt, uint32_t n);
/* Produces the next token (*status TL_GEN_TOKEN) or says why generation is over, exactly as
   BLOB.md "Sampler": a sampled BOS/EOS ends the generation (eos) and is not produced;
   the context ends a transformer's generation after the token sampled at position ctx - 1 (ctx).
   A GRU has no context limit; with a repetition penalty it stops (ctx) once its ctx-id history
   buffer is full, since the penalty could no longer see every id. */
tl_err tl_engine_next(tl_engine *e, uint32_t *token, tl_gen_status *status);
/* The bytes of the last produced token as printed after the token before it. */
const uint8_t *tl_engine_last_bytes(const tl_engine *e, uint32_t *len);

/* Greedy/sampled logits of one step, exposed for tests: runs token at pos with logits. */
tl_err tl_engine_step(tl_engine *e, uint32_t token, uint32_t pos, int want_logits);

#endif
