/* error.h - the error codes every core function returns (0 = success). Only main() exits. */
#ifndef TL_ERROR_H
#define TL_ERROR_H

typedef enum {
    TL_OK = 0,
    TL_E_BLOB,        /* blob failed a check in BLOB.md's reader list (see the message) */
    TL_E_VERSION,     /* blob major version newer than this firmware */
    TL_E_UNSUPPORTED, /* valid blob this firmware cannot run (e.g. ternary embeddings) */
    TL_E_NOMEM,       /* arena too small */
    TL_E_ARG,         /* bad argument (prompt too long, token id out of range, ...) */
    TL_E_CTX,         /* context full */
    TL_E_IO,          /* partition / transport failure */
} tl_err;

#endif
