// utf8.c - see utf8.h. Validation runs once per text; PCRE2 is then told not to re-check.
#include "utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"


int utf8_char_len(const uint8_t *s, size_t n) {
    uint8_t b0 = s[0];
    if (b0 < 0x80) return 1;
    if (b0 < 0xC2 || b0 > 0xF4) return 0;
    int need = b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    // The second byte's range excludes overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4).
    uint8_t lo = b0 == 0xE0 ? 0xA0 : b0 == 0xF0 ? 0x90 : 0x80;
    uint8_t hi = b0 == 0xED ? 0x9F : b0 == 0xF4 ? 0x8F : 0xBF;
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n) return -1;
        uint8_t c = s[i];
        if (c < lo || c > hi) return 0;
        lo = 0x80;
        hi = 0xBF;
    }
    return need;
}

size_t utf8_bad_len(const uint8_t *s, size_t n) {
    uint8_t b0 = s[0];
    if (b0 < 0xC2 || b0 > 0xF4) return 1;
    int need = b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
    uint8_t lo = b0 == 0xE0 ? 0xA0 : b0 == 0xF0 ? 0x90 : 0x80;
    uint8_t hi = b0 == 0xED ? 0x9F : b0 == 0xF4 ? 0x8F : 0xBF;
    size_t i = 1;
    while (i < (size_t)need && i < n && s[i] >= lo && s[i] <= hi) {
        i++;
        lo = 0x80;
        hi = 0xBF;
    }
    return i;
}

int utf8_validate(const char *str, size_t len, size_t *bad_offset) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < len) {
        // ASCII fast path, 8 bytes at a time.
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= len) break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_char_len(s + i, len - i);
        if (k <= 0) {
            if (bad_offset) *bad_offset = i;
            return 0;
        }
        i += (size_t)k;
    }
    return 1;
}

size_t utf8_replace_invalid(uint8_t *dst, const uint8_t *src, size_t n, int final, size_t *used, size_t *replaced) {
    size_t i = 0, o = 0;
    while (i < n) {
        if (src[i] < 0x80) {
            dst[o++] = src[i++];
            continue;
        }
        int k = utf8_char_len(src + i, n - i);
        if (k < 0 && !final) break;  // incomplete at the end of this block: wait for more
        if (k > 0) {
            memcpy(dst + o, src + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            i += utf8_bad_len(src + i, n - i);
            dst[o++] = 0xEF;
            dst[o++] = 0xBF;
            dst[o++] = 0xBD;
            (*replaced)++;
        }
    }
    *used = i;
    return o;
}

char *utf8_sanitize(const uint8_t *s, size_t len) {
    char *out = gt_malloc(3 * len + 1, "UTF-8 text");  // U+FFFD is 3 bytes per >= 1 input byte
    size_t used, replaced = 0;
    out[utf8_replace_invalid((uint8_t *)out, s, len, 1, &used, &replaced)] = '\0';
    return out;
}

char *utf8_escape(char *dst, size_t cap, const char *str, int quoted) {
    const uint8_t *s = (const uint8_t *)str;
    size_t n = strlen(str), o = 0;
    if (cap == 0) return dst;
    for (size_t i = 0; i < n;) {
        char piece[20];
        size_t k = 1;
        int len = s[i] < 0x80 ? 1 : utf8_char_len(s + i, n - i);
        if (s[i] == '\n') strcpy(piece, "\\n");
        else if (s[i] == '\t') strcpy(piece, "\\t");
        else if (s[i] == '\r') strcpy(piece, "\\r");
        else if (quoted && (s[i] == '"' || s[i] == '\\')) snprintf(piece, sizeof piece, "\\%c", s[i]);
        else if (s[i] < 0x20 || s[i] == 0x7F) snprintf(piece, sizeof piece, "\\x%02X", s[i]);
        else if (s[i] < 0x80) snprintf(piece, sizeof piece, "%c", s[i]);
        else if (len <= 0) snprintf(piece, sizeof piece, "\\x%02X", s[i]);  // not UTF-8: the byte
        else if (s[i] == 0xC2 && s[i + 1] < 0xA0)  // C1 control (U+0080..U+009F): terminals act on it
            snprintf(piece, sizeof piece, "\\x%02X\\x%02X", s[i], s[i + 1]), k = 2;
        else memcpy(piece, s + i, (size_t)len), piece[len] = '\0', k = (size_t)len;
        size_t pl = strlen(piece);
        if (o + pl + 4 > cap && (o + pl + 1 > cap || i + k < n)) {  // no room for this and "..."
            snprintf(dst + o, cap - o, "%s", cap - o >= 4 ? "..." : "");
            return dst;
        }
        memcpy(dst + o, piece, pl);
        o += pl;
        i += k;
    }
    dst[o] = '\0';
    return dst;
}
