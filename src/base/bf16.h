// bf16.h - bfloat16, the upper half of an IEEE binary32 (8 exponent bits, 7 mantissa bits):
// conversion from float32 with round to nearest, ties to even (as PyTorch's .to(bfloat16)
// and the hardware instructions do), and back (exact). Header-only so the loops vectorize
// where they are used.
#ifndef GT_BF16_H
#define GT_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

// NaN stays NaN (quieted, sign kept); Inf stays Inf; values beyond bf16's largest finite
// value round to Inf, as any rounding to nearest does.
static inline uint16_t bf16_from_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

static inline float f32_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline void bf16_from_f32_n(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_from_f32(src[i]);
}

static inline void f32_from_bf16_n(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_from_bf16(src[i]);
}

#endif
