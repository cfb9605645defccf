/* device.h - the board side of firmware/PROTOCOL.md: reads lines, runs commands, streams tokens,
   takes model uploads. The same loop runs on the host (virtual board), ESP-IDF and bare-metal rv32;
   only the transport and the model partition callbacks differ. */
#ifndef TL_DEVICE_H
#define TL_DEVICE_H

#include <stdint.h>

#include "engine.h"
#include "error.h"
#include "heap.h"
#include "protocol.h"
#include "sha256.h"

#define TL_FW_VERSION "0.2.0"
#define TL_UPLOAD_CHUNK 192u   /* data bytes per UPDATA */
#define TL_MAX_PIECE_BYTES 192u /* a TOK line must fit TL_LINE_MAX */
#define TL_YIELD_US 1000000u    /* default busy time between two calls of tl_transport.yield */

typedef struct {
    void *ctx;
    int (*read_byte)(void *ctx);                           /* next input byte, or -1 if none waits */
    void (*write)(void *ctx, const uint8_t *d, uint32_t n); /* whole lines */
    uint64_t (*time_us)(void *ctx);                        /* monotonic µs */
    uint64_t (*instret)(void *ctx);                        /* instructions retired, or NULL */
    void (*wait)(void *ctx, uint32_t max_us);              /* idle until input or timeout; NULL = spin */
    void (*noise)(void *ctx, uint32_t token_index);        /* optional log noise between lines */
    /* Gives the OS a moment while a generation keeps the loop busy (ESP-IDF: vTaskDelay(1), so the
       idle task feeds the task watchdog); NULL = none. Called between model steps (prompt tokens
       and generated tokens, never inside one) once cfg.yield_us of busy time has passed since the
       last yield or idle wait: the gap between two yields is at most yield_us plus one step. */
    void (*yield)(void *ctx);
} tl_transport;

/* The `model` flash partition. `active` maps the current model (cap bytes; erased flash reads 0xFF).
   Uploads go begin -> write... -> staged (read back for the hash) -> commit. When in_place is set the
   staging area IS the active model (one partition, the ESP32): begin drops the current model. */
typedef struct {
    void *ctx;
    uint32_t cap;
    int in_place;
    const uint8_t *(*active)(void *ctx);
    tl_err (*begin)(void *ctx, uint32_t size);
    tl_err (*write)(void *ctx, uint32_t off, const uint8_t *d, uint32_t n);
    const uint8_t *(*staged)(void *ctx);
    tl_err (*commit)(void *ctx, uint32_t size);
    /* Optional: erase [off, off + n) (sector-aligned). When set, begin erases nothing and the device
       erases sector by sector just ahead of the data as it arrives, so no single command waits for a
       whole partition erase (seconds for megabytes on SPI flash). */
    uint32_t sector;
    tl_err (*erase)(void *ctx, uint32_t off, uint32_t n);
} tl_partition;

typedef struct {
    const char *board;      /* esp32 / esp32-s3 / esp32-c3 / host / rv32 */
    uint32_t ctx;           /* context to use (0 = the blob's seq_len) */
    uint32_t us_per_token;  /* emulated extra time per token (virtual board) */
    uint32_t yield_us;      /* busy µs between yields (0 = TL_YIELD_US) */
} tl_device_cfg;

enum { TL_MODEL_NONE = 0, TL_MODEL_OK, TL_MODEL_BAD };
enum { TL_POLL_IDLE = 0, TL_POLL_BUSY, TL_POLL_RESET };

typedef struct {
    tl_transport tp;
    tl_partition part;
    tl_device_cfg cfg;
    tl_allocator mem;        /* where the model's blocks come from (allocated per model load) */
    void *blocks[TL_N_BLOCKS];
    char msg_buf[112];       /* model_msg with numbers (a RAM shortfall) */
    /* io buffers: the TL_IO_BUFFER_BYTES of the RAM report */
    char in[TL_LINE_MAX];
    char out[TL_LINE_MAX];
    uint32_t in_len;
    int in_overflow;
    /* model */
    int model;               /* TL_MODEL_* */
    const char *model_msg;   /* why the model is none/bad */
    tl_engine engine;
    uint32_t blob_len;
    uint8_t blob_sha[32];
    /* generation */
    int gen_active;
    uint64_t gen_id, gen_t0, gen_prompt_us;
    uint64_t stop_id;        /* STOP received while generating (0 = none) */
    int prefilling;          /* the prompt is still being run, a token per poll */
    uint64_t last_yield;     /* time of the last yield or idle wait */
    uint32_t n_yields;       /* yields so far (tests) */
    /* the last END sent, for STATE (a host that lost the END line asks instead of timing out) */
    uint64_t end_id, end_us, end_prompt_us;
    uint32_t end_n;
    const char *end_reason;
    uint32_t prompt_len;     /* prompt tokens held in engine.tokens by PROMPT for the next GEN */
    int reset_pending;
    /* upload */
    int up_active;
    uint32_t up_size, up_next, up_erased;
    uint8_t up_sha[32];
    int in_step;             /* a token is being produced: STOP waits for its TOK line */
} tl_device;

void tl_device_init(tl_device *d, const tl_transport *tp, const tl_partition *part,
                    const tl_device_cfg *cfg, const tl_allocator *mem);
/* (Re)loads the model from the partition and sends @READY. */
void tl_device_boot(tl_device *d);
/* Reads what input waits, runs at most one generation step. Returns TL_POLL_BUSY while a
   generation runs, TL_POLL_RESET after a RESET was acknowledged (call tl_device_boot), else IDLE. */
int tl_device_poll(tl_device *d);
/* Feeds one input byte (poll does this for the transport; tests and fuzzers call it directly). */
void tl_device_feed(tl_device *d, uint8_t c);

#endif
