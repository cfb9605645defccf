/* tokenizer.c - decode and encode without buffers: pair lookups compare the concatenation in place.
   Same rules as engine/blob/reference.py (Reference.encode / decode). */
#include "tokenizer.h"

#include <string.h>

#define N_CONTROL 3u /* sentencepiece <unk>, <s>, </s>: never encoded, decoded as nothing */

static int is_sentencepiece(const tl_blob *b) { return b->bos_id != TL_BLOB_NONE; }

const uint8_t *tl_decode(const tl_blob *b, uint32_t prev, uint32_t tok, uint32_t *len) {
    const uint8_t *p = tl_blob_piece(b, tok, len);
    if (is_sentencepiece(b) && tok < N_CONTROL) {
        *len = 0;
        return p;
    }
    if (is_sentencepiece(b) && prev == b->bos_id && *len > 0 && p[0] == ' ') {
        p++;
        (*len)--;
    }
    return p;
}

/* sign of (a ‖ c) compared with piece p, memcmp order, shorter first */
static int cmp_concat(const uint8_t *a, uint32_t na, const uint8_t *c, uint32_t nc, const uint8_t *p,
                      uint32_t np) {
    uint32_t k = na < np ? na : np;
    int r = k ? memcmp(a, p, k) : 0;
    if (r) return r;
    if (np <= na) return (na + nc > np) ? 1 : 0;
    uint32_t rest = np - na;
    k = nc < rest ? nc : rest;
    r = k ? memcmp(c, p + na, k) : 0;
    if (r) return r;
    return (nc > rest) - (nc < rest);
}

int32_t tl_vocab_lookup(const tl_blob *b, const uint8_t *a, uint32_t na, const uint8_t *c, uint32_t nc) {
    uint32_t lo = 0, hi = b->vocab_size; /* first index whose piece > key */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2, np;
        const uint8_t *p = tl_blob_piece(b, b->sorted_ids[mid], &np);
        if (cmp_concat(a, na, c, nc, p, np) >= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* walk back over the run of equal pieces: the highest id that is not a control piece */
    while (lo > 0) {
        uint32_t np, id = b->sorted_ids[lo - 1];
        const uint8_t *p = tl_blob_piece(b, id, &np);
        if (cmp_concat(a, na, c, nc, p, np) != 0) break;
        if (!(is_sentencepiece(b) && id < N_CONTROL)) return (int32_t)id;
        lo--;
    }
    return -1;
}

static tl_err push(uint32_t *tokens, uint32_t cap, uint32_t *n, uint32_t id) {
    if (*n >= cap) return TL_E_ARG;
    tokens[(*n)++] = id;
    return TL_OK;
}

static tl_err push_piece(const tl_blob *b, const uint8_t *s, uint32_t len, uint32_t *tokens,
                         uint32_t cap, uint32_t *n) {
    int32_t id = tl_vocab_lookup(b, s, len, s, 0);
    if (id >= 0) return push(tokens, cap, n, (uint32_t)id);
    for (uint32_t k = 0; k < len; k++) {
        uint32_t fb = (uint32_t)s[k] + 3u;
        if (fb >= b->vocab_size) return TL_E_ARG; /* no byte-fallback pieces in this vocab */
        tl_err e = push(tokens, cap, n, fb);
        if (e) return e;
    }
    return TL_OK;
}

tl_err tl_encode(const tl_blob *b, const uint8_t *text, uint32_t n, int add_bos, uint32_t *tokens,
                 uint32_t cap, uint32_t *n_tokens) {
    uint32_t nt = 0, first;
    tl_err e = TL_OK;
    *n_tokens = 0;
    if (!is_sentencepiece(b)) { /* byte vocab: the bytes are the ids */
        if (b->vocab_size < 256 || n > cap) return TL_E_ARG;
        for (uint32_t i = 0; i < n; i++) tokens[i] = text[i];
        *n_tokens = n;
        return TL_OK;
    }
    if (add_bos) e = push(tokens, cap, &nt, b->bos_id);
    first = nt; /* BOS is never merged */
    if (!e && n > 0) {
        static const uint8_t space = ' ';
        e = push_piece(b, &space, 1, tokens, cap, &nt);
    }
    uint32_t start = 0, len = 0;
    for (uint32_t i = 0; i < n && !e; i++) {
        if ((text[i] & 0xC0) != 0x80) len = 0;
        if (len == 0) start = i;
        len++;
        if (i + 1 < n && (text[i + 1] & 0xC0) == 0x80 && len < 4) continue;
        e = push_piece(b, text + start, len, tokens, cap, &nt);
        len = 0;
    }
    if (e) return e;
    for (;;) {
        float best_score = -1e10f;
        int32_t best_id = -1;
        uint32_t best_idx = 0;
        for (uint32_t i = first; i + 1 < nt; i++) {
            uint32_t la, lc;
            const uint8_t *pa = tl_blob_piece(b, tokens[i], &la);
            const uint8_t *pc = tl_blob_piece(b, tokens[i + 1], &lc);
            int32_t id = tl_vocab_lookup(b, pa, la, pc, lc);
            if (id >= 0 && b->scores[id] > best_score) {
                best_score = b->scores[id];
                best_id = id;
                best_idx = i;
            }
        }
        if (best_id < 0) break;
        tokens[best_idx] = (uint32_t)best_id;
        for (uint32_t i = best_idx + 1; i + 1 < nt; i++) tokens[i] = tokens[i + 1];
        nt--;
    }
    *n_tokens = nt;
    return TL_OK;
}
