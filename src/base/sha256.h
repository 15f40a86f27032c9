// sha256.h - SHA-256 (FIPS 180-4), streaming, and of a whole file.
#ifndef GT_SHA256_H
#define GT_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint8_t buf[64];
    size_t buf_len;
    uint64_t total;  // bytes hashed so far
} Sha256;

void sha256_init(Sha256 *c);
void sha256_update(Sha256 *c, const void *data, size_t n);
// Writes the digest as 64 lowercase hex digits and a NUL.
void sha256_final_hex(Sha256 *c, char hex[65]);

// SHA-256 of a file (hex, 65 bytes with NUL); returns file size, or -1 if unreadable.
int64_t sha256_file(const char *path, char hex[65]);

#endif
