/* virt.h - the qemu-system-riscv32 -M virt machine as both rv32 front ends see it (main.c: the
   protocol board; profile.c: the per-section profile): its devices, the model partition's place,
   the UART, the retired-instruction counter and the power-off register. */
#ifndef TL_RV32_VIRT_H
#define TL_RV32_VIRT_H

#include <stdint.h>

#define UART_BASE 0x10000000u       /* NS16550A */
#define UART_RBR 0u
#define UART_THR 0u
#define UART_LSR 5u
#define CLINT_MTIME 0x0200BFF8u     /* 10 MHz on qemu virt */
#define SIFIVE_TEST 0x00100000u     /* write 0x5555 to power off */
#define TL_RV32_BLOB_ADDR 0x84000000u
#define TL_RV32_PART_SIZE 0x2F0000u /* same as the ESP32 model partition */

static inline volatile uint8_t *rv32_uart(uint32_t reg) {
    return (volatile uint8_t *)(uintptr_t)(UART_BASE + reg);
}

static inline void rv32_uart_write(const uint8_t *d, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        while (!(*rv32_uart(UART_LSR) & 0x20)) {
        }
        *rv32_uart(UART_THR) = d[i];
    }
}

/* minstret (exact under -icount shift=0); `.option arch` because -march=..._zicsr would break
   picolibc's multilib selection */
static inline uint64_t rv32_instret(void) {
    uint32_t hi, lo, hi2;
    do {
        __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, minstreth\n.option pop" : "=r"(hi));
        __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, minstret\n.option pop" : "=r"(lo));
        __asm__ volatile(".option push\n.option arch, +zicsr\ncsrr %0, minstreth\n.option pop" : "=r"(hi2));
    } while (hi != hi2);
    return ((uint64_t)hi << 32) | lo;
}

/* ends qemu with exit status `code` (the front ends' _exit) */
static inline void rv32_power_off(int code) {
    *(volatile uint32_t *)(uintptr_t)SIFIVE_TEST = code ? (((uint32_t)code << 16) | 0x3333u) : 0x5555u;
    for (;;) {
    }
}

#endif
