/* tokenizer.h - token ids <-> bytes with the blob's vocabulary (llama2.c run.c semantics). */
#ifndef TL_TOKENIZER_H
#define TL_TOKENIZER_H

#include <stdint.h>

#include "blob.h"
#include "error.h"

/* The bytes of `tok` as printed after `prev`: a leading space is dropped right after BOS. */
const uint8_t *tl_decode(const tl_blob *b, uint32_t prev, uint32_t tok, uint32_t *len);

/* The id whose piece equals the bytes a[0..na) followed by c[0..nc), or -1. When several pieces
   have these bytes (a byte-fallback piece and a normal piece) the highest id wins. */
int32_t tl_vocab_lookup(const tl_blob *b, const uint8_t *a, uint32_t na, const uint8_t *c, uint32_t nc);

/* llama2.c encode: [BOS if add_bos and the blob has one], dummy-prefix " " when the text is non-empty
   and the blob has a BOS (sentencepiece vocab), each UTF-8 character looked up (byte fallback
   id = byte + 3), then repeated best-score merges (leftmost on ties). tokens[cap] is the caller's. */
tl_err tl_encode(const tl_blob *b, const uint8_t *text, uint32_t n, int add_bos, uint32_t *tokens,
                 uint32_t cap, uint32_t *n_tokens);

#endif
