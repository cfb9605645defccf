/* protocol.h - line framing of firmware/PROTOCOL.md: `@TYPE key=value ...|CRC\n`, CRC-16/CCITT-FALSE
   over the bytes from `@` up to `|`. Pure functions on caller buffers; the command loop is device.c. */
#ifndef TL_PROTOCOL_H
#define TL_PROTOCOL_H

#include <stdint.h>

#define TL_PROTO_VERSION 1
#define TL_LINE_MAX 512u  /* bytes including the final \n */
#define TL_MAX_FIELDS 16u
#define TL_TYPE_MAX 12u

typedef struct {
    const char *key;
    uint32_t klen;
    const char *val;
    uint32_t vlen;
} tl_field;

typedef struct {
    char type[TL_TYPE_MAX];  /* NUL-terminated TYPE */
    uint32_t n_fields;
    tl_field f[TL_MAX_FIELDS]; /* point into the parsed line */
} tl_msg;

typedef enum { TL_LINE_OK = 0, TL_LINE_CRC, TL_LINE_PARSE } tl_line_status;

/* Parses one line (without its \n; a trailing \r is ignored). TL_LINE_CRC when the `|HHHH` trailer
   is missing, malformed or wrong; TL_LINE_PARSE when the CRC is right but the content is not
   `@TYPE( key=value)*` with the PROTOCOL.md character sets, or a key repeats. */
tl_line_status tl_line_parse(const char *line, uint32_t len, tl_msg *m);

/* The field named key, or NULL. */
const tl_field *tl_msg_get(const tl_msg *m, const char *key);
int tl_field_is(const tl_field *f, const char *s);

/* Strict value parsers: return 0 on success. */
int tl_parse_u64(const char *s, uint32_t n, uint64_t max, uint64_t *out);  /* [0-9]{1,20} <= max */
int tl_parse_float(const char *s, uint32_t n, float *out);  /* [0-9]+(.[0-9]+)?, finite, >= 0 */
int tl_parse_hex(const char *s, uint32_t n, uint8_t *out, uint32_t cap, uint32_t *out_len); /* lowercase */

/* Line writer: begin, add fields, end (appends |CRC\n). Overflow is sticky and makes end() return 0. */
typedef struct {
    char *buf;
    uint32_t cap, len;
    int overflow;
} tl_writer;

void tl_w_begin(tl_writer *w, char *buf, uint32_t cap, const char *type);
void tl_w_str(tl_writer *w, const char *key, const char *val);
void tl_w_u64(tl_writer *w, const char *key, uint64_t v);
void tl_w_hex(tl_writer *w, const char *key, const uint8_t *d, uint32_t n);
uint32_t tl_w_end(tl_writer *w); /* total length including \n, or 0 on overflow */

#endif
