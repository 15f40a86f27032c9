// rng.c - see rng.h.
#include "rng.h"

#include <math.h>

float rng_normal_at(uint64_t key, uint64_t idx) {
    // Box-Muller on one 64-bit draw per PAIR of indices: idx 2j takes the cosine branch,
    // 2j+1 the sine branch of the same (u1, u2), so each element costs half a draw.
    uint64_t r = rng_at(key, idx >> 1);
    float u1 = ((float)(r >> 40) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]: log never sees 0
    float u2 = (float)((r >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
    float rad = sqrtf(-2.0f * logf(u1));
    float ang = 6.283185307179586f * u2;
    return rad * ((idx & 1) ? sinf(ang) : cosf(ang));
}

void rng_seed(Rng *r, uint64_t seed) { r->state = rng_mix64(seed ^ 0xBB67AE8584CAA73BULL); }

uint64_t rng_next(Rng *r) {
    r->state += 0x9E3779B97F4A7C15ULL;
    return rng_mix64(r->state);
}

float rng_uniform(Rng *r) { return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f); }

uint64_t rng_below(Rng *r, uint64_t n) {
    // Rejection of the top partial range removes modulo bias.
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_next(r);
    while (x >= limit);
    return x % n;
}
