// rng.c - see rng.h.
#include "rng.h"

#include <math.h>

float rng_normal_at(uint64_t key, uint64_t idx) {
    // 53-bit uniforms in (0, 1] and [0, 1) so log() never sees 0.
    double u1 = ((double)(rng_at(key, 2 * idx) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rng_at(key, 2 * idx + 1) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
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
