/* sha256.h - FIPS 180-4 SHA-256 (blob identity and upload verification). */
#ifndef TL_SHA256_H
#define TL_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];     /* chaining state */
    uint64_t nbytes;   /* message length so far */
    uint8_t buf[64];   /* partial block */
    uint32_t buf_len;  /* bytes used in buf */
} tl_sha256;

void tl_sha256_init(tl_sha256 *s);
void tl_sha256_update(tl_sha256 *s, const uint8_t *data, size_t n);
void tl_sha256_final(tl_sha256 *s, uint8_t out[32]);
void tl_sha256_digest(const uint8_t *data, size_t n, uint8_t out[32]);

#endif
