/* main.c - ESP-IDF board layer: the protocol loop of firmware/core on the console UART, esp_timer for
   µs, the blob read in place from the `model` data partition (subtype 0x40) through
   esp_partition_mmap, uploads through esp_partition_erase_range / esp_partition_write.
   One partition: an upload rewrites the model in place (the board says model=none meanwhile).

   Everything that is not an IDF call lives in the core and is tested on the host: when to yield
   (tl_transport.yield, device.c), which sectors to erase before a write (device.c), how the
   model's RAM is split and placed (engine.c tl_engine_plan, heap.c tl_heap_place). */
#include <stdint.h>
#include <string.h>

#include "driver/uart.h"
#include "esp_heap_caps.h"
#include "esp_log.h"
#include "esp_partition.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"

#include "device.h"

#define TL_UART UART_NUM_0
#define TL_MODEL_SUBTYPE 0x40

#if CONFIG_IDF_TARGET_ESP32S3
#define TL_BOARD "esp32-s3"
#elif CONFIG_IDF_TARGET_ESP32C3
#define TL_BOARD "esp32-c3"
#else
#define TL_BOARD "esp32"
#endif

typedef struct {
    const esp_partition_t *part;
    const void *map;
    esp_partition_mmap_handle_t handle;
    int mapped;
} flash_model;

static int map_model(flash_model *m) {
    if (m->mapped) esp_partition_munmap(m->handle);
    m->mapped = esp_partition_mmap(m->part, 0, m->part->size, ESP_PARTITION_MMAP_DATA, &m->map,
                                   &m->handle) == ESP_OK;
    return m->mapped;
}

static const uint8_t *fm_active(void *ctx) {
    flash_model *m = ctx;
    return m->mapped ? m->map : NULL;
}

static tl_err fm_begin(void *ctx, uint32_t size) {
    (void)ctx; /* nothing to erase here: the device erases each sector just ahead of its data */
    (void)size;
    return TL_OK;
}

static tl_err fm_erase(void *ctx, uint32_t off, uint32_t n) {
    flash_model *m = ctx;
    return esp_partition_erase_range(m->part, off, n) == ESP_OK ? TL_OK : TL_E_IO;
}

static tl_err fm_write(void *ctx, uint32_t off, const uint8_t *d, uint32_t n) {
    flash_model *m = ctx;
    return esp_partition_write(m->part, off, d, n) == ESP_OK ? TL_OK : TL_E_IO;
}

static const uint8_t *fm_staged(void *ctx) {
    flash_model *m = ctx;
    return map_model(m) ? m->map : NULL; /* re-map: the cache must not hold pre-write contents */
}

static tl_err fm_commit(void *ctx, uint32_t size) {
    (void)size;
    return map_model(ctx) ? TL_OK : TL_E_IO;
}

static int uart_read_one(void *ctx) {
    (void)ctx;
    uint8_t c;
    return uart_read_bytes(TL_UART, &c, 1, 0) == 1 ? c : -1;
}

static void uart_write(void *ctx, const uint8_t *d, uint32_t n) {
    (void)ctx;
    uart_write_bytes(TL_UART, (const char *)d, n);
}

static uint64_t now_us(void *ctx) {
    (void)ctx;
    return (uint64_t)esp_timer_get_time();
}

static void wait_input(void *ctx, uint32_t max_us) {
    (void)ctx;
    size_t n = 0;
    if (uart_get_buffered_data_len(TL_UART, &n) == ESP_OK && n > 0) return;
    vTaskDelay(max_us >= 10000 ? pdMS_TO_TICKS(10) : 1); /* let the idle task feed the watchdog */
}

/* A generation keeps this task busy: block for a tick so the idle task runs and feeds the task
   watchdog (taskYIELD would not: it only yields to tasks of equal or higher priority). */
static void yield_to_idle(void *ctx) {
    (void)ctx;
    vTaskDelay(1);
}

/* --- the model's RAM: its blocks from the heap, internal RAM first, PSRAM where there is some ---- */

static void *blocks[TL_N_BLOCKS];
static int n_blocks;

static void *heap_alloc(void *ctx, uint32_t bytes) {
    (void)ctx;
    void *p = heap_caps_malloc_prefer(bytes, 2, MALLOC_CAP_8BIT | MALLOC_CAP_INTERNAL, MALLOC_CAP_8BIT);
    if (p && n_blocks < TL_N_BLOCKS) blocks[n_blocks++] = p;
    return p;
}

static void heap_release_all(void *ctx) {
    (void)ctx;
    while (n_blocks > 0) heap_caps_free(blocks[--n_blocks]);
}

static uint32_t heap_largest(void *ctx) {
    (void)ctx;
    return (uint32_t)heap_caps_get_largest_free_block(MALLOC_CAP_8BIT);
}

static uint64_t heap_free(void *ctx) {
    (void)ctx;
    return (uint64_t)heap_caps_get_free_size(MALLOC_CAP_8BIT);
}

static tl_device dev;
static flash_model model;

void app_main(void) {
    uart_driver_install(TL_UART, 2048, 2048, 0, NULL, 0);
    model.part = esp_partition_find_first(ESP_PARTITION_TYPE_DATA, TL_MODEL_SUBTYPE, "model");
    if (model.part) map_model(&model);
#if !CONFIG_TINYLM_CONSOLE_LOGS
    /* The protocol shares UART0 with the console: from here on no log line may cut a protocol line.
       (The ROM and the bootloader have spoken before app_main; the host skips that as noise.) */
    esp_log_level_set("*", ESP_LOG_NONE);
#endif
    tl_transport tp = {NULL, uart_read_one, uart_write, now_us, NULL, wait_input, NULL, yield_to_idle};
    tl_partition part = {&model, model.part ? model.part->size : 0, 1, fm_active, fm_begin, fm_write,
                         fm_staged, fm_commit, model.part ? model.part->erase_size : 4096, fm_erase};
    tl_device_cfg cfg = {TL_BOARD, 0, 0, 0};
    tl_allocator mem = {NULL, heap_alloc, heap_release_all, heap_largest, heap_free};
    tl_device_init(&dev, &tp, &part, &cfg, &mem);
    tl_device_boot(&dev);
    for (;;) {
        if (tl_device_poll(&dev) == TL_POLL_RESET) {
            uart_wait_tx_done(TL_UART, pdMS_TO_TICKS(200)); /* the @OK leaves before the restart */
            esp_restart(); /* a real restart, then @READY */
        }
    }
}
