/* device.c - the protocol command loop (firmware/PROTOCOL.md). Single-threaded and cooperative:
   poll() reads whatever input waits, then runs at most one token, so STOP lands between tokens. */
#include "device.h"

#include <string.h>

#include "crc.h"
#include "tokenizer.h"

static const char *const ARCH_NAMES[] = {"transformer", "gru"};
static const char *const QUANT_NAMES[] = {"f32", "int8", "ternary"};

/* --- output -------------------------------------------------------------------------------- */

static void send(tl_device *d, tl_writer *w) {
    uint32_t n = tl_w_end(w);
    if (n) d->tp.write(d->tp.ctx, (const uint8_t *)d->out, n);
}

static void begin_line(tl_device *d, tl_writer *w, const char *type, uint64_t id) {
    tl_w_begin(w, d->out, sizeof d->out, type);
    if (id != UINT64_MAX) tl_w_u64(w, "id", id);
}

static void send_err(tl_device *d, uint64_t id, const char *code, const char *text) {
    tl_writer w;
    begin_line(d, &w, "ERR", id);
    tl_w_str(&w, "code", code);
    tl_w_hex(&w, "hex", (const uint8_t *)text, (uint32_t)strlen(text));
    send(d, &w);
}

static void send_ok(tl_device *d, uint64_t id) {
    tl_writer w;
    begin_line(d, &w, "OK", id);
    send(d, &w);
}

static void send_ready(tl_device *d) {
    static const char *const states[] = {"none", "ok", "bad"};
    tl_writer w;
    begin_line(d, &w, "READY", UINT64_MAX);
    tl_w_str(&w, "fw", TL_FW_VERSION);
    tl_w_u64(&w, "proto", TL_PROTO_VERSION);
    tl_w_str(&w, "model", states[d->model]);
    send(d, &w);
}

/* --- model --------------------------------------------------------------------------------- */

static int pieces_fit(const tl_blob *b) {
    for (uint32_t i = 0; i < b->vocab_size; i++) {
        uint32_t n;
        tl_blob_piece(b, i, &n);
        if (n > TL_MAX_PIECE_BYTES) return 0;
    }
    return 1;
}

/* Checks a blob region fully (parse, pieces, what the engine needs beyond RAM) into *b. */
static tl_err check_region(tl_device *d, tl_blob *b, const uint8_t *region, uint32_t len, const char **msg) {
    tl_err err = tl_blob_parse(b, region, len, msg);
    if (err) return err;
    if (!pieces_fit(b)) {
        *msg = "vocab: a piece is longer than 192 bytes (a TOK line would not fit)";
        return TL_E_UNSUPPORTED;
    }
    return tl_engine_check(b, d->cfg.ctx, msg);
}

static char *put_u32(char *p, uint32_t v) {
    char tmp[10];
    int n = 0;
    do tmp[n++] = (char)('0' + v % 10u); while ((v /= 10u) > 0);
    while (n > 0) *p++ = tmp[--n];
    return p;
}

static char *put_str(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}

/* Frees the blocks of the model before and allocates this blob's, largest first. On failure the
   message names the block and the numbers: "ram: largest free block N B < needed M B (kv_cache)". */
static tl_err place_blocks(tl_device *d, const tl_blob *b, const char **msg) {
    tl_plan plan;
    int failed = 0;
    uint32_t largest = 0;
    d->mem.release_all(d->mem.ctx);
    for (int k = 0; k < TL_N_BLOCKS; k++) d->blocks[k] = NULL;
    tl_engine_plan(b, d->cfg.ctx, &plan);
    if (tl_heap_place(&d->mem, &plan, d->blocks, &failed, &largest) == TL_OK) return TL_OK;
    char *p = put_str(d->msg_buf, "ram: largest free block ");
    p = put_u32(p, largest);
    p = put_str(p, " B < needed ");
    p = put_u32(p, plan.bytes[failed]);
    p = put_str(p, " B (");
    p = put_str(p, TL_BLOCK_NAMES[failed]);
    p = put_str(p, "): the model needs more RAM than the board has");
    *p = '\0';
    *msg = d->msg_buf;
    return TL_E_NOMEM;
}

static void load_model(tl_device *d) {
    d->model = TL_MODEL_NONE;
    d->prompt_len = 0;
    d->blob_len = 0;
    const uint8_t *region = d->part.active ? d->part.active(d->part.ctx) : NULL;
    if (!region) {
        d->model_msg = "no model partition";
        return;
    }
    int empty;
    uint32_t len = tl_blob_peek_len(region, d->part.cap, &empty);
    if (empty) {
        d->model_msg = "model partition is empty";
        return;
    }
    d->model = TL_MODEL_BAD;
    if (len == 0) {
        d->model_msg = "model partition does not start with a blob header";
        return;
    }
    tl_blob b;
    if (check_region(d, &b, region, len, &d->model_msg) != TL_OK) return;
    if (place_blocks(d, &b, &d->model_msg) != TL_OK) return;
    if (tl_engine_init_blocks(&d->engine, &b, d->cfg.ctx, d->blocks, &d->model_msg) != TL_OK) return;
    tl_sha256_digest(region, len, d->blob_sha);
    d->blob_len = len;
    d->model = TL_MODEL_OK;
    d->model_msg = "ok";
}

void tl_device_init(tl_device *d, const tl_transport *tp, const tl_partition *part,
                    const tl_device_cfg *cfg, const tl_allocator *mem) {
    memset(d, 0, sizeof *d);
    d->tp = *tp;
    d->part = *part;
    d->cfg = *cfg;
    if (!d->cfg.yield_us) d->cfg.yield_us = TL_YIELD_US;
    d->mem = *mem;
    d->model_msg = "not loaded";
    d->end_reason = "";
}

void tl_device_boot(tl_device *d) {
    d->gen_active = 0;
    d->prefilling = 0;
    d->up_active = 0;
    d->stop_id = 0;
    d->in_len = 0;
    d->in_overflow = 0;
    load_model(d);
    send_ready(d);
}

/* --- generation ---------------------------------------------------------------------------- */

static uint64_t now_us(tl_device *d) { return d->tp.time_us(d->tp.ctx); }
static uint64_t instret(tl_device *d) { return d->tp.instret ? d->tp.instret(d->tp.ctx) : 0; }

static void finish_gen(tl_device *d, const char *reason) {
    tl_writer w;
    begin_line(d, &w, "END", d->gen_id);
    tl_w_u64(&w, "n", d->engine.n_generated);
    tl_w_u64(&w, "us", now_us(d) - d->gen_t0);
    tl_w_u64(&w, "prompt_us", d->gen_prompt_us);
    tl_w_str(&w, "reason", reason);
    send(d, &w);
    d->end_id = d->gen_id;
    d->end_n = d->engine.n_generated;
    d->end_us = now_us(d) - d->gen_t0;
    d->end_prompt_us = d->gen_prompt_us;
    d->end_reason = reason;
    d->gen_active = 0;
    d->prefilling = 0;
}

static void drain_input(tl_device *d) {
    int c;
    while (!d->reset_pending && (c = d->tp.read_byte(d->tp.ctx)) >= 0) tl_device_feed(d, (uint8_t)c);
}

/* One prompt token (all but the last run before the first sample), so STOP and the yield hook get
   their turn between prompt tokens too. */
static void prefill_step(tl_device *d) {
    int more = 0;
    if (tl_engine_prefill(&d->engine, &more) != TL_OK) {
        send_err(d, d->gen_id, "bad_arg", "prompt step failed");
        d->gen_active = 0;
        d->prefilling = 0;
        return;
    }
    if (!more) {
        d->prefilling = 0;
        d->gen_prompt_us = now_us(d) - d->gen_t0;
    }
}

static void gen_step(tl_device *d) {
    tl_engine *e = &d->engine;
    uint64_t t0 = now_us(d), ir0 = instret(d);
    uint32_t tok = 0;
    tl_gen_status st;
    d->in_step = 1;
    tl_err err = tl_engine_next(e, &tok, &st);
    uint64_t ir1 = instret(d);
    if (err == TL_OK && st == TL_GEN_TOKEN && d->cfg.us_per_token) {
        uint64_t target = t0 + d->cfg.us_per_token, t;
        while ((t = now_us(d)) < target && !d->reset_pending) {
            drain_input(d);
            if (d->tp.wait) d->tp.wait(d->tp.ctx, (uint32_t)(target - t));
        }
    }
    uint64_t t1 = now_us(d);
    d->in_step = 0;
    if (err != TL_OK) {
        send_err(d, d->gen_id, "bad_arg", "generation step failed");
        d->gen_active = 0;
    } else if (st == TL_GEN_TOKEN) {
        uint32_t n;
        const uint8_t *bytes = tl_engine_last_bytes(e, &n);
        tl_writer w;
        begin_line(d, &w, "TOK", d->gen_id);
        tl_w_u64(&w, "i", e->n_generated - 1);
        tl_w_u64(&w, "tok", tok);
        tl_w_hex(&w, "hex", bytes, n);
        tl_w_u64(&w, "us", t1 - t0);
        tl_w_u64(&w, "ir", ir1 - ir0);
        send(d, &w);
        if (d->tp.noise) d->tp.noise(d->tp.ctx, e->n_generated - 1);
    } else {
        finish_gen(d, st == TL_GEN_MAX ? "max" : st == TL_GEN_EOS ? "eos" : "ctx");
    }
    if (d->stop_id) {
        if (d->gen_active) finish_gen(d, "stop");
        send_ok(d, d->stop_id);
        d->stop_id = 0;
    }
}

/* --- commands ------------------------------------------------------------------------------ */

static int only_keys(const tl_msg *m, const char *const *allowed) {
    for (uint32_t i = 0; i < m->n_fields; i++) {
        int ok = 0;
        for (const char *const *k = allowed; *k; k++) ok |= tl_field_is(&m->f[i], *k);
        if (!ok) return 0;
    }
    return 1;
}

static int get_u64(const tl_msg *m, const char *key, uint64_t max, uint64_t dflt, uint64_t *out) {
    const tl_field *f = tl_msg_get(m, key);
    if (!f) {
        *out = dflt;
        return 0;
    }
    return tl_parse_u64(f->val, f->vlen, max, out);
}

static int get_float(const tl_msg *m, const char *key, float dflt, float *out) {
    const tl_field *f = tl_msg_get(m, key);
    if (!f) {
        *out = dflt;
        return 0;
    }
    return tl_parse_float(f->val, f->vlen, out);
}

/* Comma-separated token ids of field f into e->tokens from *n on; *n is the new count. NULL on
   success, else the reason (the ids already stored are then meaningless). */
static const char *parse_ids(tl_engine *e, const tl_field *f, uint32_t *n) {
    uint32_t i = 0;
    while (i < f->vlen) {
        uint32_t j = i;
        while (j < f->vlen && f->val[j] != ',') j++;
        uint64_t v;
        if (*n >= e->ctx || tl_parse_u64(f->val + i, j - i, e->blob.vocab_size - 1u, &v))
            return "ids: not comma-separated token ids < vocab, at most ctx of them";
        e->tokens[(*n)++] = (uint32_t)v;
        i = j + 1;
        if (j + 1 == f->vlen) return "ids: trailing comma";
    }
    return NULL;
}

static void cmd_info(tl_device *d, uint64_t id) {
    if (d->model != TL_MODEL_OK) {
        send_err(d, id, "no_model", d->model_msg);
        return;
    }
    const tl_blob *b = &d->engine.blob;
    static const char hexd[] = "0123456789abcdef";
    char sha[65];
    for (int i = 0; i < 32; i++) {
        sha[2 * i] = hexd[d->blob_sha[i] >> 4];
        sha[2 * i + 1] = hexd[d->blob_sha[i] & 15];
    }
    sha[64] = '\0';
    uint64_t ram = tl_engine_ram_needed(b, d->engine.ctx);
    tl_writer w;
    begin_line(d, &w, "INFO", id);
    tl_w_str(&w, "fw", TL_FW_VERSION);
    tl_w_u64(&w, "proto", TL_PROTO_VERSION);
    tl_w_str(&w, "arch", ARCH_NAMES[b->arch]);
    tl_w_str(&w, "quant", QUANT_NAMES[b->quant]);
    tl_w_u64(&w, "dim", b->dim);
    tl_w_u64(&w, "layers", b->n_layers);
    tl_w_u64(&w, "heads", b->n_heads);
    tl_w_u64(&w, "kv_heads", b->n_kv_heads);
    tl_w_u64(&w, "vocab", b->vocab_size);
    tl_w_u64(&w, "ctx", d->engine.ctx);
    tl_w_u64(&w, "blob_size", d->blob_len);
    tl_w_str(&w, "blob_sha", sha);
    tl_w_u64(&w, "ram", ram);
    tl_w_u64(&w, "flash", d->blob_len);
    tl_w_u64(&w, "heap", d->mem.free_bytes(d->mem.ctx));
    tl_w_u64(&w, "heap_block", d->mem.largest_free(d->mem.ctx));
    tl_w_str(&w, "board", d->cfg.board);
    send(d, &w);
}

/* GEN and PROMPT both need a loaded model and no generation running; 0 (error sent) otherwise. */
static int can_take_tokens(tl_device *d, uint64_t id) {
    if (d->model != TL_MODEL_OK) {
        send_err(d, id, "no_model", d->model_msg);
        return 0;
    }
    if (d->gen_active) {
        send_err(d, id, "busy", "a generation is running");
        return 0;
    }
    return 1;
}

static void cmd_gen(tl_device *d, const tl_msg *m, uint64_t id) {
    static const char *const keys[] = {"id", "ids", "hex", "max", "temp", "topk", "topp", "rep", "seed",
                                       "pre", NULL};
    uint32_t held = d->prompt_len; /* PROMPT tokens: a GEN uses them or drops them */
    d->prompt_len = 0;
    if (!can_take_tokens(d, id)) return;
    tl_engine *e = &d->engine;
    if (!only_keys(m, keys)) {
        send_err(d, id, "bad_arg", "unknown field");
        return;
    }
    tl_gen_params p;
    uint64_t max_new, topk;
    if (get_u64(m, "max", 0x7FFFFFFF, 64, &max_new) || get_float(m, "temp", 0.0f, &p.temperature) ||
        get_u64(m, "topk", 0x7FFFFFFF, 0, &topk) || get_float(m, "topp", 0.0f, &p.topp) ||
        get_float(m, "rep", 1.0f, &p.rep) || get_u64(m, "seed", UINT64_MAX, 0, &p.seed)) {
        send_err(d, id, "bad_arg", "bad max/temp/topk/topp/rep/seed value");
        return;
    }
    if (p.topp > 1.0f || !(p.rep > 0.0f)) {
        send_err(d, id, "bad_arg", "topp must be in [0, 1] and rep > 0");
        return;
    }
    p.max_new = (uint32_t)max_new;
    p.topk = (uint32_t)topk;
    uint64_t pre;
    if (get_u64(m, "pre", 0x7FFFFFFF, 0, &pre) || pre != held) {
        send_err(d, id, "bad_arg", "pre is not the number of prompt tokens sent with PROMPT");
        return;
    }
    const tl_field *ids = tl_msg_get(m, "ids"), *hex = tl_msg_get(m, "hex");
    uint32_t n = held;
    if (hex ? (ids != NULL || held > 0) : (ids == NULL && held == 0)) {
        send_err(d, id, "bad_arg", "give the prompt as exactly one of ids or hex (hex not after PROMPT)");
        return;
    }
    if (ids) {
        const char *why = parse_ids(e, ids, &n);
        if (why) {
            send_err(d, id, "bad_arg", why);
            return;
        }
    } else if (hex) {
        uint8_t *text = (uint8_t *)d->in + (hex->val - d->in); /* decode in place in our line buffer */
        uint32_t tn;
        if (tl_parse_hex(hex->val, hex->vlen, text, hex->vlen / 2, &tn)) {
            send_err(d, id, "bad_arg", "hex: not lowercase hex");
            return;
        }
        if (tl_encode(&e->blob, text, tn, 1, e->tokens, e->ctx, &n) != TL_OK) {
            send_err(d, id, "bad_arg", "hex: the prompt does not fit ctx or cannot be encoded");
            return;
        }
    }
    if (n == 0) {
        send_err(d, id, "bad_arg", "empty prompt");
        return;
    }
    d->gen_id = id;
    d->gen_t0 = now_us(d);
    if (tl_engine_start(e, &p, e->tokens, n) != TL_OK) {
        send_err(d, id, "bad_arg", "prompt rejected");
        return;
    }
    d->gen_prompt_us = 0;
    d->gen_active = 1;
    d->prefilling = 1;
}

/* STATE: what the board is doing, so a host that lost an END line (cut by a log line or a bad
   cable) learns the generation ended, with the END's numbers, instead of waiting out its deadline. */
static void cmd_state(tl_device *d, uint64_t id) {
    tl_writer w;
    begin_line(d, &w, "STATE", id);
    tl_w_u64(&w, "busy", (uint64_t)d->gen_active);
    tl_w_u64(&w, "gen", d->gen_active ? d->gen_id : d->end_id);
    tl_w_u64(&w, "n", d->gen_active ? d->engine.n_generated : d->end_n);
    if (!d->gen_active && d->end_id) {
        tl_w_u64(&w, "us", d->end_us);
        tl_w_u64(&w, "prompt_us", d->end_prompt_us);
        tl_w_str(&w, "reason", d->end_reason);
    }
    tl_w_str(&w, "model", d->model == TL_MODEL_OK ? "ok" : d->model == TL_MODEL_BAD ? "bad" : "none");
    send(d, &w);
}

/* PROMPT: the first part of a prompt too long for one GEN line; its ids go to token offset `off`
   (at most the number held: a resent chunk lands where it did before) and the board then holds
   off + n tokens, until the next GEN (which names them with pre=) or a reset. */
static void cmd_prompt(tl_device *d, const tl_msg *m, uint64_t id) {
    static const char *const keys[] = {"id", "off", "ids", NULL};
    if (!can_take_tokens(d, id)) return;
    const tl_field *ids = tl_msg_get(m, "ids");
    uint64_t off;
    if (!only_keys(m, keys) || !ids || !tl_msg_get(m, "off") || get_u64(m, "off", 0x7FFFFFFF, 0, &off)) {
        send_err(d, id, "bad_arg", "PROMPT needs off and ids");
        return;
    }
    if (off > d->prompt_len) {
        send_err(d, id, "offset", "PROMPT off is past the prompt tokens held");
        return;
    }
    uint32_t n = (uint32_t)off;
    const char *why = parse_ids(&d->engine, ids, &n);
    if (why) {
        d->prompt_len = 0;
        send_err(d, id, "bad_arg", why);
        return;
    }
    d->prompt_len = n;
    tl_writer w;
    begin_line(d, &w, "OK", id);
    tl_w_u64(&w, "n", n);
    send(d, &w);
}

static int parse_sha(const tl_field *f, uint8_t out[32]) {
    uint32_t n;
    return f == NULL || f->vlen != 64 || tl_parse_hex(f->val, 64, out, 32, &n) != 0;
}

static void cmd_upbegin(tl_device *d, const tl_msg *m, uint64_t id) {
    static const char *const keys[] = {"id", "size", "sha", NULL};
    uint64_t size;
    if (!only_keys(m, keys) || !tl_msg_get(m, "size") || get_u64(m, "size", UINT64_MAX, 0, &size) ||
        parse_sha(tl_msg_get(m, "sha"), d->up_sha)) {
        send_err(d, id, "bad_arg", "UPBEGIN needs size and sha (64 lowercase hex)");
        return;
    }
    if (size < TL_BLOB_MIN_BYTES || size > d->part.cap) {
        send_err(d, id, "size", "blob does not fit the model partition");
        return;
    }
    if (d->part.in_place) {
        d->model = TL_MODEL_NONE;
        d->model_msg = "model partition is being rewritten";
    }
    if (d->part.begin(d->part.ctx, (uint32_t)size) != TL_OK) {
        send_err(d, id, "size", "model partition erase failed");
        return;
    }
    d->up_active = 1;
    d->up_size = (uint32_t)size;
    d->up_next = 0;
    d->up_erased = 0;
    tl_writer w;
    begin_line(d, &w, "OK", id);
    tl_w_u64(&w, "chunk", TL_UPLOAD_CHUNK);
    send(d, &w);
}

static void cmd_updata(tl_device *d, const tl_msg *m, uint64_t id) {
    static const char *const keys[] = {"id", "off", "hex", "crc", NULL};
    uint8_t data[TL_UPLOAD_CHUNK], crcb[4];
    uint32_t n, cn;
    uint64_t off;
    const tl_field *hex = tl_msg_get(m, "hex"), *crc = tl_msg_get(m, "crc");
    if (!d->up_active) {
        send_err(d, id, "bad_arg", "no upload in progress");
        return;
    }
    if (!only_keys(m, keys) || !hex || !crc || !tl_msg_get(m, "off") ||
        get_u64(m, "off", UINT64_MAX, 0, &off) || tl_parse_hex(hex->val, hex->vlen, data, sizeof data, &n) ||
        crc->vlen != 8 || tl_parse_hex(crc->val, 8, crcb, 4, &cn)) {
        send_err(d, id, "bad_arg", "UPDATA needs off, hex (<= 192 bytes) and crc (8 lowercase hex)");
        return;
    }
    uint32_t want = ((uint32_t)crcb[0] << 24) | ((uint32_t)crcb[1] << 16) | ((uint32_t)crcb[2] << 8) | crcb[3];
    if (tl_crc32(data, n) != want) {
        send_err(d, id, "chunk_crc", "chunk crc32 does not match");
        return;
    }
    if (off + n > d->up_size) {
        send_err(d, id, "size", "chunk goes past the announced size");
        return;
    }
    if (off == d->up_next && d->part.erase && off + n > d->up_erased) { /* erase just ahead of the data */
        uint32_t sector = d->part.sector ? d->part.sector : 4096u;
        uint64_t upto = ((uint64_t)off + n + sector - 1u) / sector * sector;
        if (upto > d->part.cap) upto = d->part.cap;
        if (d->part.erase(d->part.ctx, d->up_erased, (uint32_t)upto - d->up_erased) != TL_OK) {
            send_err(d, id, "size", "model partition erase failed");
            return;
        }
        d->up_erased = (uint32_t)upto;
    }
    if (off == d->up_next) {
        if (d->part.write(d->part.ctx, (uint32_t)off, data, n) != TL_OK) {
            send_err(d, id, "size", "model partition write failed");
            return;
        }
        d->up_next += n;
    } else if (!(n > 0 && off + n == d->up_next)) { /* a resent last chunk is acknowledged again */
        send_err(d, id, "offset", "chunk offset is not the next expected offset");
        return;
    }
    tl_writer w;
    begin_line(d, &w, "OK", id);
    tl_w_u64(&w, "off", d->up_next);
    send(d, &w);
}

static void cmd_upend(tl_device *d, const tl_msg *m, uint64_t id) {
    static const char *const keys[] = {"id", NULL};
    uint8_t sha[32];
    const char *msg;
    if (!d->up_active) {
        send_err(d, id, "bad_arg", "no upload in progress");
        return;
    }
    if (!only_keys(m, keys)) {
        send_err(d, id, "bad_arg", "unknown field");
        return;
    }
    if (d->up_next != d->up_size) {
        send_err(d, id, "size", "upload incomplete");
        return;
    }
    d->up_active = 0;
    const uint8_t *staged = d->part.staged(d->part.ctx);
    tl_sha256_digest(staged, d->up_size, sha);
    if (memcmp(sha, d->up_sha, 32) != 0) {
        send_err(d, id, "hash", "sha256 of the written blob does not match");
        return;
    }
    tl_blob b;
    if (check_region(d, &b, staged, d->up_size, &msg) != TL_OK) {
        send_err(d, id, "bad_blob", msg);
        return;
    }
    if (place_blocks(d, &b, &msg) != TL_OK) { /* the new model's blocks must fit before it replaces */
        send_err(d, id, "bad_blob", msg);
        load_model(d); /* the old model gets its blocks back (on an in-place partition: none) */
        return;
    }
    if (d->part.commit(d->part.ctx, d->up_size) != TL_OK) {
        send_err(d, id, "bad_blob", "model partition commit failed");
        return;
    }
    tl_writer w;
    begin_line(d, &w, "OK", id);
    tl_w_hex(&w, "sha", sha, 32);
    send(d, &w);
    load_model(d);
    send_ready(d);
}

static void handle_line(tl_device *d, const char *line, uint32_t len) {
    tl_msg m;
    if (len == 0 || line[0] != '@') return; /* noise */
    tl_line_status st = tl_line_parse(line, len, &m);
    if (st == TL_LINE_CRC) {
        send_err(d, 0, "crc", "line crc does not match");
        return;
    }
    uint64_t id;
    const tl_field *fid = tl_msg_get(&m, "id");
    if (st != TL_LINE_OK || !fid || tl_parse_u64(fid->val, fid->vlen, 0x80000000u, &id) || id == 0) {
        send_err(d, 0, "parse", "not a command line with id=1..2^31");
        return;
    }
    if (strcmp(m.type, "STOP") == 0) {
        if (!d->gen_active) send_ok(d, id);
        else if (d->in_step) d->stop_id = id;
        else {
            finish_gen(d, "stop");
            send_ok(d, id);
        }
    } else if (strcmp(m.type, "STATE") == 0) {
        cmd_state(d, id);
    } else if (strcmp(m.type, "INFO") == 0) {
        cmd_info(d, id);
    } else if (strcmp(m.type, "GEN") == 0) {
        cmd_gen(d, &m, id);
    } else if (strcmp(m.type, "PROMPT") == 0) {
        cmd_prompt(d, &m, id);
    } else if (strcmp(m.type, "RESET") == 0) {
        if (d->gen_active) finish_gen(d, "stop");
        send_ok(d, id);
        d->reset_pending = 1;
    } else if (strcmp(m.type, "UPBEGIN") == 0 || strcmp(m.type, "UPDATA") == 0 || strcmp(m.type, "UPEND") == 0) {
        if (d->gen_active) send_err(d, id, "busy", "a generation is running");
        else if (m.type[2] == 'B') cmd_upbegin(d, &m, id);
        else if (m.type[2] == 'D') cmd_updata(d, &m, id);
        else cmd_upend(d, &m, id);
    } else {
        send_err(d, id, "unknown", "unknown command");
    }
}

void tl_device_feed(tl_device *d, uint8_t c) {
    if (c == '\n') {
        if (d->in_overflow) {
            if (d->in[0] == '@') send_err(d, 0, "too_long", "line longer than 512 bytes");
        } else {
            handle_line(d, d->in, d->in_len);
        }
        d->in_len = 0;
        d->in_overflow = 0;
        return;
    }
    if (d->in_len < TL_LINE_MAX - 1u)
        d->in[d->in_len++] = (char)c;
    else
        d->in_overflow = 1;
}

int tl_device_poll(tl_device *d) {
    drain_input(d);
    if (d->reset_pending) {
        d->reset_pending = 0;
        d->gen_active = 0;
        return TL_POLL_RESET;
    }
    if (d->gen_active) {
        if (d->prefilling) prefill_step(d);
        else gen_step(d);
        uint64_t now = now_us(d);
        if (d->tp.yield && now - d->last_yield >= d->cfg.yield_us) {
            d->tp.yield(d->tp.ctx);
            d->n_yields++;
            d->last_yield = now_us(d);
        }
        return TL_POLL_BUSY;
    }
    if (d->tp.wait) d->tp.wait(d->tp.ctx, 100000);
    d->last_yield = now_us(d); /* idle: the wait gave the OS its time */
    return TL_POLL_IDLE;
}
