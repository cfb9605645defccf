/* blob.h - the weight blob (firmware/BLOB.md), parsed and read in place; weights are never copied.

   tl_blob_parse runs every check of BLOB.md's reader list, in that order, and never reads outside
   [base, base + len). After it succeeds every tensor and vocab access through this API is in bounds. */
#ifndef TL_BLOB_H
#define TL_BLOB_H

#include <stdint.h>

#include "error.h"

#define TL_BLOB_HEADER_BYTES 128u
#define TL_BLOB_ENTRY_BYTES 32u
#define TL_BLOB_MIN_BYTES 136u /* header + trailer */
#define TL_BLOB_NONE 0xFFFFFFFFu /* bos_id / eos_id absent */

enum { TL_ARCH_TRANSFORMER = 0, TL_ARCH_GRU = 1 };
/* TL_Q_TERNARY5 (format 2.0): ternary packed base-3, 5 weights a byte (BLOB.md "Tensor storage") */
enum { TL_Q_F32 = 0, TL_Q_INT8 = 1, TL_Q_TERNARY = 2, TL_Q_TERNARY5 = 3 };
#define TL_BLOB_MAJOR 2u /* the newest format major this firmware reads */

/* Roles of the transformer tensors inside a layer (role = 1 + 9*layer + offset). */
enum {
    TL_T_ATTN_NORM = 0, TL_T_WQ, TL_T_WK, TL_T_WV, TL_T_WO, TL_T_FFN_NORM, TL_T_W1, TL_T_W2, TL_T_W3,
    TL_T_PER_LAYER
};
/* Roles of the GRU tensors inside a layer (role = 1 + 4*layer + offset). */
enum { TL_G_WIH = 0, TL_G_WHH, TL_G_BIH, TL_G_BHH, TL_G_PER_LAYER };

typedef struct {
    uint32_t qtype;       /* TL_Q_* */
    uint32_t rows, cols;  /* [rows, cols] row-major */
    uint32_t group;       /* int8: scale group along a row; ternary: 0 (one scale) */
    uint32_t n_groups;    /* scale groups per row (int8), 1 (ternary), 0 (f32) */
    uint32_t row_bytes;   /* bytes of one row of weights: 4*cols, cols, ceil(cols/4), ceil(cols/5) */
    const float *f32;     /* f32 weights, or NULL */
    const float *scales;  /* int8: rows*n_groups scales; ternary: one; else NULL */
    const int8_t *q8;     /* int8 weights, or NULL */
    const uint8_t *t2;    /* ternary packed weights (2-bit or, for TL_Q_TERNARY5, base-3), or NULL */
} tl_tensor;

typedef struct {
    const uint8_t *base;  /* the blob, read in place (4-byte aligned) */
    uint32_t len;         /* total_len */
    /* header */
    uint32_t version_major, version_minor;
    uint32_t arch, quant, group_size;
    uint32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len, flags;
    float norm_eps, rope_theta;
    uint32_t n_tensors, table_offset, vocab_offset, vocab_bytes, data_offset;
    uint32_t bos_id, eos_id;
    uint32_t head_dim, kv_dim; /* derived (transformer) */
    /* vocabulary, in place */
    uint32_t max_token_len;
    const float *scores;       /* [vocab] */
    const uint32_t *offsets;   /* [vocab + 1], into pieces */
    const uint16_t *sorted_ids;/* [vocab] */
    const uint8_t *pieces;     /* the byte area */
    uint32_t pieces_len;       /* bytes available in the byte area */
} tl_blob;

/* Reads total_len from a header at the start of a partition of `cap` bytes (0 if not a blob
   header); *empty is set when the region looks erased (0xFF..) or zeroed. */
uint32_t tl_blob_peek_len(const uint8_t *region, uint32_t cap, int *empty);

/* Parses and checks a blob of exactly `len` bytes. On failure returns an error code and sets *msg
   to a static message naming the failed field. */
tl_err tl_blob_parse(tl_blob *b, const uint8_t *base, uint32_t len, const char **msg);

/* The tensor with role `role` (already checked by tl_blob_parse). */
tl_err tl_blob_tensor(const tl_blob *b, uint32_t role, tl_tensor *t);

/* Number of tensors the header's architecture implies. */
uint32_t tl_blob_expected_tensors(const tl_blob *b);
uint32_t tl_blob_role_output(const tl_blob *b); /* classifier role (tok_embeddings when tied) */
uint32_t tl_blob_role_norm(const tl_blob *b);   /* transformer final norm */
uint32_t tl_blob_role_rope(const tl_blob *b);   /* transformer rope table */

/* Piece bytes of token id (id < vocab_size). */
const uint8_t *tl_blob_piece(const tl_blob *b, uint32_t id, uint32_t *len);

#endif
