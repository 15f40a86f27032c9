// bf16_dump.c - writes float32 bit patterns and their bf16_from_f32 (src/base/bf16.h) to a
// file, for test_bf16.py to compare with PyTorch's .to(torch.bfloat16): edge cases (ties
// both ways, the largest finite values, subnormals, Inf, NaN) and seeded random bits.
//   bf16_dump OUT   -> OUT holds (n, 2) uint32: input bits, output bits (in the low 16)
#include <stdio.h>
#include <stdlib.h>

#include "bf16.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bf16_dump OUT\n");
        return 1;
    }
    static const uint32_t edge[] = {
        0x00000000u, 0x80000000u, 0x3f800000u, 0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x3f807fffu,
        0x3f808001u, 0x7f7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0xff7fffffu, 0x00000001u, 0x00008000u,
        0x00018000u, 0x007fffffu, 0x80008000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
        0xffc00001u, 0x7fffffffu, 0x4049000fu, 0xc0490fdbu};
    FILE *f = fopen(argv[1], "wb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    size_t n_edge = sizeof edge / sizeof edge[0], n = n_edge + 200000;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        if (i < n_edge) {
            bits = edge[i];
        } else {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;  // xorshift64
            bits = (uint32_t)(s >> 32);
            if (i % 4 == 0) bits = (bits & 0xffff0000u) | 0x8000u;  // exact ties
        }
        float x;
        memcpy(&x, &bits, sizeof x);
        uint32_t out[2] = {bits, bf16_from_f32(x)};
        float back = f32_from_bf16((uint16_t)out[1]);
        uint32_t bb;
        memcpy(&bb, &back, sizeof bb);
        if (bb != out[1] << 16) {
            fprintf(stderr, "f32_from_bf16(%04x) is not the bits shifted up\n", out[1]);
            return 1;
        }
        fwrite(out, sizeof out, 1, f);
    }
    return fclose(f) == 0 ? 0 : 1;
}
