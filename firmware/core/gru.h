/* gru.h - one step of a stack of single-layer GRUs (PyTorch semantics, gate order r, z, n). */
#ifndef TL_GRU_H
#define TL_GRU_H

#include <stdint.h>

#include "blob.h"
#include "kernels.h"

typedef struct {
    float *x;       /* [dim] embedded input */
    float *h;       /* [n_layers * dim] hidden state per layer */
    float *gi, *gh; /* [3 * dim] gate pre-activations */
    float *logits;  /* [vocab] */
    tl_qvec *qv;    /* activation quantization scratch ([dim]), or NULL for f32 */
} tl_gru;

void tl_gru_reset(const tl_blob *b, tl_gru *s);
tl_err tl_gru_forward(const tl_blob *b, tl_gru *s, uint32_t token, int want_logits);

#endif
