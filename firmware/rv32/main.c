/* main.c - bare-metal rv32imc front end for qemu-system-riscv32 -M virt: the protocol loop of
   firmware/core on the NS16550A UART, µs from the CLINT timer, instructions from minstret.
   The model partition is RAM at TL_RV32_BLOB_ADDR, filled by
   `-device loader,file=model.blob,addr=0x84000000`; uploads rewrite it in place (like the ESP32). */
#include <stdint.h>
#include <string.h>

#include "../core/device.h"
#include "virt.h"

#define TL_RV32_RAM (4u * 1024u * 1024u)

static int rv_read(void *ctx) {
    (void)ctx;
    if (!(*rv32_uart(UART_LSR) & 0x01)) return -1;
    return *rv32_uart(UART_RBR);
}

static void rv_write(void *ctx, const uint8_t *d, uint32_t n) {
    (void)ctx;
    rv32_uart_write(d, n);
}

static uint64_t rv_time(void *ctx) {
    (void)ctx;
    volatile uint32_t *mt = (volatile uint32_t *)(uintptr_t)CLINT_MTIME;
    uint32_t hi, lo;
    do {
        hi = mt[1];
        lo = mt[0];
    } while (hi != mt[1]);
    return (((uint64_t)hi << 32) | lo) / 10u;
}

static uint64_t rv_instret(void *ctx) {
    (void)ctx;
    return rv32_instret();
}

/* the model partition: RAM standing in for flash, rewritten in place */
static const uint8_t *part_active(void *ctx) {
    (void)ctx;
    return (const uint8_t *)(uintptr_t)TL_RV32_BLOB_ADDR;
}
static tl_err part_begin(void *ctx, uint32_t size) {
    (void)ctx;
    memset((void *)(uintptr_t)TL_RV32_BLOB_ADDR, 0xFF, size);
    return TL_OK;
}
static tl_err part_write(void *ctx, uint32_t off, const uint8_t *d, uint32_t n) {
    (void)ctx;
    if ((uint64_t)off + n > TL_RV32_PART_SIZE) return TL_E_IO;
    memcpy((uint8_t *)(uintptr_t)TL_RV32_BLOB_ADDR + off, d, n);
    return TL_OK;
}
static tl_err part_commit(void *ctx, uint32_t size) {
    (void)ctx;
    (void)size;
    return TL_OK;
}

static uint8_t arena[TL_RV32_RAM] __attribute__((aligned(16)));
static tl_device dev;

void _exit(int code);
void _exit(int code) { rv32_power_off(code); }

int main(void) {
    static const char banner[] = "rv32 virt: tinylm firmware " TL_FW_VERSION "\r\n";
    tl_transport tp = {NULL, rv_read, rv_write, rv_time, rv_instret, NULL, NULL, NULL};
    tl_partition part = {NULL, TL_RV32_PART_SIZE, 1, part_active, part_begin, part_write, part_active, part_commit,
                         0, NULL};
    tl_device_cfg cfg = {"rv32", 0, 0, 0};
    static tl_regions heap;
    uint32_t size = sizeof arena;
    tl_regions_init(&heap, arena, &size, 1);
    tl_allocator mem = tl_regions_allocator(&heap);
    tl_device_init(&dev, &tp, &part, &cfg, &mem);
    rv_write(NULL, (const uint8_t *)banner, sizeof banner - 1);
    tl_device_boot(&dev);
    for (;;) {
        if (tl_device_poll(&dev) == TL_POLL_RESET) tl_device_boot(&dev);
    }
}
