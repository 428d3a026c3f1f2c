#!/usr/bin/env python3
"""The tokenizer conformance corpus: a deterministic list of test inputs.

Used by gen_tokenizer.py. Each item is a `str` (valid text) or `bytes` (raw input that is not
valid UTF-8: the C tokenizer reads it with U+FFFD replacement, so the reference encodes
bytes.decode("utf-8", "replace")).

The corpus mixes hand-written seeds (scripts and languages, emoji, code, whitespace runs,
numbers, special-token text of both model families, Unicode edge cases, ill-formed UTF-8),
text taken from files that the pinned reference packages install (source code, docs,
non-English lines), random "words" drawn from Unicode blocks, and seeded combinations of all
of these. The same package versions give the same corpus.
"""
import os
import random
import sys

SEED = 20240601

LANG = [
    # English
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "Don't you think we'll be late? I'M SURE THEY'VE LEFT. She'd said it's fine; you're right, we've time.",
    "Mr. Smith's dog—a 3-year-old Labrador—weighs 32.5 kg (71.6 lb)!",
    "e-mail: jane.doe+test@example.com, URL: https://example.org/path?q=1&lang=en#frag",
    # Romance / Germanic / others in Latin script
    "Le cœur a ses raisons que la raison ne connaît point. Où est l'hôtel ? Ça va très bien, merci.",
    "¿Dónde está la biblioteca? ¡Qué día tan bonito! El niño comió piñata y jalapeños.",
    "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg. Straße, STRASSE, ẞ.",
    "Zażółć gęślą jaźń. Pchnąć w tę łódź jeża lub ośm skrzyń fig.",
    "Türkçe: İstanbul'da ılık bir gün; ıİiI karşılaştırması. Çok güzel, değil mi?",
    "Tiếng Việt có nhiều dấu: Người ta nói rằng học, học nữa, học mãi. Phở bò ngon quá!",
    "Árvíztűrő tükörfúrógép. Þetta er íslenska: Ég heiti Jón og bý í Reykjavík.",
    "Português: Não há problema, você está coração. Română: Știință și ţară.",
    # Cyrillic, Greek, Armenian, Georgian
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир!",
    "Україна: Чуєш їх, доцю, га? Кумедна ж ти, прощайся без ґольфів!",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Γειά σου κόσμε! Ελληνικά με τόνους: άέήίόύώ ΐΰ",
    "Հայերեն: Բարեւ աշխարհ։ Ქართული: გამარჯობა მსოფლიო!",
    # CJK
    "我们今天去公园散步，天气很好。人工智能正在改变世界。",
    "繁體中文：臺灣的夜市非常熱鬧，小吃種類繁多。",
    "日本語のテキスト：東京は日本の首都です。ひらがな、カタカナ、漢字が混ざっています。",
    "ｶﾀｶﾅ ﾊﾝｶｸ と 全角ＡＢＣ１２３ と ㈱ ㍻ ㎏ ㌔",
    "한국어 문장입니다. 안녕하세요, 세계! 대한민국의 수도는 서울입니다.",
    # RTL
    "العربية: مرحبا بالعالم! كيف حالك اليوم؟ السَّلَامُ عَلَيْكُمْ وَرَحْمَةُ اللهِ",
    "فارسی: سلام دنیا، حال شما چطور است؟ ۱۲۳۴۵۶۷۸۹۰",
    "עברית: שלום עולם! מה שלומך היום? בְּרֵאשִׁית בָּרָא",
    "اردو: ہیلو دنیا، آپ کیسے ہیں؟",
    # Indic and South-East Asian
    "हिन्दी: नमस्ते दुनिया! आप कैसे हैं? क्षत्रिय, ज्ञान, श्री, द्विवेदी। १२३४५",
    "मराठी: महाराष्ट्र हे भारतातील एक राज्य आहे.",
    "বাংলা: আমি বাংলায় গান গাই। ০১২৩৪৫৬৭৮৯",
    "தமிழ்: வணக்கம் உலகம்! தமிழ் ஒரு செம்மொழி.",
    "తెలుగు: నమస్కారం ప్రపంచం. ಕನ್ನಡ: ನಮಸ್ಕಾರ ಜಗತ್ತು. മലയാളം: ഹലോ ലോകം.",
    "ไทย: สวัสดีชาวโลกภาษาไทยไม่มีการเว้นวรรคระหว่างคำ ๑๒๓",
    "ລາວ: ສະບາຍດີ. ខ្មែរ: សួស្តីពិភពលោក។ မြန်မာ: မင်္ဂလာပါ",
    "አማርኛ: ሰላም ለዓለም። ትግርኛ። ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
    "Монгол: Сайн байна уу? ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ᠌ with U+180E: ᠠ᠎ᠡ",
    "Tibetan: བོད་སྐད། Sinhala: ශ්‍රී ලංකාව Gujarati: ગુજરાતી Punjabi: ਪੰਜਾਬੀ",
]

EMOJI = [
    "😀😃😄😁😆😅😂🤣🥲☺️😊",
    "Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍💋‍👨 coder: 🧑🏽‍💻 firefighter: 👩🏿‍🚒",
    "Thumbs: 👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿 waves 👋🏽👋",
    "Flags: 🇫🇷🇩🇪🇯🇵🇺🇸🇧🇷 🏳️‍🌈 🏴‍☠️ 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ ©️ ®️ ™️ ❤️ ❤ ♥️",
    "🤗 Hugging Face 🤖 robots 🚀 rockets 🧠 brains 🔥🔥🔥",
    "Emoji 15/16: 🫨 🩷 🫎 🪼 🫛 🪉 🫟 🫩",
    "🐈‍⬛ black cat, 🐻‍❄️ polar bear, 🧑‍🤝‍🧑 people holding hands, 👁️‍🗨️",
]

CODE = [
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}\nprintf(\"%d\\n\", sum);",
    "const add = (a, b) => a + b;\nconsole.log(`sum: ${add(1, 2)}`); // 3\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello, 世界\")\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC LIMIT 10;",
    "<!DOCTYPE html>\n<html><body><h1>Title</h1><p class=\"x\">Hi &amp; bye</p></body></html>",
    "{\"key\": \"value\", \"list\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"\\u00e9\"}}",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do\n  echo \"$f\" | tr a-z A-Z >> out.log\ndone",
    "public class Hello {\n    public static void main(String[] args) {\n        System.out.println(\"Hi\");\n    }\n}",
    "    \n\t\t\n        return x;\r\n}\r\n",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares\nassert x == [0, 4, 16, 36, 64]",
    "diff --git a/f.c b/f.c\n@@ -1,3 +1,4 @@\n-int x;\n+int x = 0;\n+int y;\n",
    "\\begin{equation}\n  E = mc^2 \\quad \\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}\n\\end{equation}",
    "| col1 | col2 |\n|------|------|\n| a    | b    |\n\n* item\n* item\n\n> quote\n",
    "std::vector<std::pair<int, std::string>> v{{1, \"one\"}, {2, \"two\"}};",
    "if err != nil {\n\t\treturn nil, fmt.Errorf(\"read %s: %w\", path, err)\n\t}",
    "%macro foo 1\n  mov eax, [ebp+8]\n  ret\n%endmacro",
]

SPACES = [
    " ", "  ", "   ", "    ", " " * 16, " " * 33, "\t", "\t\t", "\t\t\t\t", "\n", "\n\n", "\n\n\n", "\n" * 31, "\n" * 40,
    "\r\n", "\r\n\r\n", "\r", " \n", "\n ", " \n \n ", "\t \t \n", "a  b   c    d", "a\tb\t\tc", "a\n\nb\n\n\nc",
    "  leading", "trailing  ", "  both  ", "\n\nleading newlines", "trailing newlines\n\n", "x \n y", "x\n \ny",
    "word\u00a0nbsp", "em\u2003space", "ideographic\u3000space", "thin\u2009space", "nnbsp\u202fhere",
    "line\u2028sep", "para\u2029sep", "nel\u0085char", "vt\x0bff\x0cchars", "mongolian\u180evowel", "zw\u200bsp",
    "bom\ufeffinside", "zwj\u200djoiner", "zwnj\u200cnonjoiner", "fs\x1cgs\x1drs\x1eus\x1f", "\u2000\u2001\u2002\u200a",
    "  \u00a0 \u00a0  ", "\u3000\u3000全角", "tab\t\u00a0mix", " " * 200, "\t" * 50, "\n" * 100, "\r\n" * 20,
]

NUMBERS = [
    "0", "7", "42", "1234567890", "3.14159265358979", "-0.001", "1,000,000.00", "1e-10", "0xDEADBEEF", "0b1011",
    "2024-06-01T12:34:56Z", "+1 (555) 123-4567", "123456789012345678901234567890123456789012345678901234567890",
    "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "１２３４５", "²³¹ ½ ¾ ⅓", "Ⅰ Ⅱ Ⅻ ⅻ", "① ② ⑳", "𝟎𝟏𝟐 𝟙𝟚",
    "v1.2.3-rc.4+build.5", "192.168.0.1:8080", "$1,299.99 €45,00 ¥5000 £3.50 ₹100", "50% off!!!", "1/2 + 3/4 = 5/4",
]

SPECIAL = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
    "<|vision_start|><|image_pad|><|vision_end|>", "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
    "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "[multimodal]",
    "<start_of_image>", "<image_soft_token>", "<end_of_image>", "<unused0>", "<unused99>", "<unused6241>",
    "<table><tr><td>cell</td></tr></table>", "<h1>Title</h1><strong>bold</strong><code>x</code>", "<s>text</s>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n", "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start", "im_start|>", "<|im_start|", "<start_of_turn", "<bos", "<<bos>>", "<bos><bos><eos>", "<|<|im_end|>|>",
    "text<|im_end|>text", "text<end_of_turn>text", " <|im_start|> ", " <start_of_turn> ", "<think>\n\n</think>\n\n",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", "▁▁", "▁▁▁▁", "▁ ▁", "a▁b", "▁hello",
    "<0x41>", "<0xFF>", "<0x0A>", "[MASK]", "<word>", "hello world", "Hello World", "HELLO  WORLD",
    "<td>a</td> </tr> </table>", "x> </y", "<p>hi</p>  </div>", "a > </b >", "ＡＢＣ", "[WORD] [word]", "<mask>",
    "  <mask>  x", "x[MASK]y", " [MASK] ", "<word>x", "a <word> b", "a<word>", "<|sep|>", "a|b||c", "q [UNK] r",
]

UNICODE_EDGE = [
    "e\u0301 vs \u00e9", "A\u030a vs \u00c5 vs \u212b", "\u1100\u1161\u11a8 vs \uac01", "Zalgo: Z\u0351\u0352\u036ba\u0308\u0301l\u0327g\u0330o\u0353",
    "ǅ ǆ Ǆ ﬁ ﬂ ﬃ ſt ẞ", "\u1e9b\u0323", "\u0958\u093c", "Ω \u2126 K \u212a", "𝐀𝐁𝐂 𝒶𝒷𝒸 𝔸𝔹", "ℌℍℎ ℓ №",
    "\ue000\uf8ff private use", "\U000f0000 \U0010fffd plane 15/16 PUA", "\ufffe\uffff nonchars", "\U00010000 \U0010ffff edges",
    "\u0000 nul", "ctrl \x01\x02\x07\x08\x1b[31mred\x1b[0m \x7f", "U+FFFD: \ufffd", "\ufffd\ufffd\ufffd", "a\ufffdb",
    "CJK Ext H: \U00031350\U00031351 Ext I: \U0002ebf0\U0002ebf1 Ext B: \U00020000\U0002a6d6",
    "Kawi: \U00011f04\U00011f05 Nag Mundari: \U0001e4d0\U0001e4d1 Kaktovik: \U0001d2c0\U0001d2c1",
    "Unicode 16: \U00010d50\U00010d51 \U000105c0 \U00016d43 \u1c89\u1c8a \U00011bc0",
    "Unicode 17 (unassigned to the reference): \U00010940 \U000323b0 \U00016ea0",
    "'s 'S 'ſ 'll 'LL 'Ll 're 'RE 've 'm 'd 't 'T", "I'm, you're, he's, she'd, we've, they'll, it'd",
    "’s ‘quoted’ “double” „low“ «guillemets» ‹single›", "—–-‒― … · • ‣ ′ ″",
    "∀x∈ℝ: x²≥0 ⇒ √(x²)=|x| ∑∏∫∮ ≠≤≥ ±∓ ×÷", "─│┌┐└┘├┤┬┴┼ ░▒▓█ ▲▼◆●", "♔♕♖♗♘♙ ♠♣♥♦ ☀☁☂☃",
    "\U0001f600\ufe0f\ufe0e text\ufe0e", "a\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307\u0308\u0309",
    "\u0915\u094d\u0937 \u0924\u094d\u0930", "\u0644\u0627 \ufefb \ufdfa", "\uac00\u11a8 \u1100\u1161",
    "Ａｂｃ　ｄｅｆ", "\u2460\u2461 \u2474 \u24b6\u24d0", "\U0001f130\U0001f170 squared", "x\u0345\u0399",
    "\u00b5 \u03bc \u00c5ngstr\u00f6m", "\u01c4\u01c5\u01c6 \u01f1\u01f2\u01f3", "İi̇ ıI", "ﬀ ﬆ", "\u0390\u03b0",
]

INVALID = [
    b"\x80", b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"abc\xe2\x82", b"\xe2\x82abc", b"\xf0\x9f\x98", b"\xf0\x9f\x98 x",
    b"hello \xff\xfe world", b"caf\xe9", b"\xc3\x28", b"\xa0\xa1", b"\xe2\x28\xa1", b"\xe2\x82\x28",
    b"\xf0\x28\x8c\xbc", b"\xf0\x90\x28\xbc", b"\xf0\x28\x8c\x28", b"\xc1\xbf", b"\xf5\x80\x80\x80",
    b"<|im_start|>\xff<|im_end|>", b"<start_of_turn>\x80\x80<end_of_turn>", b"\xef\xbf\xbd\xff\xef\xbf\xbd",
    b"text \xed\xa0\xbd\xed\xb8\x80 surrogate pair as CESU-8", b"\x00\xff\x00", b"\xe0\xa0", b"\xf0\x90\x80",
]


def unicode_words(rng):
    """Random 'words' from Unicode blocks of many scripts."""
    blocks = [
        (0x4E00, 0x9FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xD7A3), (0x0600, 0x06FF), (0x0900, 0x097F),
        (0x0400, 0x04FF), (0x0E00, 0x0E7F), (0x0590, 0x05FF), (0x0370, 0x03FF), (0x0980, 0x09FF), (0x0B80, 0x0BFF),
        (0x10A0, 0x10FF), (0x1200, 0x137F), (0x1F300, 0x1F5FF), (0x1F900, 0x1F9FF), (0x2200, 0x22FF), (0x0300, 0x036F),
        (0x20000, 0x2A6DF), (0x31350, 0x323AF), (0x1D400, 0x1D7FF), (0x2000, 0x206F), (0x00A0, 0x024F), (0xFF00, 0xFFEF),
        (0x1100, 0x11FF), (0x0E80, 0x0EFF), (0x1780, 0x17FF), (0xA000, 0xA48F), (0x1E900, 0x1E95F), (0x10D40, 0x10D8F),
    ]
    out = []
    for _ in range(320):
        k = rng.randint(1, 4)
        parts = []
        for _ in range(k):
            lo, hi = rng.choice(blocks)
            n = rng.randint(1, 12)
            parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(n)))
        out.append(rng.choice([" ", "", "\n", "  ", "\t", ", "]).join(parts))
    return out


def package_texts(rng, site):
    """Chunks of files shipped in the pinned reference packages: code, docs, non-English lines."""
    roots = ["jinja2", "tokenizers", "transformers/models/llama", "transformers/models/gemma3",
             "transformers/models/qwen2", "transformers/models/bert", "mlx_lm", "numpy/_core/include/numpy",
             "huggingface_hub", "markupsafe", "transformers/utils"]
    exts = (".py", ".h", ".pyi", ".md", ".txt", ".json", ".jinja", ".js", ".css", ".html", ".c", ".cpp")
    files = []
    for r in roots:
        base = os.path.join(site, r)
        for dp, dn, fn in os.walk(base):
            dn.sort()
            for f in sorted(fn):
                if f.endswith(exts):
                    files.append(os.path.join(dp, f))
    chunks, foreign = [], []
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (UnicodeDecodeError, OSError):
            continue
        for ln in lines:
            if any(ord(c) > 0x2FF for c in ln) and len(ln.strip()) > 3:
                foreign.append(ln)
        if len(lines) > 8:
            for _ in range(2):
                a = rng.randrange(0, len(lines))
                b = min(len(lines), a + rng.randint(1, 40))
                chunks.append("\n".join(lines[a:b]))
    rng.shuffle(chunks)
    foreign = sorted(set(foreign))
    rng.shuffle(foreign)
    return chunks[:700], foreign[:250]


def build(site):
    rng = random.Random(SEED)
    seeds = LANG + EMOJI + CODE + SPACES + NUMBERS + SPECIAL + UNICODE_EDGE
    items = ["", "a", " a", "a ", "A", ".", "?!", "\u00e9", "中", "😀"] + list(seeds)
    items += [s.upper() for s in LANG[:8]] + [s.lower() for s in LANG[:8]]
    items += list(INVALID)
    words = unicode_words(rng)
    items += words
    chunks, foreign = package_texts(rng, site)
    items += chunks + foreign
    # long inputs: one long line without newlines, long runs, a whole file
    items.append(" ".join(LANG) * 3)
    items.append("x" * 3000)
    items.append("1234567890" * 300)
    items.append("ab " * 2000)
    items.append(("\u4e2d\u6587" * 500))
    items.append("".join(CODE) * 2)
    if chunks:
        items.append("\n".join(chunks[:20]))
    # seeded combinations of everything above
    pool = seeds + words[:100] + foreign[:100] + chunks[:100]
    seps = ["", " ", "  ", "\n", "\n\n", "\t", " \n", "\r\n", ". ", ", "] + SPECIAL[:30] + SPACES[:20]
    for _ in range(1300):
        k = rng.randint(2, 5)
        parts = [rng.choice(pool) for _ in range(k)]
        out = parts[0]
        for p in parts[1:]:
            out += rng.choice(seps) + p
        r = rng.random()
        if r < 0.1:
            out = out.upper()
        elif r < 0.15:
            out = " " + out
        elif r < 0.2:
            out = out + rng.choice(SPACES)
        items.append(out)
    # a few ill-formed combinations
    for _ in range(40):
        a = rng.choice(seeds).encode("utf-8")
        b = rng.choice(INVALID)
        items.append(a[: rng.randint(0, len(a))] + b + rng.choice(seeds).encode("utf-8"))
    # drop exact duplicates, keep order
    seen, out = set(), []
    for it in items:
        key = (type(it), it)
        if key not in seen:
            seen.add(key)
            out.append(it)
    return out


if __name__ == "__main__":
    import site as _site
    c = build(_site.getsitepackages()[0])
    print(len(c), "items", sum(len(x.encode() if isinstance(x, str) else x) for x in c), "bytes", file=sys.stderr)
