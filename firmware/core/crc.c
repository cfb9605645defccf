/* crc.c - bitwise CRCs with a nibble table (small, no mutable state). */
#include "crc.h"

static const uint16_t crc16_nib[16] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
};

uint16_t tl_crc16_update(uint16_t crc, const uint8_t *data, size_t n) {
    for (size_t i = 0; i < n; i++) {
        crc = (uint16_t)((crc << 4) ^ crc16_nib[((crc >> 12) ^ (data[i] >> 4)) & 0xF]);
        crc = (uint16_t)((crc << 4) ^ crc16_nib[((crc >> 12) ^ (data[i] & 0xF)) & 0xF]);
    }
    return crc;
}

uint16_t tl_crc16(const uint8_t *data, size_t n) { return tl_crc16_update(0xFFFF, data, n); }

static const uint32_t crc32_nib[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t tl_crc32_update(uint32_t crc, const uint8_t *data, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ crc32_nib[crc & 0xF];
        crc = (crc >> 4) ^ crc32_nib[crc & 0xF];
    }
    return ~crc;
}

uint32_t tl_crc32(const uint8_t *data, size_t n) { return tl_crc32_update(0, data, n); }
