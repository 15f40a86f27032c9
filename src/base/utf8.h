// utf8.h - strict UTF-8 (what PCRE2_UTF accepts: no overlongs, no surrogates, <= U+10FFFF).
#ifndef GT_UTF8_H
#define GT_UTF8_H

#include <stddef.h>
#include <stdint.h>

// Returns 1 if s[0..len) is valid; otherwise 0 with the offset of the first bad byte.
int utf8_validate(const char *s, size_t len, size_t *bad_offset);
// Length (1..4) of the character starting at s[0..n); 0 if the bytes there are not valid
// UTF-8; -1 if they are a valid but incomplete prefix (more bytes needed).
int utf8_char_len(const uint8_t *s, size_t n);
// Length of the bad sequence at s (invalid position): Unicode's "maximal subpart", the same
// unit Python's bytes.decode(errors="replace") turns into one U+FFFD.
size_t utf8_bad_len(const uint8_t *s, size_t n);
// Copies src to dst replacing each bad sequence by U+FFFD (dst needs 3*n bytes at most).
// Stops early (returning the bytes consumed in *used) at an incomplete sequence at the end
// when !final, so a stream can be cleaned block by block. Returns bytes written;
// *replaced is incremented per replacement.
size_t utf8_replace_invalid(uint8_t *dst, const uint8_t *src, size_t n, int final, size_t *used, size_t *replaced);
// A malloc'd copy of s[0..len) with each bad sequence as U+FFFD (utf8_replace_invalid, final).
char *utf8_sanitize(const uint8_t *s, size_t len);
// A printable copy of the string s into dst[0..cap), for messages and config files: valid
// UTF-8 stays as it is; \n \t \r and \xHH (other control characters, C1 controls, bytes that
// are not UTF-8) stand for the bytes. quoted: `"` and `\` are escaped too, so reading the
// escapes back gives s exactly. Cut with "..." when cap is short (4 * strlen(s) + 1 never is).
// Returns dst.
char *utf8_escape(char *dst, size_t cap, const char *s, int quoted);

#endif
