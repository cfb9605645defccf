/* engine.c - arena layout (BLOB.md "Runtime RAM") and the token-at-a-time generate loop. */
#include "engine.h"

#include <math.h>
#include <string.h>

#include "intmode.h"
#include "tokenizer.h"

static uint32_t eff_ctx(const tl_blob *b, uint32_t ctx) { return ctx ? ctx : b->seq_len; }

static uint64_t quant_scratch_bytes(const tl_blob *b) {
    if (b->quant == TL_Q_F32) return 0;
    uint64_t widest = b->arch == TL_ARCH_TRANSFORMER && b->hidden_dim > b->dim ? b->hidden_dim : b->dim;
    uint64_t n = widest + 4u * ((widest + b->group_size - 1u) / b->group_size);
    return (n + 3u) / 4u * 4u;
}

/* BLOB.md flags bit 1: integer mode (a parsed blob only has it on int8/ternary transformers) */
static int int_mode(const tl_blob *b) { return b->arch == TL_ARCH_TRANSFORMER && (b->flags & TL_FLAG_INT) != 0; }

/* BLOB.md "Runtime RAM": the T2 tables of a ternary blob in integer mode (kernels.h). Every build
   carves them, so the RAM a board reports does not depend on which kernels it was compiled with. */
static uint64_t t2_scratch_bytes(const tl_blob *b) {
    return int_mode(b) && b->quant == TL_Q_TERNARY ? TL_T2_SCRATCH_BYTES : 0u;
}

const char *const TL_BLOCK_NAMES[TL_N_BLOCKS] = {"kv_cache", "activations", "scratch"};

/* BLOB.md "Runtime RAM" by block: KV cache; activations (x xb xb2 q hb hb2 att logits, or a GRU's
   x h gi gh logits); scratch (quantized activation vector, T2 tables, sampler pairs, token ids). */
tl_err tl_engine_plan(const tl_blob *b, uint32_t ctx, tl_plan *p) {
    uint64_t c = eff_ctx(b, ctx), V = b->vocab_size, dim = b->dim, L = b->n_layers, act, kv = 0;
    if (int_mode(b)) { /* att: one head's ctx int32; K/V: int8 + one f32 scale per (pos, kv head) */
        act = 4u * (4u * dim + 2u * (uint64_t)b->hidden_dim + c + V);
        kv = 2u * L * c * ((uint64_t)b->kv_dim + 4u * b->n_kv_heads);
    } else if (b->arch == TL_ARCH_TRANSFORMER) {
        act = 4u * (4u * dim + 2u * (uint64_t)b->hidden_dim + (uint64_t)b->n_heads * c + V);
        kv = 4u * 2u * L * c * b->kv_dim;
    } else {
        act = 4u * (dim + L * dim + 6u * dim + V);
    }
    uint64_t scratch = quant_scratch_bytes(b) + t2_scratch_bytes(b) + 8u * V + 4u * c;
    uint64_t sizes[TL_N_BLOCKS] = {(kv + 3u) / 4u * 4u, act, scratch};
    for (int k = 0; k < TL_N_BLOCKS; k++) {
        if (sizes[k] > 0xFFFFFFF0u) return TL_E_NOMEM;
        p->bytes[k] = (uint32_t)sizes[k];
    }
    return sizes[0] + sizes[1] + sizes[2] > 0xFFFFFFF0u ? TL_E_NOMEM : TL_OK;
}

uint64_t tl_engine_arena_bytes(const tl_blob *b, uint32_t ctx) {
    tl_plan p;
    if (tl_engine_plan(b, ctx, &p) != TL_OK) return UINT64_MAX;
    return (uint64_t)p.bytes[0] + p.bytes[1] + p.bytes[2];
}

uint64_t tl_engine_ram_needed(const tl_blob *b, uint32_t ctx) {
    uint64_t a = tl_engine_arena_bytes(b, ctx);
    return a == UINT64_MAX ? a : a + TL_IO_BUFFER_BYTES;
}

typedef struct {
    uint8_t *p;
    uint64_t left;
} bump;

static void *take(bump *a, uint64_t n) {
    if (n > a->left) return NULL;
    void *r = a->p;
    a->p += n;
    a->left -= n;
    return r;
}

#define FAIL(code, text) do { *msg = (text); return (code); } while (0)

/* Every matrix the model multiplies with: quantized ones need the scratch and matching groups. */
static tl_err check_tensors(const tl_blob *b, const char **msg) {
    tl_tensor t;
    tl_blob_tensor(b, 0, &t);
    if (t.qtype == TL_Q_TERNARY) FAIL(TL_E_UNSUPPORTED, "tok_embeddings: ternary embeddings are not supported");
    for (uint32_t r = 0; r < b->n_tensors; r++) {
        tl_blob_tensor(b, r, &t);
        if (t.qtype == TL_Q_F32) continue;
        if (b->quant == TL_Q_F32)
            FAIL(TL_E_UNSUPPORTED, "quant: header says f32 but a tensor is quantized (no scratch budgeted)");
        if (t.qtype == TL_Q_INT8 && t.group != b->group_size)
            FAIL(TL_E_UNSUPPORTED, "tensor group: int8 group differs from the header group_size");
    }
    return TL_OK;
}

tl_err tl_engine_check(const tl_blob *b, uint32_t ctx, const char **msg) {
    tl_plan p;
    if (b->arch == TL_ARCH_TRANSFORMER && eff_ctx(b, ctx) > b->seq_len) FAIL(TL_E_ARG, "ctx: larger than the blob's seq_len");
    if (tl_engine_plan(b, ctx, &p) != TL_OK) FAIL(TL_E_NOMEM, "ram: the model needs more RAM than the board has");
    return check_tensors(b, msg);
}

tl_err tl_engine_init_blocks(tl_engine *e, const tl_blob *b, uint32_t ctx, void *const blocks[TL_N_BLOCKS],
                             const char **msg) {
    memset(e, 0, sizeof *e);
    e->blob = *b;
    b = &e->blob;
    tl_err err = tl_engine_check(b, ctx, msg);
    if (err) return err;
    ctx = eff_ctx(b, ctx);
    tl_plan plan;
    tl_engine_plan(b, ctx, &plan);
    bump blk[TL_N_BLOCKS];
    for (int k = 0; k < TL_N_BLOCKS; k++) {
        if (plan.bytes[k] && !blocks[k]) FAIL(TL_E_NOMEM, "ram: a block of the model has no memory");
        if (((uintptr_t)blocks[k] & 3u) != 0) FAIL(TL_E_ARG, "arena: not 4-byte aligned");
        blk[k].p = blocks[k];
        blk[k].left = plan.bytes[k];
    }
    bump *a = &blk[TL_BLOCK_ACT], *kvb = &blk[TL_BLOCK_KV], *sc = &blk[TL_BLOCK_SCRATCH];
    e->ctx = ctx;
    e->arena_bytes = plan.bytes[0] + plan.bytes[1] + plan.bytes[2];
    uint32_t dim = b->dim, V = b->vocab_size;
    if (b->arch == TL_ARCH_TRANSFORMER) {
        tl_transformer *s = &e->tf;
        uint64_t kvn = (uint64_t)b->n_layers * ctx * b->kv_dim;
        s->x = take(a, 4u * dim);
        s->xb = take(a, 4u * dim);
        s->xb2 = take(a, 4u * dim);
        s->q = take(a, 4u * dim);
        s->hb = take(a, 4u * (uint64_t)b->hidden_dim);
        s->hb2 = take(a, 4u * (uint64_t)b->hidden_dim);
        if (int_mode(b)) {
            uint64_t sn = (uint64_t)b->n_layers * ctx * b->n_kv_heads;
            s->imode = 1;
            s->att_a = 1.44269504f / sqrtf((float)b->head_dim);
            s->iatt = take(a, 4u * (uint64_t)ctx);
            s->logits = take(a, 4u * (uint64_t)V);
            s->ks = take(kvb, 4u * sn);
            s->vs = take(kvb, 4u * sn);
            s->kq = take(kvb, kvn);
            s->vq = take(kvb, kvn);
        } else {
            s->att = take(a, 4u * (uint64_t)b->n_heads * ctx);
            s->logits = take(a, 4u * (uint64_t)V);
            s->key_cache = take(kvb, 4u * kvn);
            s->value_cache = take(kvb, 4u * kvn);
        }
        s->ctx = ctx;
        e->logits = s->logits;
    } else {
        tl_gru *s = &e->gru;
        s->x = take(a, 4u * dim);
        s->h = take(a, 4u * (uint64_t)b->n_layers * dim);
        s->gi = take(a, 4u * 3u * dim);
        s->gh = take(a, 4u * 3u * dim);
        s->logits = take(a, 4u * (uint64_t)V);
        e->logits = s->logits;
    }
    uint64_t qs = quant_scratch_bytes(b);
    if (qs) {
        uint32_t widest = b->arch == TL_ARCH_TRANSFORMER && b->hidden_dim > dim ? b->hidden_dim : dim;
        uint32_t ng = (widest + b->group_size - 1u) / b->group_size;
        uint8_t *q = take(sc, qs);
        e->qv.s = (float *)(void *)q;   /* scales first: stays 4-byte aligned */
        e->qv.q = (int8_t *)(q + 4u * ng);
        e->qv.n = widest;
        e->qv.group = b->group_size;
        e->qv.imode = (uint32_t)int_mode(b);
        if (t2_scratch_bytes(b)) {
            e->qv.t2acc = take(sc, 8u * TL_T2_ROWS); /* first: 4-byte aligned like the block */
            e->qv.t2tab = take(sc, 2u * TL_T2_TABLES * TL_T2_STRIDE);
        }
        e->qvp = &e->qv;
    }
    e->tf.qv = e->qvp;
    e->gru.qv = e->qvp;
    tl_probindex *scratch = take(sc, 8u * (uint64_t)V);
    e->tokens = take(sc, 4u * (uint64_t)ctx);
    if (!scratch || !e->tokens || a->left != 0 || kvb->left != 0 || sc->left != 0)
        FAIL(TL_E_NOMEM, "ram: arena layout mismatch");
    tl_sampler_init(&e->sampler, scratch, V);
    *msg = "ok";
    return TL_OK;
}

tl_err tl_engine_init(tl_engine *e, const tl_blob *b, uint32_t ctx, void *arena, uint64_t arena_bytes,
                      const char **msg) {
    tl_plan p;
    tl_err err = tl_engine_check(b, ctx, msg);
    if (err) {
        memset(e, 0, sizeof *e);
        return err;
    }
    tl_engine_plan(b, ctx, &p);
    uint64_t need = (uint64_t)p.bytes[0] + p.bytes[1] + p.bytes[2];
    if (need > arena_bytes) {
        memset(e, 0, sizeof *e);
        FAIL(TL_E_NOMEM, "ram: the model needs more RAM than the board has");
    }
    uint8_t *at = arena;
    void *blocks[TL_N_BLOCKS];
    for (int k = 0; k < TL_N_BLOCKS; k++) {
        blocks[k] = p.bytes[k] ? at : NULL;
        at += p.bytes[k];
    }
    return tl_engine_init_blocks(e, b, ctx, blocks, msg);
}

tl_err tl_engine_step(tl_engine *e, uint32_t token, uint32_t pos, int want_logits) {
    if (e->blob.arch == TL_ARCH_TRANSFORMER) return tl_transformer_forward(&e->blob, &e->tf, token, pos, want_logits);
    (void)pos; /* a GRU has no positions */
    return tl_gru_forward(&e->blob, &e->gru, token, want_logits);
}

tl_err tl_engine_start(tl_engine *e, const tl_gen_params *p, const uint32_t *prompt, uint32_t n) {
    if (n == 0 || n > e->ctx) return TL_E_ARG;
    for (uint32_t i = 0; i < n; i++)
        if (prompt[i] >= e->blob.vocab_size) return TL_E_ARG;
    if (e->tokens != prompt) memmove(e->tokens, prompt, 4u * (size_t)n);
    prompt = e->tokens;
    e->n_tokens = n;
    e->n_prompt = n;
    e->n_generated = 0;
    e->max_new = p->max_new;
    e->pending = TL_GEN_TOKEN;
    e->feed = prompt[n - 1];
    e->pos = n - 1;
    e->prefilled = 0;
    tl_sampler_configure(&e->sampler, p->temperature, p->topk, p->topp, p->rep, p->seed);
    if (e->blob.arch == TL_ARCH_GRU) tl_gru_reset(&e->blob, &e->gru);
    return TL_OK;
}

tl_err tl_engine_prefill(tl_engine *e, int *more) {
    if (e->prefilled + 1u < e->n_prompt) {
        tl_err err = tl_engine_step(e, e->tokens[e->prefilled], e->prefilled, 0);
        if (err) return err;
        e->prefilled++;
    }
    *more = e->prefilled + 1u < e->n_prompt;
    return TL_OK;
}

tl_err tl_engine_begin(tl_engine *e, const tl_gen_params *p, const uint32_t *prompt, uint32_t n) {
    tl_err err = tl_engine_start(e, p, prompt, n);
    int more = 1;
    while (err == TL_OK && more) err = tl_engine_prefill(e, &more);
    return err;
}

tl_err tl_engine_next(tl_engine *e, uint32_t *token, tl_gen_status *status) {
    if (e->pending != TL_GEN_TOKEN) {
        *status = e->pending;
        return TL_OK;
    }
    if (e->n_generated >= e->max_new) {
        *status = TL_GEN_MAX;
        return TL_OK;
    }
    int more = 1;
    tl_err err = TL_OK;
    while (err == TL_OK && more) err = tl_engine_prefill(e, &more);
    if (err == TL_OK) err = tl_engine_step(e, e->feed, e->pos, 1);
    if (err) return err;
    uint32_t t = tl_sample(&e->sampler, e->logits, e->tokens, e->n_tokens);
    const tl_blob *b = &e->blob;
    if ((b->eos_id != TL_BLOB_NONE && t == b->eos_id) || (b->bos_id != TL_BLOB_NONE && t == b->bos_id)) {
        *status = TL_GEN_EOS; /* BLOB.md: the stop token is not sent to the host */
        e->pending = TL_GEN_EOS;
        return TL_OK;
    } else {
        e->prev = e->feed;
        e->last = t;
        e->n_generated++;
        if (e->n_tokens < e->ctx)
            e->tokens[e->n_tokens++] = t;
        else if (b->arch == TL_ARCH_TRANSFORMER || e->sampler.rep != 1.0f)
            e->pending = TL_GEN_CTX; /* no position left (transformer) / no history room (penalty) */
        e->feed = t;
        e->pos++;
    }
    *token = t;
    *status = TL_GEN_TOKEN;
    return TL_OK;
}

const uint8_t *tl_engine_last_bytes(const tl_engine *e, uint32_t *len) {
    return tl_decode(&e->blob, e->prev, e->last, len);
}
