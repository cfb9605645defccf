/* profile.c - where the rv32 instructions of a token go (make rv32-prof; bench/profile_rv32.py runs it).
   Bare metal under qemu-system-riscv32 -M virt -icount shift=0: parses the blob at 0x84000000, runs
   a greedy generation of 200 tokens after the bench prompt and prints, for tokens 100..199, the mean
   instructions per token charged to each TL_PROF section of core/prof.h (minstret deltas). */
#include <stdint.h>
#include <string.h>

#include "../core/engine.h"
#include "../core/prof.h"
#include "virt.h"

#define N_TOKENS 200u
#define FROM_TOKEN 100u

static uint8_t arena[4u * 1024u * 1024u] __attribute__((aligned(16)));
static uint64_t charged[TL_P_COUNT], last_mark;

void tl_prof_mark(int section) {
    uint64_t now = rv32_instret();
    charged[section] += now - last_mark;
    last_mark = now;
}

static void put(const char *s) { rv32_uart_write((const uint8_t *)s, (uint32_t)strlen(s)); }

static void put_u64(uint64_t v) {
    char buf[24];
    int i = 23;
    buf[i] = 0;
    do buf[--i] = (char)('0' + v % 10u), v /= 10u;
    while (v);
    put(buf + i);
}

static const char *const NAMES[TL_P_COUNT] = {"norm", "quant", "qkv", "rope", "kvcache", "scores", "softmax", "values",
                                              "wo", "w13", "swiglu", "w2", "head", "sample"};

void _exit(int code);
void _exit(int code) { rv32_power_off(code); }

int main(void) {
    static tl_engine e;
    tl_blob b;
    const char *msg;
    int empty;
    const uint8_t *region = (const uint8_t *)(uintptr_t)TL_RV32_BLOB_ADDR;
    uint32_t len = tl_blob_peek_len(region, TL_RV32_PART_SIZE, &empty);
    if (tl_blob_parse(&b, region, len, &msg) != TL_OK || tl_engine_init(&e, &b, 0, arena, sizeof arena, &msg)) {
        put("error: ");
        put(msg);
        put("\n");
        _exit(1);
    }
    e.blob.eos_id = TL_BLOB_NONE; /* always N_TOKENS tokens */
    e.blob.bos_id = TL_BLOB_NONE;
    static const uint32_t prompt[] = {1, 403, 407, 261, 378}; /* <s> Once upon a time */
    tl_gen_params p = {0.0f, 0, 0.0f, 1.0f, 0, N_TOKENS};
    tl_engine_begin(&e, &p, prompt, sizeof prompt / sizeof prompt[0]);
    uint32_t tok, count = 0;
    tl_gen_status st;
    uint64_t t0 = 0;
    for (;;) {
        if (count == FROM_TOKEN) {
            memset(charged, 0, sizeof charged);
            t0 = rv32_instret();
        }
        last_mark = rv32_instret();
        if (tl_engine_next(&e, &tok, &st) != TL_OK || st != TL_GEN_TOKEN) break;
        TL_PROF(TL_P_SAMPLE);
        count++;
    }
    uint64_t n = count - FROM_TOKEN, total = 0;
    put("section instructions/token\n");
    for (int i = 0; i < TL_P_COUNT; i++) {
        put(NAMES[i]);
        put(" ");
        put_u64(charged[i] / n);
        put("\n");
        total += charged[i];
    }
    put("total ");
    put_u64(total / n);
    put("\nwall ");
    put_u64((rv32_instret() - t0) / n);
    put("\n");
    _exit(0);
}
