/* crc.h - CRC-16/CCITT-FALSE (protocol lines) and CRC-32/zlib (blob trailer, upload chunks). */
#ifndef TL_CRC_H
#define TL_CRC_H

#include <stddef.h>
#include <stdint.h>

/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor.
   Pass crc = 0xFFFF to start; the result of one call can be fed to the next. */
uint16_t tl_crc16_update(uint16_t crc, const uint8_t *data, size_t n);
uint16_t tl_crc16(const uint8_t *data, size_t n);

/* CRC-32 as zlib.crc32: pass crc = 0 to start, chain calls like zlib. */
uint32_t tl_crc32_update(uint32_t crc, const uint8_t *data, size_t n);
uint32_t tl_crc32(const uint8_t *data, size_t n);

#endif
