#!/usr/bin/python3
"""Test texts for gpt-bpe: every script and spacing the splitter and the merge rule must
get right. Deterministic (seeded), repetitive enough that BPE has pairs to merge."""
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

WORDS = {
    "accents": "café naïve résumé façade über Straße Ærø señor años coöperate élève "
               "Ångström crème brûlée déjà vu piñata jalapeño Zürich Kraków e\u0301te\u0301 n\u0303".split(),
    "cyrillic": "Привет мир как дела хорошо спасибо Москва Україна щука съешь ещё этих мягких "
                "французских булок да выпей же чаю ЁЖ ёж".split(),
    "cjk": "你好世界 我们 今天 天气 很好 東京 日本語 ひらがな カタカナ 한국어 안녕하세요 中文字符 漢字 "
           "こんにちは さようなら 一二三".split(),
    "emoji": "😀 😂 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🇯🇵 ❤️ ✨ 🚀🚀 🎉 ☕ 🧑‍💻 ok lol".split(),
    "digits": "١٢٣ ٤٥٦٧ ۱۲۳ १२३ ४५६७ ১২৩ ๑๒๓ １２３ ⅫⅣ ²³ ½ ① 2024 12345678 3.14159 0x1F".split(),
}

SPACES = [" ", " ", " ", "\u00a0", "\u2000", "\u2003", "\u2009", "\u200a", "\u202f", "\u205f", "\u3000",
          "\u1680", "\u180e", "\u0085", "\t", "\x0b", "\x0c", "\u2028", "\u2029", "\u200b", "\ufeff"]

ENGLISH = ("the quick brown fox jumps over the lazy dog and it's what they've said we'll see "
           "I'M DON'T She'LL you'Re we'VE they'D O'Neil rock'n'roll 'quoted' ſ'ſ").split()


def make(kind, size, seed):
    rng = random.Random(seed)
    out = []
    n = 0
    words = WORDS.get(kind, []) + ENGLISH
    while n < size:
        if kind == "spaces":
            w = rng.choice(ENGLISH) + rng.choice(SPACES) * rng.randint(1, 3)
        elif kind == "crlf":
            w = rng.choice(ENGLISH) + rng.choice([" ", " ", " ", "\r\n", "\r\n\r\n", "\r", " \r\n", "\n \n", ".\r\n"])
        elif kind == "fuzz":
            # Dense mix of every class the patterns distinguish, for the ASCII fast path.
            pool = ["a", "B", "z", "'", "'s", "'S", "'ll", "'LL", "'re", "'ve", "'d", "'m", "'t", "'x", "0", "12",
                    "3456", " ", "  ", "   ", "\t", "\n", "\r", "\r\n", "\n\n", " \n", "\x0b", "\x0c", ".", "!?",
                    "--", "(", ")", "\"", "é", "Я", "٣", "\u00a0", "\u3000", "\u180e", "\u0085", "😀", "ſ", "_",
                    "~", "\x01", "\x1c", "$"]
            w = "".join(rng.choice(pool) for _ in range(rng.randint(1, 6)))
        else:
            w = rng.choice(words)
            sep = rng.choice([" ", " ", " ", " ", ", ", ". ", "\n", "! ", "? ", " — ", "\n\n", "  "])
            w += sep
        out.append(w)
        n += len(w.encode("utf-8"))
    return "".join(out)


def corpora(small=False):
    """{name: text}. Shared data files are used when present (skipped otherwise)."""
    size = 6000 if small else 30000
    texts = {k: make(k, size, i) for i, k in enumerate(
        ["accents", "cyrillic", "cjk", "emoji", "digits", "spaces", "crlf", "fuzz"])}
    texts["short"] = "Hi there, hi."  # far fewer pairs than any vocabulary needs
    texts["one_char"] = "a"
    ts = tl.shared_data("taylorswift.txt")
    if ts:
        texts["taylorswift"] = open(ts, encoding="utf-8").read()
    sh = tl.shared_data("tinyshakespeare.txt")
    if sh:
        texts["shakespeare200k"] = open(sh, encoding="utf-8").read()[:200000]
    return texts
