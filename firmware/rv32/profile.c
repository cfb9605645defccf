/* profile.c - where the rv32 instructions of a token go (make rv32-prof; bench/profile_rv32.py runs it).
   Bare metal under qemu-system-riscv32 -M virt -icount shift=0: parses the blob at 0x84000000, runs
   a greedy generation of 200 tokens after the bench prompt and prints, for tokens 100..199, the mean
   instructions per token charged to each TL_PROF section of core/prof.h (minstret deltas). */
#include <stdint.h>
#include <string.h>

#include "../core/engine.h"
#include "../core/intmode.h"
#include "../core/prof.h"

#define UART_BASE 0x10000000u
#define SIFIVE_TEST 0x00100000u
#define BLOB_ADDR 0x84000000u
#define PART_SIZE 0x2F0000u
#define N_TOKENS 200u
#define FROM_TOKEN 100u

static uint8_t arena[4u * 1024u * 1024u] __attribute__((aligned(16)));
static uint64_t charged[TL_P_COUNT], last_mark;

static uint64_t instret(void) {
    uint32_t hi, lo, hi2;
    do {
        __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, minstreth\n.option pop" : "=r"(hi));
        __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, minstret\n.option pop" : "=r"(lo));
        __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, minstreth\n.option pop" : "=r"(hi2));
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}

void tl_prof_mark(int section) {
    uint64_t now = instret();
    charged[section] += now - last_mark;
    last_mark = now;
}

static void put(const char *s) {
    volatile uint8_t *u = (volatile uint8_t *)(uintptr_t)UART_BASE;
    for (; *s; s++) {
        while (!(u[5] & 0x20)) {
        }
        u[0] = (uint8_t)*s;
    }
}

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
void _exit(int code) {
    *(volatile uint32_t *)(uintptr_t)SIFIVE_TEST = code ? (((uint32_t)code << 16) | 0x3333u) : 0x5555u;
    for (;;) {
    }
}

/* instructions per call of the float operations the kernels lean on (inputs vary so nothing folds) */
static void calibrate(void) {
    static volatile float sink;
    (void)sink;
    static volatile int32_t isink;
    (void)isink;
    float a = 1.37f, b = 0.613f;
    uint64_t t0 = instret();
    for (int i = 0; i < 1000; i++) sink = a * (b + (float)i * 1e-6f);
    uint64_t t1 = instret();
    for (int i = 0; i < 1000; i++) sink = a + (b + (float)i * 1e-6f);
    uint64_t t2 = instret();
    for (int i = 0; i < 1000; i++) sink = (float)(i * 12345 + 7);
    uint64_t t3 = instret();
    for (int i = 0; i < 1000; i++) sink = tl_i64_scaled((int64_t)i * 1234567, -20);
    uint64_t t4 = instret();
    for (int i = 0; i < 1000; i++) isink = i * 3;
    uint64_t t5 = instret();
    uint64_t base = (t5 - t4) / 1000u;
    put("calib mul+add+i2f ");
    put_u64((t1 - t0) / 1000u);
    put("\ncalib add+add+i2f ");
    put_u64((t2 - t1) / 1000u);
    put("\ncalib i2f ");
    put_u64((t3 - t2) / 1000u);
    put("\ncalib i64_scaled ");
    put_u64((t4 - t3) / 1000u);
    put("\ncalib loop ");
    put_u64(base);
    put("\n");
}

int main(void) {
    static tl_engine e;
    calibrate();
    tl_blob b;
    const char *msg;
    int empty;
    const uint8_t *region = (const uint8_t *)(uintptr_t)BLOB_ADDR;
    uint32_t len = tl_blob_peek_len(region, PART_SIZE, &empty);
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
            t0 = instret();
        }
        last_mark = instret();
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
    put_u64((instret() - t0) / n);
    put("\n");
    _exit(0);
}
