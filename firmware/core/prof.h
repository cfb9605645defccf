/* prof.h - where the instructions of a step go, for the rv32 profile build (make rv32-prof) only.
   TL_PROF(section) charges the instructions retired since the previous mark to `section`; the front
   end that defines TL_PROFILE supplies tl_prof_mark (firmware/rv32/profile.c reads minstret). In
   every other build the marks compile to nothing. */
#ifndef TL_PROF_H
#define TL_PROF_H

enum {
    TL_P_NORM,     /* rmsnorm */
    TL_P_QUANT,    /* activation quantization (iquant / tl_quantize) */
    TL_P_QKV,      /* wq, wk, wv matmuls */
    TL_P_ROPE,     /* RoPE */
    TL_P_KVCACHE,  /* K/V into the cache */
    TL_P_ATTN,     /* attention: q quantization and the scores */
    TL_P_SOFTMAX,  /* attention: integer softmax */
    TL_P_VALUES,   /* attention: the weighted sum of the values */
    TL_P_WO,       /* wo matmul + residual */
    TL_P_W13,      /* w1, w3 matmuls */
    TL_P_SWIGLU,   /* SwiGLU */
    TL_P_W2,       /* w2 matmul + residual */
    TL_P_HEAD,     /* embedding, final norm, classifier */
    TL_P_SAMPLE,   /* sampler and the rest of tl_engine_next */
    TL_P_COUNT
};

#ifdef TL_PROFILE
void tl_prof_mark(int section);
#define TL_PROF(section) tl_prof_mark(section)
#else
#define TL_PROF(section) ((void)0)
#endif

#endif
