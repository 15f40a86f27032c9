#!/usr/bin/python3
"""Reference byte-level BPE, written from the rule of docs/tokenizer.md alone, to check
gpt-bpe merge for merge.

Training: split the text with the pattern (special tokens cut out first), each chunk's UTF-8
bytes is a word, identical words are counted; repeatedly merge the adjacent pair with the
highest count over all words, ties to the smallest (left, right), stop when the best count
is below 2; occurrences are replaced left to right, non-overlapping.
Encoding: same split, then in each word merge the pair with the lowest merge id until none applies.

Incremental (pair counts updated only for words holding the merged pair, lazy heap) so the
tests stay fast; the plain rule is in train_naive() and checked against it on small texts.
"""
import heapq
import sys
from collections import Counter, defaultdict

import regex

PATTERNS = {
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    "gpt4": r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"
            r"|\s*[\r\n]|\s+(?!\S)|\s+",
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
}

# PCRE2 10.42 (UCP) counts U+180E MONGOLIAN VOWEL SEPARATOR as \s (it was a space before
# Unicode 6.3); Python's regex does not. Spell PCRE2's class out so both implementations
# split every text the same way. (PCRE2 10.42 knows Unicode 14, regex 2.5.123 Unicode 15:
# letters added in Unicode 15 still differ; the tests do not use them.)
PCRE2_SPACE = r"\s\u180e"


def pcre2_compatible(pattern):
    out, i = [], 0
    in_class = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt == "s":
                out.append(PCRE2_SPACE if in_class else "[" + PCRE2_SPACE + "]")
            elif nxt == "S":
                if in_class:
                    raise ValueError("\\S inside a class is not supported by the reference")
                out.append("[^" + PCRE2_SPACE + "]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
            out.append(ch)
            if pattern[i + 1:i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1:i + 2] == "]":
                out.append("]")
                i += 1
        elif ch == "]" and in_class:
            in_class = False
            out.append(ch)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def resolve(pattern):
    return PATTERNS.get(pattern, pattern)


def split_segments(text, specials):
    """[(str, is_special_index_or_None)]: specials found leftmost first, longest on ties."""
    if not specials:
        return [(text, None)]
    out, pos, n = [], 0, len(text)
    while pos < n:
        best, at = None, None
        for i, s in enumerate(specials):
            j = text.find(s, pos)
            if j >= 0 and (at is None or j < at or (j == at and len(s) > len(specials[best]))):
                best, at = i, j
        if best is None:
            break
        if at > pos:
            out.append((text[pos:at], None))
        out.append((specials[best], best))
        pos = at + len(specials[best])
    if pos < n:
        out.append((text[pos:], None))
    return out


def chunks(segment, rx):
    """The pattern's matches, with unmatched text kept as chunks of its own."""
    pos = 0
    for m in rx.finditer(segment):
        if m.start() > pos:
            yield segment[pos:m.start()]
        if m.end() > m.start():
            yield m.group()
        pos = m.end()
    if pos < len(segment):
        yield segment[pos:]


def words_of(text, pattern, specials):
    rx = regex.compile(pcre2_compatible(resolve(pattern)))
    counts = Counter()
    for seg, sp in split_segments(text, specials):
        if sp is None:
            for c in chunks(seg, rx):
                counts[c.encode("utf-8")] += 1
    return counts


def train(text, vocab_size, pattern="llama3", specials=()):
    """Returns the list of merges [(left, right), ...]."""
    counts = words_of(text, pattern, list(specials))
    words = [list(w) for w in counts]
    wcount = [counts[w] for w in counts]
    pair_count = defaultdict(int)
    pair_words = defaultdict(set)
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_count[p] += wcount[i]
            pair_words[p].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    target = vocab_size - 256 - len(specials)
    while len(merges) < target and heap:
        negc, p = heapq.heappop(heap)
        if -negc != pair_count[p]:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            continue
        if -negc < 2:
            break
        z = 256 + len(merges)
        merges.append(p)
        a, b = p
        touched = set()
        for i in sorted(pair_words.pop(p, ())):
            w, c = words[i], wcount[i]
            for q in zip(w, w[1:]):
                pair_count[q] -= c
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(z)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for q in zip(out, out[1:]):
                pair_count[q] += c
                if z in q:
                    pair_words[q].add(i)
                    touched.add(q)
        for q in touched:
            if pair_count[q] > 0:
                heapq.heappush(heap, (-pair_count[q], q))
    return merges


def train_naive(text, vocab_size, pattern="llama3", specials=()):
    """The rule exactly as docs/tokenizer.md states it, recounting everything each step (slow)."""
    counts = words_of(text, pattern, list(specials))
    words = {tuple(w): c for w, c in counts.items()}
    merges = []
    while len(merges) < vocab_size - 256 - len(specials):
        pc = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pc[p] += c
        if not pc:
            break
        best = min(pc, key=lambda p: (-pc[p], p))
        if pc[best] < 2:
            break
        z = 256 + len(merges)
        merges.append(best)
        nw = Counter()
        for w, c in words.items():
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(z)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            nw[tuple(out)] += c
        words = nw
    return merges


def encode(text, merges, pattern="llama3", specials=()):
    rank = {tuple(p): i for i, p in enumerate(merges)}
    rx = regex.compile(pcre2_compatible(resolve(pattern)))
    cache, ids = {}, []
    for seg, sp in split_segments(text, list(specials)):
        if sp is not None:
            ids.append(256 + len(merges) + sp)
            continue
        for c in chunks(seg, rx):
            if c not in cache:
                w = list(c.encode("utf-8"))
                while len(w) > 1:
                    r = min((rank.get(p, 1 << 62), k) for k, p in enumerate(zip(w, w[1:])))[0]
                    if r == 1 << 62:
                        break
                    a, b = merges[r]
                    out, j = [], 0
                    while j < len(w):
                        if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                            out.append(256 + r)
                            j += 2
                        else:
                            out.append(w[j])
                            j += 1
                    w = out
                cache[c] = w
            ids.extend(cache[c])
    return ids


def token_bytes(merges, specials=()):
    tb = [bytes([i]) for i in range(256)]
    for a, b in merges:
        tb.append(tb[a] + tb[b])
    tb.extend(s.encode("utf-8") for s in specials)
    return tb


def decode(ids, merges, specials=()):
    tb = token_bytes(merges, specials)
    return b"".join(tb[i] for i in ids)


if __name__ == "__main__":
    # bpe_ref.py FILE VOCAB_SIZE [PATTERN]: print the merges, one "left right" per line.
    text = open(sys.argv[1], encoding="utf-8").read()
    for a, b in train(text, int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "llama3"):
        print(a, b)
