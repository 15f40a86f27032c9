// rng.h - seeded random numbers that do not depend on thread count or call order.
//
// Two kinds: a counter-based hash (splitmix64's finaliser over seed, site and index), used
// for dropout masks and weight init, so element i of a given site always gets the same
// number whichever thread computes it; and a tiny sequential generator (splitmix64 state,
// one uint64_t, trivially saved in a checkpoint) for the trainer's data sampling.
#ifndef GT_RNG_H
#define GT_RNG_H

#include <stdint.h>

static inline uint64_t rng_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Key of one stream (e.g. "dropout on layer 3's attention" under a given seed).
static inline uint64_t rng_site_key(uint64_t seed, uint64_t site) {
    return rng_mix64(rng_mix64(seed ^ 0x6A09E667F3BCC909ULL) + site * 0x9E3779B97F4A7C15ULL);
}

// The idx-th number of stream `key`: splitmix64 evaluated at counter idx.
static inline uint64_t rng_at(uint64_t key, uint64_t idx) {
    return rng_mix64(key + (idx + 1) * 0x9E3779B97F4A7C15ULL);
}

// Uniform in [0, 1) with 24 random bits (exactly representable as float).
static inline float rng_uniform_at(uint64_t key, uint64_t idx) {
    return (float)(rng_at(key, idx) >> 40) * (1.0f / 16777216.0f);
}

// Standard normal (Box-Muller; elements 2j and 2j+1 share one draw, cos and sin branches).
float rng_normal_at(uint64_t key, uint64_t idx);

// Sequential generator for the trainer: state is one uint64_t (save it to resume).
typedef struct {
    uint64_t state;
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
float rng_uniform(Rng *r);               // [0, 1)
uint64_t rng_below(Rng *r, uint64_t n);  // uniform integer in [0, n), n > 0, unbiased

#endif
