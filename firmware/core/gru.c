/* gru.c - gi = W_ih x + b_ih, gh = W_hh h + b_hh; r, z = sigmoid; n = tanh(gi_n + r gh_n);
   h = (1 - z) n + z h. The last layer's h feeds the classifier. */
#include "gru.h"

#include <string.h>

static void matvec(float *out, const tl_tensor *W, const float *x, uint32_t n, tl_qvec *qv) {
    if (W->qtype != TL_Q_F32) {
        qv->n = n;
        tl_quantize(qv, x);
    }
    tl_matmul(out, W, x, qv);
}

void tl_gru_reset(const tl_blob *b, tl_gru *s) {
    memset(s->h, 0, (size_t)b->n_layers * b->dim * sizeof *s->h);
}

tl_err tl_gru_forward(const tl_blob *b, tl_gru *s, uint32_t token, int want_logits) {
    if (token >= b->vocab_size) return TL_E_ARG;
    uint32_t dim = b->dim;
    tl_tensor t, wih, whh, bih, bhh;
    tl_blob_tensor(b, 0, &t);
    tl_embed(s->x, &t, token);
    const float *in = s->x;
    for (uint32_t l = 0; l < b->n_layers; l++) {
        uint32_t r0 = 1u + TL_G_PER_LAYER * l;
        float *h = s->h + (size_t)l * dim;
        tl_blob_tensor(b, r0 + TL_G_WIH, &wih);
        tl_blob_tensor(b, r0 + TL_G_WHH, &whh);
        tl_blob_tensor(b, r0 + TL_G_BIH, &bih);
        tl_blob_tensor(b, r0 + TL_G_BHH, &bhh);
        matvec(s->gi, &wih, in, dim, s->qv);
        for (uint32_t i = 0; i < 3 * dim; i++) s->gi[i] = s->gi[i] + bih.f32[i];
        matvec(s->gh, &whh, h, dim, s->qv);
        for (uint32_t i = 0; i < 3 * dim; i++) s->gh[i] = s->gh[i] + bhh.f32[i];
        for (uint32_t i = 0; i < dim; i++) {
            float r = tl_sigmoid(s->gi[i] + s->gh[i]);
            float z = tl_sigmoid(s->gi[dim + i] + s->gh[dim + i]);
            float n = tl_tanh(s->gi[2 * dim + i] + r * s->gh[2 * dim + i]);
            h[i] = (1.0f - z) * n + z * h[i];
        }
        in = h;
    }
    if (!want_logits) return TL_OK;
    tl_blob_tensor(b, tl_blob_role_output(b), &t);
    matvec(s->logits, &t, in, dim, s->qv);
    return TL_OK;
}
