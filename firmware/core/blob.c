/* blob.c - parse and check a weight blob in place (firmware/BLOB.md "Trailer" reader list). */
#include "blob.h"

#include <stddef.h>
#include <string.h>

#include "crc.h"

#define ALIGN 16u

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static float rdf32(const uint8_t *p) {
    uint32_t u = rd32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static uint64_t align4(uint64_t n) { return (n + 3u) / 4u * 4u; }
static uint32_t ceil_div(uint32_t a, uint32_t b) { return (a + b - 1u) / b; }

uint32_t tl_blob_peek_len(const uint8_t *region, uint32_t cap, int *empty) {
    *empty = 0;
    if (cap < 4) {
        *empty = 1;
        return 0;
    }
    if ((region[0] == 0xFF && region[1] == 0xFF && region[2] == 0xFF && region[3] == 0xFF) ||
        (region[0] == 0 && region[1] == 0 && region[2] == 0 && region[3] == 0)) {
        *empty = 1;
        return 0;
    }
    if (cap < TL_BLOB_MIN_BYTES || memcmp(region, "TLMB", 4) != 0) return 0;
    uint32_t n = rd32(region + 84);
    return n <= cap ? n : 0;
}

uint32_t tl_blob_expected_tensors(const tl_blob *b) {
    uint32_t untied = (b->flags & 1u) ? 0u : 1u;
    if (b->arch == TL_ARCH_TRANSFORMER) return 1u + TL_T_PER_LAYER * b->n_layers + 2u + untied;
    return 1u + TL_G_PER_LAYER * b->n_layers + untied;
}

uint32_t tl_blob_role_norm(const tl_blob *b) { return 1u + TL_T_PER_LAYER * b->n_layers; }
uint32_t tl_blob_role_rope(const tl_blob *b) { return 2u + TL_T_PER_LAYER * b->n_layers; }
uint32_t tl_blob_role_output(const tl_blob *b) {
    if (b->flags & 1u) return 0;
    return tl_blob_expected_tensors(b) - 1u;
}

/* Expected shape of a role and whether it must be f32. Returns 0 when role is out of range. */
static int role_shape(const tl_blob *b, uint32_t role, uint32_t *rows, uint32_t *cols, int *f32_only) {
    uint32_t n = tl_blob_expected_tensors(b);
    if (role >= n) return 0;
    *f32_only = 0;
    if (role == 0) {
        *rows = b->vocab_size;
        *cols = b->dim;
        return 1;
    }
    if (!(b->flags & 1u) && role == n - 1u) {
        *rows = b->vocab_size;
        *cols = b->dim;
        return 1;
    }
    if (b->arch == TL_ARCH_TRANSFORMER) {
        if (role == tl_blob_role_norm(b)) {
            *rows = 1; *cols = b->dim; *f32_only = 1;
            return 1;
        }
        if (role == tl_blob_role_rope(b)) {
            *rows = b->seq_len; *cols = b->head_dim; *f32_only = 1;
            return 1;
        }
        switch ((role - 1u) % TL_T_PER_LAYER) {
        case TL_T_ATTN_NORM: case TL_T_FFN_NORM: *rows = 1; *cols = b->dim; *f32_only = 1; break;
        case TL_T_WQ: case TL_T_WO: *rows = b->dim; *cols = b->dim; break;
        case TL_T_WK: case TL_T_WV: *rows = b->kv_dim; *cols = b->dim; break;
        case TL_T_W1: case TL_T_W3: *rows = b->hidden_dim; *cols = b->dim; break;
        default: *rows = b->dim; *cols = b->hidden_dim; break; /* w2 */
        }
        return 1;
    }
    switch ((role - 1u) % TL_G_PER_LAYER) {
    case TL_G_WIH: case TL_G_WHH: *rows = 3u * b->dim; *cols = b->dim; break;
    default: *rows = 1; *cols = 3u * b->dim; *f32_only = 1; break; /* biases */
    }
    return 1;
}

static int is_ternary(uint32_t qtype) { return qtype == TL_Q_TERNARY || qtype == TL_Q_TERNARY5; }

static uint64_t implied_nbytes(uint32_t qtype, uint32_t rows, uint32_t cols, uint32_t group) {
    if (qtype == TL_Q_F32) return 4ull * rows * cols;
    if (qtype == TL_Q_INT8) return 4ull * rows * ceil_div(cols, group) + (uint64_t)rows * cols;
    return 4ull + (uint64_t)rows * ceil_div(cols, qtype == TL_Q_TERNARY5 ? 5u : 4u);
}

/* Base-3 rows: every byte <= 242 (five digits), and a short last byte (u = cols % 5 weights used)
   holds weight 0 (digit 1) in every unused digit: floor(byte / 3^u) = 11..1 in base 3. */
static int ternary5_rows_ok(const uint8_t *w, uint32_t rows, uint32_t cols) {
    static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
    uint32_t rb = ceil_div(cols, 5u), u = cols % 5u;
    for (uint32_t r = 0; r < rows; r++, w += rb) {
        for (uint32_t k = 0; k < rb; k++)
            if (w[k] > 242u) return 0;
        if (u && w[rb - 1] / pow3[u] != (pow3[5u - u] - 1u) / 2u) return 0;
    }
    return 1;
}

/* memcmp order, shorter first when one is a prefix of the other. */
static int piece_cmp(const uint8_t *a, uint32_t na, const uint8_t *b, uint32_t nb) {
    uint32_t n = na < nb ? na : nb;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return (na > nb) - (na < nb);
}

const uint8_t *tl_blob_piece(const tl_blob *b, uint32_t id, uint32_t *len) {
    uint32_t lo = b->offsets[id], hi = b->offsets[id + 1];
    *len = hi - lo;
    return b->pieces + lo;
}

#define FAIL(code, text) do { *msg = (text); return (code); } while (0)

static tl_err check_header_fields(tl_blob *b, const char **msg) {
    if (b->arch > TL_ARCH_GRU) FAIL(TL_E_BLOB, "header arch: not 0 (transformer) or 1 (GRU)");
    if (b->quant > TL_Q_TERNARY) FAIL(TL_E_BLOB, "header quant: not 0, 1 or 2");
    if (b->group_size != 32 && b->group_size != 64) FAIL(TL_E_BLOB, "header group_size: not 32 or 64");
    if (b->dim == 0 || b->dim > 65536) FAIL(TL_E_BLOB, "header dim: 0 or larger than 65536");
    if (b->n_layers == 0 || b->n_layers > 1024) FAIL(TL_E_BLOB, "header n_layers: 0 or larger than 1024");
    if (b->vocab_size == 0 || b->vocab_size > 65535) FAIL(TL_E_BLOB, "header vocab_size: 0 or larger than 65535");
    if (b->seq_len == 0 || b->seq_len > (1u << 20)) FAIL(TL_E_BLOB, "header seq_len: 0 or larger than 2^20");
    if (b->arch == TL_ARCH_TRANSFORMER) {
        if (b->hidden_dim == 0 || b->hidden_dim > 262144) FAIL(TL_E_BLOB, "header hidden_dim: 0 or larger than 262144");
        if (b->n_heads == 0 || b->dim % b->n_heads != 0) FAIL(TL_E_BLOB, "header n_heads: 0 or does not divide dim");
        if ((b->dim / b->n_heads) % 2 != 0) FAIL(TL_E_BLOB, "header n_heads: head_dim is odd");
        if (b->n_kv_heads == 0 || b->n_heads % b->n_kv_heads != 0)
            FAIL(TL_E_BLOB, "header n_kv_heads: 0 or does not divide n_heads");
        b->head_dim = b->dim / b->n_heads;
        b->kv_dim = b->head_dim * b->n_kv_heads;
    } else {
        if (b->flags & 2u) FAIL(TL_E_BLOB, "header flags: bit 1 (integer mode) is for transformers only");
        if (b->hidden_dim != 0 || b->n_heads != 0 || b->n_kv_heads != 0)
            FAIL(TL_E_BLOB, "header hidden_dim/n_heads/n_kv_heads: must be 0 for GRU");
        b->head_dim = 0;
        b->kv_dim = 0;
    }
    if (b->bos_id != TL_BLOB_NONE && b->bos_id >= b->vocab_size) FAIL(TL_E_BLOB, "header bos_id: not < vocab_size");
    if (b->eos_id != TL_BLOB_NONE && b->eos_id >= b->vocab_size) FAIL(TL_E_BLOB, "header eos_id: not < vocab_size");
    if (b->n_tensors != tl_blob_expected_tensors(b)) FAIL(TL_E_BLOB, "header n_tensors: does not match arch/n_layers/flags");
    if (b->table_offset != TL_BLOB_HEADER_BYTES) FAIL(TL_E_BLOB, "header table_offset: not 128");
    uint64_t table_end = (uint64_t)b->table_offset + (uint64_t)TL_BLOB_ENTRY_BYTES * b->n_tensors;
    uint64_t data_end = (uint64_t)b->len - 8u;
    if (b->vocab_offset % ALIGN || b->vocab_offset < table_end)
        FAIL(TL_E_BLOB, "header vocab_offset: unaligned or overlaps the tensor table");
    if (b->data_offset % ALIGN || (uint64_t)b->vocab_offset + b->vocab_bytes > b->data_offset)
        FAIL(TL_E_BLOB, "header data_offset: unaligned or overlaps the vocabulary");
    if (b->data_offset > data_end) FAIL(TL_E_BLOB, "header data_offset: past the trailer");
    return TL_OK;
}

static tl_err check_table(tl_blob *b, const char **msg) {
    uint64_t data_end = (uint64_t)b->len - 8u;
    for (uint32_t i = 0; i < b->n_tensors; i++) {
        const uint8_t *e = b->base + b->table_offset + TL_BLOB_ENTRY_BYTES * i;
        uint32_t role = rd32(e), qtype = rd32(e + 4), rows = rd32(e + 8), cols = rd32(e + 12);
        uint32_t group = rd32(e + 16), off = rd32(e + 20), nbytes = rd32(e + 24);
        uint32_t er, ec;
        int f32_only;
        if (role != i || !role_shape(b, role, &er, &ec, &f32_only)) FAIL(TL_E_BLOB, "tensor role: out of order");
        if (qtype > TL_Q_TERNARY5) FAIL(TL_E_BLOB, "tensor qtype: not 0, 1, 2 or 3");
        if (qtype == TL_Q_TERNARY5 && b->version_major < 2)
            FAIL(TL_E_BLOB, "tensor qtype: 3 (base-3 ternary) needs blob format 2.0");
        if (rows != er || cols != ec) FAIL(TL_E_BLOB, "tensor rows/cols: do not follow from the header");
        if (f32_only && qtype != TL_Q_F32) FAIL(TL_E_BLOB, "tensor qtype: norms, biases and rope must be f32");
        if (role == 0 && is_ternary(qtype)) FAIL(TL_E_BLOB, "tensor qtype: tok_embeddings cannot be ternary");
        if ((b->flags & 2u) && !f32_only && qtype == TL_Q_F32)
            FAIL(TL_E_BLOB, "tensor qtype: flags bit 1 (integer mode) needs every matrix int8 or ternary");
        if (qtype == TL_Q_INT8 && group != b->group_size) FAIL(TL_E_BLOB, "tensor group: int8 group is not the header group_size");
        if (is_ternary(qtype) && group != 0) FAIL(TL_E_BLOB, "tensor group: ternary group must be 0");
        if (off % ALIGN) FAIL(TL_E_BLOB, "tensor offset: not a multiple of 16");
        if (off < b->data_offset || (uint64_t)off + nbytes > data_end)
            FAIL(TL_E_BLOB, "tensor offset: outside the data section");
        if ((uint64_t)nbytes != implied_nbytes(qtype, rows, cols, group))
            FAIL(TL_E_BLOB, "tensor nbytes: not the size its qtype implies");
        if (qtype == TL_Q_TERNARY) {
            const uint8_t *w = b->base + off + 4;
            uint32_t rb = ceil_div(cols, 4u), used = cols % 4u;
            uint8_t pad_mask = used ? (uint8_t)(0xFFu << (2u * used)) : 0;
            for (uint32_t r = 0; r < rows; r++, w += rb) {
                for (uint32_t k = 0; k < rb; k++) {
                    uint8_t v = w[k];
                    if ((v & (v >> 1) & 0x55u) != 0) FAIL(TL_E_BLOB, "tensor data: ternary code 11 is invalid");
                }
                if (w[rb - 1] & pad_mask) FAIL(TL_E_BLOB, "tensor data: ternary row padding is not zero");
            }
        }
        if (qtype == TL_Q_TERNARY5 && !ternary5_rows_ok(b->base + off + 4, rows, cols))
            FAIL(TL_E_BLOB, "tensor data: base-3 byte over 242 or non-zero row padding");
    }
    return TL_OK;
}

static tl_err check_vocab(tl_blob *b, const char **msg) {
    uint32_t V = b->vocab_size;
    uint64_t fixed = 8ull + 4ull * V + 4ull * (V + 1u) + align4(2ull * V);
    if (fixed > b->vocab_bytes) FAIL(TL_E_BLOB, "vocab_bytes: too small for vocab_size");
    const uint8_t *v = b->base + b->vocab_offset;
    b->max_token_len = rd32(v);
    b->scores = (const float *)(const void *)(v + 8);
    b->offsets = (const uint32_t *)(const void *)(v + 8 + 4u * V);
    b->sorted_ids = (const uint16_t *)(const void *)(v + 8 + 4u * V + 4u * (V + 1u));
    b->pieces = v + fixed;
    b->pieces_len = b->vocab_bytes - (uint32_t)fixed;
    const uint8_t *offs = v + 8 + 4u * V;
    uint32_t prev = 0, longest = 0;
    for (uint32_t i = 0; i <= V; i++) {
        uint32_t o = rd32(offs + 4u * i);
        if ((i == 0 && o != 0) || o < prev || o > b->pieces_len)
            FAIL(TL_E_BLOB, "vocab offsets: not non-decreasing from 0 inside the section");
        if (i > 0 && o - prev > longest) longest = o - prev;
        prev = o;
    }
    if (b->max_token_len != longest) FAIL(TL_E_BLOB, "vocab max_token_len: not the longest piece");
    /* sorted_ids: strictly increasing in (piece bytes, id), every id < V: a permutation in the
       order the encoder's binary search needs (equal pieces by ascending id, as engine/blob/vocab.py). */
    const uint8_t *sid = v + 8 + 4u * V + 4u * (V + 1u);
    for (uint32_t i = 0; i < V; i++) {
        uint32_t id = rd16(sid + 2u * i);
        if (id >= V) FAIL(TL_E_BLOB, "vocab sorted_ids: not a permutation (id out of range)");
        if (i == 0) continue;
        uint32_t pid = rd16(sid + 2u * (i - 1u)), la, lb;
        const uint8_t *pa = tl_blob_piece(b, pid, &la), *pb = tl_blob_piece(b, id, &lb);
        int c = piece_cmp(pa, la, pb, lb);
        if (c > 0 || (c == 0 && pid >= id))
            FAIL(TL_E_BLOB, "vocab sorted_ids: not a permutation in piece order");
    }
    return TL_OK;
}

tl_err tl_blob_parse(tl_blob *b, const uint8_t *base, uint32_t len, const char **msg) {
    memset(b, 0, sizeof *b);
    if (base == NULL || len < TL_BLOB_MIN_BYTES) FAIL(TL_E_BLOB, "length: shorter than 136 bytes");
    if (((uintptr_t)base & 3u) != 0) FAIL(TL_E_ARG, "blob: base address not 4-byte aligned");
    if (memcmp(base, "TLMB", 4) != 0) FAIL(TL_E_BLOB, "magic: not TLMB");
    b->base = base;
    b->len = len;
    b->version_major = rd16(base + 4);
    b->version_minor = rd16(base + 6);
    if (b->version_major > TL_BLOB_MAJOR) FAIL(TL_E_VERSION, "version: blob format is newer than this firmware (2.x): update");
    if (b->version_major < 1) FAIL(TL_E_BLOB, "version: major 0 is not a release");
    if (rd32(base + 8) != TL_BLOB_HEADER_BYTES) FAIL(TL_E_BLOB, "header_bytes: not 128");
    if (rd32(base + 84) != len) FAIL(TL_E_BLOB, "total_len: header total_len is not the blob length");
    if (rd32(base + len - 8) != len) FAIL(TL_E_BLOB, "total_len: trailer total_len is not the blob length");
    if (tl_crc32(base, len - 4u) != rd32(base + len - 4)) FAIL(TL_E_BLOB, "crc32: trailer crc does not match");
    b->arch = rd32(base + 12);
    b->quant = rd32(base + 16);
    b->group_size = rd32(base + 20);
    b->dim = rd32(base + 24);
    b->hidden_dim = rd32(base + 28);
    b->n_layers = rd32(base + 32);
    b->n_heads = rd32(base + 36);
    b->n_kv_heads = rd32(base + 40);
    b->vocab_size = rd32(base + 44);
    b->seq_len = rd32(base + 48);
    b->flags = rd32(base + 52);
    b->norm_eps = rdf32(base + 56);
    b->rope_theta = rdf32(base + 60);
    b->n_tensors = rd32(base + 64);
    b->table_offset = rd32(base + 68);
    b->vocab_offset = rd32(base + 72);
    b->vocab_bytes = rd32(base + 76);
    b->data_offset = rd32(base + 80);
    b->bos_id = rd32(base + 120);
    b->eos_id = rd32(base + 124);
    tl_err e = check_header_fields(b, msg);
    if (e == TL_OK) e = check_table(b, msg);
    if (e == TL_OK) e = check_vocab(b, msg);
    if (e != TL_OK) return e;
    *msg = "ok";
    return TL_OK;
}

tl_err tl_blob_tensor(const tl_blob *b, uint32_t role, tl_tensor *t) {
    memset(t, 0, sizeof *t);
    if (role >= b->n_tensors) return TL_E_ARG;
    const uint8_t *e = b->base + b->table_offset + TL_BLOB_ENTRY_BYTES * role;
    const uint8_t *d = b->base + rd32(e + 20);
    t->qtype = rd32(e + 4);
    t->rows = rd32(e + 8);
    t->cols = rd32(e + 12);
    t->group = rd32(e + 16);
    if (t->qtype == TL_Q_F32) {
        t->row_bytes = 4u * t->cols;
        t->f32 = (const float *)(const void *)d;
    } else if (t->qtype == TL_Q_INT8) {
        t->n_groups = ceil_div(t->cols, t->group);
        t->row_bytes = t->cols;
        t->scales = (const float *)(const void *)d;
        t->q8 = (const int8_t *)(d + 4u * t->rows * t->n_groups);
    } else {
        t->group = 0;
        t->n_groups = 1;
        t->row_bytes = ceil_div(t->cols, t->qtype == TL_Q_TERNARY5 ? 5u : 4u);
        t->scales = (const float *)(const void *)d;
        t->t2 = d + 4;
    }
    return TL_OK;
}
