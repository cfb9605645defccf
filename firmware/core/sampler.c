/* sampler.c - deterministic sampling. Sorting is a heap over (prob desc, index asc), popped only as
   far as top-k / top-p need, so ties always resolve to the lower index. */
#include "sampler.h"

#include "kernels.h"

void tl_rng_seed(uint64_t *state, uint64_t seed) { *state = seed ? seed : 0x9E3779B97F4A7C15ull; }

uint32_t tl_rng_u32(uint64_t *state) {
    uint64_t s = *state;
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    *state = s;
    return (uint32_t)((s * 0x2545F4914F6CDD1Dull) >> 32);
}

float tl_rng_f32(uint64_t *state) { return (float)(tl_rng_u32(state) >> 8) / 16777216.0f; }

void tl_sampler_init(tl_sampler *s, tl_probindex *scratch, uint32_t vocab) {
    s->vocab = vocab;
    s->scratch = scratch;
    tl_sampler_configure(s, 0.0f, 0, 0.0f, 1.0f, 0);
}

void tl_sampler_configure(tl_sampler *s, float temperature, uint32_t topk, float topp, float rep,
                          uint64_t seed) {
    s->temperature = temperature;
    s->topk = topk;
    s->topp = topp;
    s->rep = rep;
    tl_rng_seed(&s->rng, seed);
}

/* a goes before b in the descending list */
static int before(const tl_probindex *a, const tl_probindex *b) {
    return a->prob > b->prob || (a->prob == b->prob && a->index < b->index);
}

static void sift_down(tl_probindex *h, uint32_t n, uint32_t i) {
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < n && before(&h[l], &h[best])) best = l;
        if (r < n && before(&h[r], &h[best])) best = r;
        if (best == i) return;
        tl_probindex t = h[i];
        h[i] = h[best];
        h[best] = t;
        i = best;
    }
}

uint32_t tl_sample(tl_sampler *s, float *logits, const uint32_t *history, uint32_t n_history) {
    uint32_t V = s->vocab;
    tl_probindex *pi = s->scratch;
    if (s->rep != 1.0f) {
        /* scratch[id].index marks ids already penalized (the scratch is free until below) */
        for (uint32_t i = 0; i < n_history; i++)
            if (history[i] < V) pi[history[i]].index = 0;
        for (uint32_t i = 0; i < n_history; i++) {
            uint32_t t = history[i];
            if (t >= V || pi[t].index) continue;
            pi[t].index = 1;
            logits[t] = logits[t] > 0.0f ? logits[t] / s->rep : logits[t] * s->rep;
        }
    }
    if (s->temperature == 0.0f) {
        uint32_t best = 0;
        for (uint32_t i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (uint32_t i = 0; i < V; i++) logits[i] = logits[i] / s->temperature;
    tl_softmax(logits, V);
    int topk_on = s->topk > 0 && s->topk < V;
    int topp_on = s->topp > 0.0f && s->topp < 1.0f;
    float r = tl_rng_f32(&s->rng);
    if (!topk_on && !topp_on) {
        float total = 0.0f;
        for (uint32_t i = 0; i < V; i++) total = total + logits[i];
        r = r * total;
        float cdf = 0.0f;
        for (uint32_t i = 0; i < V; i++) {
            cdf = cdf + logits[i];
            if (r < cdf) return i;
        }
        return V - 1;
    }
    for (uint32_t i = 0; i < V; i++) {
        pi[i].prob = logits[i];
        pi[i].index = i;
    }
    for (uint32_t i = V / 2; i-- > 0;) sift_down(pi, V, i);
    /* pop in descending order; popped entry m goes to pi[V - 1 - m] */
    uint32_t limit = topk_on ? s->topk : V, m = 0, heap = V;
    float total = 0.0f;
    while (m < limit) {
        tl_probindex top = pi[0];
        heap--;
        pi[0] = pi[heap];
        pi[heap] = top;
        sift_down(pi, heap, 0);
        m++;
        total = total + top.prob;
        if (topp_on && total >= s->topp) break;
    }
    r = r * total;
    float cdf = 0.0f;
    for (uint32_t k = 0; k < m; k++) {
        cdf = cdf + pi[V - 1 - k].prob;
        if (r < cdf) return pi[V - 1 - k].index;
    }
    return pi[V - m].index;
}
