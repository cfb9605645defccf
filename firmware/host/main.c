/* main.c - the virtual board: firmware/core's protocol loop on a pseudo-terminal (or stdin/stdout),
   with a file standing in for the model partition. Also a --bench mode (no protocol) for callgrind.

   tinylm-board --blob PATH [--stdio] [--us-per-token N] [--boot-banner] [--ram BYTES] [--board NAME]
                [--heap B1,B2,...] [--ctx N] [--partition-size BYTES] [--flood N [--flood-rate LINES_PER_S]]
                [--chaos N] [--drop-end N] [--parent-fd FD]

   --ram BYTES: one heap region of BYTES - 1024 (the protocol buffers are the rest); --heap: the heap
   as separate regions of these sizes, as a chip has them (engine/config/budget.py BOARDS), so the
   model's blocks must each fit one region. --drop-end N: every N-th @END line is never sent.
   tinylm-board --flash-image PATH --offset 0x110000 ...
   tinylm-board --blob PATH --bench N --prompt-ids 1,2,3 [--temp T --topp P --seed S] */
#define _XOPEN_SOURCE 600
#define _DEFAULT_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../core/device.h"

/* --- options ------------------------------------------------------------------------------- */

typedef struct {
    const char *blob_path, *image_path, *board, *prompt_ids;
    uint64_t offset, part_size, ram;
    uint32_t us_per_token, ctx, bench;
    uint32_t flood, flood_rate, chaos, drop_end;
    const char *heap;
    int stdio, banner, parent_fd;
    float temp, topp;
    uint64_t seed;
} options;

static int usage(const char *why) {
    fprintf(stderr, "tinylm-board: %s\n"
            "usage: tinylm-board (--blob PATH | --flash-image PATH --offset OFF) [--stdio] [--us-per-token N]\n"
            "       [--boot-banner] [--ram BYTES] [--board NAME] [--ctx N] [--partition-size BYTES]\n"
            "       [--heap B1,B2,...] [--flood N [--flood-rate LINES_PER_S]] [--chaos N] [--drop-end N]\n"
            "       [--parent-fd FD]\n"
            "       [--bench N --prompt-ids a,b,c [--temp T] [--topp P] [--seed S]]\n", why);
    return 2;
}

static int parse_num(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *s == '\0' || *end != '\0') return -1;
    *out = v;
    return 0;
}

/* --- model partition backed by a file (atomic replace on commit) ---------------------------- */

typedef struct {
    const char *path;   /* the blob file, or the whole flash image */
    uint8_t *file;      /* file contents (image) or the blob region */
    uint64_t file_len;  /* bytes of `file` that are the file */
    uint64_t offset;    /* partition offset inside the file */
    uint32_t cap;       /* partition size */
    uint8_t *staging;   /* upload staging area [cap] */
    int image;          /* 1: --flash-image */
} file_partition;

static const uint8_t *fp_active(void *ctx) {
    file_partition *p = ctx;
    return p->file + p->offset;
}

static tl_err fp_begin(void *ctx, uint32_t size) {
    (void)ctx; /* the device erases ahead of the data (fp_erase), as on the ESP32 */
    (void)size;
    return TL_OK;
}

static tl_err fp_erase(void *ctx, uint32_t off, uint32_t n) {
    file_partition *p = ctx;
    if ((uint64_t)off + n > p->cap || off % 4096u != 0) return TL_E_IO;
    memset(p->staging + off, 0xFF, n); /* erased flash */
    return TL_OK;
}

static tl_err fp_write(void *ctx, uint32_t off, const uint8_t *d, uint32_t n) {
    file_partition *p = ctx;
    if ((uint64_t)off + n > p->cap) return TL_E_IO;
    memcpy(p->staging + off, d, n);
    return TL_OK;
}

static const uint8_t *fp_staged(void *ctx) { return ((file_partition *)ctx)->staging; }

static tl_err fp_commit(void *ctx, uint32_t size) {
    file_partition *p = ctx;
    uint8_t *region = p->file + p->offset;
    memcpy(region, p->staging, size);
    if (p->image) memset(region + size, 0xFF, p->cap - size);
    else p->file_len = size;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", p->path) >= (int)sizeof tmp) return TL_E_IO;
    FILE *f = fopen(tmp, "wb");
    if (!f) return TL_E_IO;
    size_t want = (size_t)p->file_len;
    int ok = fwrite(p->file, 1, want, f) == want;
    ok &= fflush(f) == 0;
    ok &= fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, p->path) != 0) return TL_E_IO;
    return TL_OK;
}

static int fp_open(file_partition *p, const options *o) {
    memset(p, 0, sizeof *p);
    p->image = o->image_path != NULL;
    p->path = p->image ? o->image_path : o->blob_path;
    p->offset = p->image ? o->offset : 0;
    FILE *f = fopen(p->path, "rb");
    long len = 0;
    if (f) {
        if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
            fclose(f);
            return -1;
        }
    } else if (p->image) {
        fprintf(stderr, "tinylm-board: cannot open flash image %s\n", p->path);
        return -1;
    }
    uint64_t cap = o->part_size;
    if (p->image) {
        if ((uint64_t)len <= p->offset) {
            fprintf(stderr, "tinylm-board: offset is past the end of the flash image\n");
            if (f) fclose(f);
            return -1;
        }
        if (cap > (uint64_t)len - p->offset) cap = (uint64_t)len - p->offset;
    } else if ((uint64_t)len > cap) {
        cap = (uint64_t)len;
    }
    if (cap > 0x7FFFFFFFu) cap = 0x7FFFFFFFu;
    p->cap = (uint32_t)cap;
    uint64_t alloc = p->image ? (uint64_t)len : cap;
    p->file = calloc(1, alloc + 16);   /* calloc: untouched pages cost nothing */
    p->staging = calloc(1, cap + 16);
    if (!p->file || !p->staging) {
        if (f) fclose(f);
        return -1;
    }
    if (f) {
        if (len > 0 && fread(p->file, 1, (size_t)len, f) != (size_t)len) {
            fclose(f);
            return -1;
        }
        fclose(f);
    } else {
        memset(p->file, 0xFF, 4); /* no file yet: an erased partition */
    }
    p->file_len = (uint64_t)len;
    return 0;
}

/* --- transport: a pty master or stdin/stdout ------------------------------------------------ */

typedef struct {
    int in_fd, out_fd;
    int pty;           /* serving a pty master: no client = hang-up */
    int hup;           /* no client on the pty right now */
    uint8_t buf[4096];
    uint32_t len, pos;
    int banner;
    int eof;           /* stdin closed (--stdio), or the parent process ended (--parent-fd) */
    uint32_t banner_seq;
    const char *board;
    uint64_t offset;
    uint32_t chaos;    /* every N tokens: garbage, a cut and a corrupted protocol line, a boot banner */
    uint32_t drop_end, n_end; /* every drop_end-th @END line is lost (0 = none) */
    uint32_t flood, flood_rate;         /* lines per boot, lines/s (0 = as fast as the port takes them) */
    uint32_t flood_sent;                /* numbered lines sent since the last boot */
    uint64_t flood_t0;                  /* io_time() of the boot that started the flood */
    int parent_fd;                      /* read end of a pipe whose writer is the parent, or -1 */
    uint64_t parent_checked;            /* io_time() of the last look at parent_fd */
    struct timespec t0;
} host_io;

static uint64_t io_time(void *ctx) {
    host_io *io = ctx;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)(t.tv_sec - io->t0.tv_sec) * 1000000u + (uint64_t)(t.tv_nsec / 1000) -
           (uint64_t)(io->t0.tv_nsec / 1000);
}

static int io_read(void *ctx) {
    host_io *io = ctx;
    if (io->pos < io->len) return io->buf[io->pos++];
    struct pollfd pfd = {io->in_fd, POLLIN, 0};
    if (poll(&pfd, 1, 0) <= 0) return -1;
    if (pfd.revents & (POLLHUP | POLLERR)) {
        if (io->pty) {
            io->hup = 1;
            if (!(pfd.revents & POLLIN)) return -1;
        }
    }
    ssize_t n = read(io->in_fd, io->buf, sizeof io->buf);
    if (n <= 0) {
        if (io->pty) io->hup = 1;
        else if (n == 0) io->eof = 1; /* stdin closed: main() ends the board */
        return -1;
    }
    io->len = (uint32_t)n;
    io->pos = 1;
    return io->buf[0];
}

static void io_write(void *ctx, const uint8_t *d, uint32_t n) {
    host_io *io = ctx;
    if (io->drop_end && n > 4 && memcmp(d, "@END", 4) == 0 && ++io->n_end % io->drop_end == 0) return;
    while (n > 0) {
        ssize_t w = write(io->out_fd, d, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd pfd = {io->out_fd, POLLOUT, 0};
                poll(&pfd, 1, 100);
                continue;
            }
            return; /* no client: the bytes are lost, as on a real UART */
        }
        d += w;
        n -= (uint32_t)w;
    }
}

static uint32_t flood_due_in(host_io *io);

static void io_wait(void *ctx, uint32_t max_us) {
    host_io *io = ctx;
    if (io->pos < io->len) return;
    uint32_t due = flood_due_in(io);
    if (due < max_us) max_us = due;
    if (max_us == 0) return;
    struct pollfd pfd = {io->in_fd, POLLIN, 0};
    int ms = (int)((max_us + 999u) / 1000u);
    if (poll(&pfd, 1, ms) > 0 && (pfd.revents & POLLHUP) && io->pty) {
        io->hup = 1;
        usleep(max_us < 20000 ? max_us : 20000);
    }
}

static void io_puts(host_io *io, const char *s) { io_write(io, (const uint8_t *)s, (uint32_t)strlen(s)); }

static void boot_banner(host_io *io);

/* --chaos: what a flaky board prints mid-stream, after every N-th token. Bytes that are not UTF-8 and
   no newline (glued in front of the next TOK line), a protocol line cut in half, an END line with a
   wrong CRC (must not end the generation), then a whole boot banner as if the board had rebooted. */
static void chaos_burst(host_io *io) {
    static const uint8_t garbage[] = {0xe0, 0x1c, 0xfc, 0x8f, 0x00, 0xff, 'g', 'a', 'r', 'b', 0xc3, 0x28};
    io_write(io, garbage, sizeof garbage);
    io_puts(io, "\r\n@TOK id=1 i=7 tok=4\r\n");
    io_puts(io, "@END id=1 n=0 us=0 prompt_us=0 reason=max|0000\n");
    int banner = io->banner;
    io->banner = 1;
    boot_banner(io);
    io->banner = banner;
}

static void io_noise(void *ctx, uint32_t i) {
    host_io *io = ctx;
    if (io->chaos && (i + 1) % io->chaos == 0) chaos_burst(io);
    if (!io->banner || i % 16 != 15) return;
    char line[96];
    snprintf(line, sizeof line, "I (%llu) tinylm: heap check ok, %u tokens\r\n",
             (unsigned long long)(io_time(io) / 1000u), (unsigned)(i + 1));
    io_puts(io, line);
}

static void boot_banner(host_io *io) {
    if (!io->banner) return;
    static const char *const rom[] = {
        "\xe0\x1c\xfc\x8f\n",  /* ROM output at 74880 baud, seen at 115200 */
        "ets Jun  8 2016 00:22:57\r\n",
        "\r\n",
        "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
        "configsip: 0, SPIWP:0xee\r\n",
        "clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n",
        "mode:DIO, clock div:2\r\n",
        "load:0x3fff0030,len:7104\r\n",
        "load:0x40078000,len:15576\r\n",
        "entry 0x4008064c\r\n",
        "\x1b[0;32mI (29) boot: ESP-IDF v5.1.2 2nd stage bootloader\x1b[0m\r\n",
        "\x1b[0;32mI (29) boot: compile time Nov 23 2024 16:00:00\x1b[0m\r\n",
        "\x1b[0;32mI (33) boot: chip revision: v3.0\x1b[0m\r\n",
        "\x1b[0;32mI (312) cpu_start: Starting scheduler on PRO CPU.\x1b[0m\r\n",
        "\x1b[0;32mI (0) cpu_start: Starting scheduler on APP CPU.\x1b[0m\r\n",
        NULL,
    };
    for (int i = 0; rom[i]; i++) io_puts(io, rom[i]);
    char line[128];
    snprintf(line, sizeof line, "I (330) tinylm: board %s, model partition 0x%llx (boot %u)\r\n",
             io->board, (unsigned long long)io->offset, (unsigned)++io->banner_seq);
    io_puts(io, line);
}

/* --- flood: numbered `label:value` lines, as a sensor sketch prints for the serial plotter ------ */

/* How many flood lines are due now (--flood-rate paces them from the boot on). */
static uint32_t flood_due(host_io *io) {
    uint32_t left = io->flood - io->flood_sent;
    if (!io->flood_rate || left == 0) return left;
    uint64_t want = (io_time(io) - io->flood_t0) * io->flood_rate / 1000000u;
    uint64_t due = want > io->flood_sent ? want - io->flood_sent : 0;
    return due < left ? (uint32_t)due : left;
}

/* µs until the next flood line is due: 0 = now, UINT32_MAX = no flood pending. */
static uint32_t flood_due_in(host_io *io) {
    if (io->flood_sent >= io->flood || io->hup) return UINT32_MAX;
    if (!io->flood_rate || flood_due(io)) return 0;
    uint64_t next = io->flood_t0 + ((uint64_t)io->flood_sent + 1u) * 1000000u / io->flood_rate;
    uint64_t now = io_time(io);
    return next > now ? (uint32_t)(next - now) : 0;
}

/* Writes the due flood lines, at most 256 at a time (then the protocol loop runs again). */
static void flood_some(host_io *io) {
    char buf[256 * 40];
    uint32_t n = flood_due(io), len = 0;
    if (n > 256) n = 256;
    for (uint32_t k = 0; k < n && !io->hup; k++) {
        uint32_t seq = io->flood_sent++;
        int tri = (int)(seq % 200u) - 100;
        len += (uint32_t)snprintf(buf + len, sizeof buf - len, "seq:%u val:%d\r\n", (unsigned)seq,
                                  tri < 0 ? -tri : tri);
    }
    if (len) io_write(io, (const uint8_t *)buf, len);
}

static void start_flood(host_io *io) {
    io->flood_sent = 0;
    io->flood_t0 = io_time(io);
}

/* --parent-fd: the parent holds the write end and never writes, so EOF or a hang-up means it ended
   (even by SIGKILL): the board ends too instead of serving its pty to nobody. Checked every 50 ms. */
static void check_parent(host_io *io) {
    if (io->parent_fd < 0) return;
    uint64_t now = io_time(io);
    if (now - io->parent_checked < 50000u) return;
    io->parent_checked = now;
    struct pollfd pfd = {io->parent_fd, POLLIN, 0};
    if (poll(&pfd, 1, 0) <= 0) return;
    char c;
    if ((pfd.revents & (POLLHUP | POLLERR)) || read(io->parent_fd, &c, 1) <= 0) io->eof = 1;
}

static uint64_t no_instret(void *ctx) {
    (void)ctx;
    return 0;
}

/* --- bench: greedy N tokens without the protocol --------------------------------------------- */

static int run_bench(const options *o, file_partition *fp, uint8_t *arena, uint64_t arena_cap) {
    int empty;
    const uint8_t *region = fp_active(fp);
    uint32_t len = tl_blob_peek_len(region, fp->cap, &empty);
    tl_blob b;
    const char *msg;
    if (tl_blob_parse(&b, region, len, &msg) != TL_OK) {
        fprintf(stderr, "tinylm-board: bad blob: %s\n", msg);
        return 1;
    }
    static tl_engine e;
    if (tl_engine_init(&e, &b, o->ctx, arena, arena_cap, &msg) != TL_OK) {
        fprintf(stderr, "tinylm-board: %s\n", msg);
        return 1;
    }
    e.blob.eos_id = TL_BLOB_NONE; /* always N tokens */
    e.blob.bos_id = TL_BLOB_NONE;
    uint32_t prompt[256], n = 0;
    for (const char *s = o->prompt_ids; s && *s && n < 256;) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s) return usage("--prompt-ids: comma-separated ids");
        prompt[n++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    if (n == 0) prompt[n++] = b.bos_id != TL_BLOB_NONE ? b.bos_id : 0;
    tl_gen_params p = {o->temp, 0, o->topp, 1.0f, o->seed, o->bench};
    host_io clock = {0};
    clock_gettime(CLOCK_MONOTONIC, &clock.t0);
    if (tl_engine_begin(&e, &p, prompt, n) != TL_OK) {
        fprintf(stderr, "tinylm-board: prompt rejected\n");
        return 1;
    }
    uint64_t t0 = io_time(&clock);
    uint32_t count = 0, tok;
    tl_gen_status st;
    printf("tokens:");
    while (tl_engine_next(&e, &tok, &st) == TL_OK && st == TL_GEN_TOKEN) {
        printf(" %u", (unsigned)tok);
        count++;
    }
    uint64_t us = io_time(&clock) - t0;
    printf("\nbench n=%u us=%llu us_per_token=%.1f tok_per_s=%.1f ram=%llu\n", (unsigned)count,
           (unsigned long long)us, count ? (double)us / count : 0.0,
           us ? count * 1e6 / (double)us : 0.0, (unsigned long long)tl_engine_ram_needed(&e.blob, e.ctx));
    return 0;
}

/* --- main ---------------------------------------------------------------------------------- */

static int open_pty(int *master, char *name, size_t cap) {
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0) return -1;
    const char *n = ptsname(m);
    if (!n || strlen(n) >= cap) return -1;
    strcpy(name, n);
    /* raw mode on the slave side, so nothing we write is echoed back before a client sets it */
    int s = open(n, O_RDWR | O_NOCTTY);
    if (s >= 0) {
        struct termios t;
        if (tcgetattr(s, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(s, TCSANOW, &t);
        }
        close(s);
    }
    *master = m;
    return 0;
}

int main(int argc, char **argv) {
    options o = {0};
    o.board = "host";
    o.ram = 1024ull * 1024 * 1024;
    o.part_size = 64ull * 1024 * 1024;
    o.parent_fd = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t num = 0;
        int takes = 1;
        if (!strcmp(a, "--stdio")) o.stdio = 1, takes = 0;
        else if (!strcmp(a, "--boot-banner")) o.banner = 1, takes = 0;
        else if (!v) return usage("missing value");
        else if (!strcmp(a, "--blob")) o.blob_path = v;
        else if (!strcmp(a, "--flash-image")) o.image_path = v;
        else if (!strcmp(a, "--board")) o.board = v;
        else if (!strcmp(a, "--prompt-ids")) o.prompt_ids = v;
        else if (!strcmp(a, "--heap")) o.heap = v;
        else if (!strcmp(a, "--temp")) o.temp = strtof(v, NULL);
        else if (!strcmp(a, "--topp")) o.topp = strtof(v, NULL);
        else if (parse_num(v, &num)) return usage("bad number");
        else if (!strcmp(a, "--offset")) o.offset = num;
        else if (!strcmp(a, "--partition-size")) o.part_size = num;
        else if (!strcmp(a, "--ram")) o.ram = num;
        else if (!strcmp(a, "--us-per-token")) o.us_per_token = (uint32_t)num;
        else if (!strcmp(a, "--ctx")) o.ctx = (uint32_t)num;
        else if (!strcmp(a, "--bench")) o.bench = (uint32_t)num;
        else if (!strcmp(a, "--flood")) o.flood = (uint32_t)num;
        else if (!strcmp(a, "--flood-rate")) o.flood_rate = (uint32_t)num;
        else if (!strcmp(a, "--chaos")) o.chaos = (uint32_t)num;
        else if (!strcmp(a, "--drop-end")) o.drop_end = (uint32_t)num;
        else if (!strcmp(a, "--parent-fd")) o.parent_fd = (int)num;
        else if (!strcmp(a, "--seed")) o.seed = num;
        else return usage("unknown option");
        i += takes;
    }
    if (!o.blob_path == !o.image_path) return usage("give exactly one of --blob or --flash-image");
    if (o.image_path && !o.offset) return usage("--flash-image needs --offset");
    if (o.image_path && o.part_size == 64ull * 1024 * 1024) o.part_size = 0x2F0000;

    static file_partition fp;
    if (fp_open(&fp, &o) != 0) return usage("cannot open the model partition");
    uint32_t sizes[TL_MAX_REGIONS], n_regions = 0;
    uint64_t arena_cap = 0;
    if (o.heap) { /* --heap 139264,110592,...: a chip's separate heap regions */
        for (const char *s = o.heap; *s && n_regions < TL_MAX_REGIONS;) {
            char *end;
            unsigned long long v = strtoull(s, &end, 0);
            if (end == s || v > 0x7FFFFFFFull) return usage("--heap: comma-separated region sizes");
            sizes[n_regions++] = (uint32_t)v;
            arena_cap += v;
            s = *end == ',' ? end + 1 : end;
        }
    } else {
        arena_cap = o.ram > TL_IO_BUFFER_BYTES ? o.ram - TL_IO_BUFFER_BYTES : 0;
        if (arena_cap > 256ull * 1024 * 1024) arena_cap = 256ull * 1024 * 1024;
        sizes[n_regions++] = (uint32_t)arena_cap;
    }
    uint8_t *arena = malloc(arena_cap + 16); /* the board's heap: allocated once, never again */
    if (!arena) return usage("cannot allocate the board RAM");
    if (o.bench) return run_bench(&o, &fp, arena, arena_cap);
    static tl_regions heap;
    tl_regions_init(&heap, arena, sizes, n_regions);
    tl_allocator mem = tl_regions_allocator(&heap);

    static host_io io;
    clock_gettime(CLOCK_MONOTONIC, &io.t0);
    io.banner = o.banner;
    io.board = o.board;
    io.offset = o.offset;
    io.chaos = o.chaos;
    io.drop_end = o.drop_end;
    io.flood = o.flood;
    io.flood_rate = o.flood_rate;
    io.parent_fd = o.parent_fd;
    if (o.stdio) {
        io.in_fd = 0;
        io.out_fd = 1;
    } else {
        char name[256];
        int m;
        if (open_pty(&m, name, sizeof name) != 0) {
            fprintf(stderr, "tinylm-board: cannot open a pseudo-terminal\n");
            return 1;
        }
        io.in_fd = io.out_fd = m;
        io.pty = 1;
        io.hup = 1;
        printf("PTY %s\n", name);
        fflush(stdout);
    }
    tl_transport tp = {&io, io_read, io_write, io_time, no_instret, io_wait, io_noise, NULL};
    tl_partition part = {&fp, fp.cap, 0, fp_active, fp_begin, fp_write, fp_staged, fp_commit, 4096, fp_erase};
    tl_device_cfg cfg = {o.board, o.ctx, o.us_per_token, 0};
    static tl_device dev;
    tl_device_init(&dev, &tp, &part, &cfg, &mem);
    if (!io.pty) {
        boot_banner(&io);
        tl_device_boot(&dev);
        start_flood(&io);
    }
    while (!io.eof) {
        check_parent(&io);
        if (io.pty && io.hup) {
            /* no client: wait for one to open the port; opening resets the board (like DTR) */
            struct pollfd pfd = {io.in_fd, POLLIN, 0};
            if (poll(&pfd, 1, 20) >= 0 && (pfd.revents & POLLHUP)) {
                usleep(20000);
                continue;
            }
            io.hup = 0;
            io.len = io.pos = 0;
            usleep(100000); /* let the client finish configuring the port */
            boot_banner(&io);
            tl_device_boot(&dev);
            start_flood(&io);
            continue;
        }
        if (io.flood_sent < io.flood) flood_some(&io);
        if (tl_device_poll(&dev) == TL_POLL_RESET) {
            boot_banner(&io);
            tl_device_boot(&dev);
            start_flood(&io);
        }
    }
    return 0;
}
