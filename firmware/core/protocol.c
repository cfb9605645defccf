/* protocol.c - framing, strict parsing and formatting of protocol lines. */
#include "protocol.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "crc.h"

static int is_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int is_key(char c) { return (c >= 'a' && c <= 'z') || c == '_'; }
static int is_val(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == ',' || c == ':' || c == '+' || c == '-';
}
static int hexval_upper(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

tl_line_status tl_line_parse(const char *line, uint32_t len, tl_msg *m) {
    memset(m, 0, sizeof *m);
    if (len > 0 && line[len - 1] == '\r') len--;
    if (len < 6 || line[0] != '@' || line[len - 5] != '|') return TL_LINE_CRC;
    uint32_t crc = 0;
    for (uint32_t i = len - 4; i < len; i++) {
        int v = hexval_upper(line[i]);
        if (v < 0) return TL_LINE_CRC;
        crc = (crc << 4) | (uint32_t)v;
    }
    uint32_t body = len - 5; /* bytes from @ up to | */
    if (tl_crc16((const uint8_t *)line, body) != crc) return TL_LINE_CRC;
    uint32_t i = 1, t = 0;
    while (i < body && is_upper(line[i])) {
        if (t + 1 >= TL_TYPE_MAX) return TL_LINE_PARSE;
        m->type[t++] = line[i++];
    }
    if (t == 0) return TL_LINE_PARSE;
    while (i < body) {
        if (line[i] != ' ' || m->n_fields >= TL_MAX_FIELDS) return TL_LINE_PARSE;
        i++;
        tl_field *f = &m->f[m->n_fields];
        f->key = line + i;
        while (i < body && is_key(line[i])) i++;
        f->klen = (uint32_t)(line + i - f->key);
        if (f->klen == 0 || i >= body || line[i] != '=') return TL_LINE_PARSE;
        i++;
        f->val = line + i;
        while (i < body && is_val(line[i])) i++;
        f->vlen = (uint32_t)(line + i - f->val);
        for (uint32_t k = 0; k < m->n_fields; k++)
            if (m->f[k].klen == f->klen && memcmp(m->f[k].key, f->key, f->klen) == 0) return TL_LINE_PARSE;
        m->n_fields++;
    }
    return TL_LINE_OK;
}

int tl_field_is(const tl_field *f, const char *s) {
    size_t n = strlen(s);
    return f->klen == n && memcmp(f->key, s, n) == 0;
}

const tl_field *tl_msg_get(const tl_msg *m, const char *key) {
    for (uint32_t i = 0; i < m->n_fields; i++)
        if (tl_field_is(&m->f[i], key)) return &m->f[i];
    return NULL;
}

int tl_parse_u64(const char *s, uint32_t n, uint64_t max, uint64_t *out) {
    if (n == 0 || n > 20) return -1;
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10u) return -1;
        v = v * 10u + d;
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

int tl_parse_float(const char *s, uint32_t n, float *out) {
    char tmp[40];
    uint32_t i = 0, digits = 0;
    if (n == 0 || n >= sizeof tmp) return -1;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
    if (digits == 0) return -1;
    if (i < n && s[i] == '.') {
        i++;
        uint32_t frac = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, frac++;
        if (frac == 0) return -1;
    }
    if (i != n) return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    double d = strtod(tmp, NULL); /* as the host: a Python float, then float32 */
    float f = (float)d;
    if (!isfinite(f)) return -1;
    *out = f;
    return 0;
}

static int hexval_lower(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int tl_parse_hex(const char *s, uint32_t n, uint8_t *out, uint32_t cap, uint32_t *out_len) {
    if (n % 2 || n / 2 > cap) return -1;
    for (uint32_t i = 0; i < n; i += 2) {
        int hi = hexval_lower(s[i]), lo = hexval_lower(s[i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i / 2] = (uint8_t)(hi * 16 + lo); /* safe in place: writes trail reads */
    }
    *out_len = n / 2;
    return 0;
}

static void put(tl_writer *w, const char *s, uint32_t n) {
    if (w->overflow || w->len + n > w->cap) {
        w->overflow = 1;
        return;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

void tl_w_begin(tl_writer *w, char *buf, uint32_t cap, const char *type) {
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->overflow = 0;
    put(w, "@", 1);
    put(w, type, (uint32_t)strlen(type));
}

static void key(tl_writer *w, const char *k) {
    put(w, " ", 1);
    put(w, k, (uint32_t)strlen(k));
    put(w, "=", 1);
}

void tl_w_str(tl_writer *w, const char *k, const char *val) {
    key(w, k);
    put(w, val, (uint32_t)strlen(val));
}

void tl_w_u64(tl_writer *w, const char *k, uint64_t v) {
    char d[21];
    uint32_t n = 0;
    do {
        d[sizeof d - 1 - n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    key(w, k);
    put(w, d + sizeof d - n, n);
}

void tl_w_hex(tl_writer *w, const char *k, const uint8_t *data, uint32_t n) {
    static const char digits[] = "0123456789abcdef";
    key(w, k);
    for (uint32_t i = 0; i < n && !w->overflow; i++) {
        char h[2] = {digits[data[i] >> 4], digits[data[i] & 15]};
        put(w, h, 2);
    }
}

uint32_t tl_w_end(tl_writer *w) {
    static const char digits[] = "0123456789ABCDEF";
    if (w->overflow || w->len + 6 > w->cap || w->len + 6 > TL_LINE_MAX) return 0;
    uint16_t crc = tl_crc16((const uint8_t *)w->buf, w->len);
    char t[6] = {'|', digits[(crc >> 12) & 15], digits[(crc >> 8) & 15], digits[(crc >> 4) & 15],
                 digits[crc & 15], '\n'};
    put(w, t, 6);
    return w->len;
}
