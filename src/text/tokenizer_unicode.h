/*
 * tokenizer_unicode.h — the Unicode facts the tokenizer needs, at the Unicode version of the
 * reference.
 *
 * The reference tokenizer (Hugging Face `tokenizers` 0.23) matches split patterns with
 * Oniguruma, whose tables are Unicode 16.0; Debian's PCRE2 10.42 has Unicode 14.0. Property
 * classes are therefore expanded from our own table (tokenizer_unicode_tab.c, generated from
 * the Unicode 16.0 database) into explicit ranges before PCRE2 sees a pattern.
 *
 * Also here: UTF-8 decoding and validation with the replacement rule the reference uses for
 * invalid input (one U+FFFD per maximal ill-formed subpart, as Rust's String::from_utf8_lossy
 * and Python's bytes.decode("utf-8", "replace") do).
 */
#ifndef OPTIQ_TEXT_TOKENIZER_UNICODE_H
#define OPTIQ_TEXT_TOKENIZER_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* General Category; the order is the generator's (tools/reference/gen_unicode_tables.py). */
enum tok_ucat {
    UC_CN, UC_LU, UC_LL, UC_LT, UC_LM, UC_LO, UC_MN, UC_MC, UC_ME, UC_ND, UC_NL, UC_NO,
    UC_PC, UC_PD, UC_PS, UC_PE, UC_PI, UC_PF, UC_PO, UC_SM, UC_SC, UC_SK, UC_SO,
    UC_ZS, UC_ZL, UC_ZP, UC_CC, UC_CF, UC_CS, UC_CO, UC_COUNT
};

extern const unsigned tok_ucat_count;
extern const uint32_t tok_ucat_start[];
extern const uint8_t tok_ucat_cat[];

/* General Category of a code point (UC_CN for unassigned and out of range). */
int tok_ucat_of(uint32_t cp);

/* Bit mask (1u << UC_x) of the categories named by a property name as Oniguruma spells them
 * ("L", "Lu", "Letter", "N", "Number", "P", ...); 0 when the name is not a General Category. */
uint32_t tok_ucat_mask(const char *name, size_t len);

/* Unicode White_Space (what Oniguruma's \s matches). */
int tok_is_white_space(uint32_t cp);
/* What the regex crate's \w matches: Alphabetic, marks, decimal numbers, connector
 * punctuation, join controls (approximated from the General Category plus the letter-like
 * symbols that are Other_Alphabetic). */
int tok_is_word_char(uint32_t cp);

/* ---- byte-level alphabet ---- */

/* GPT-2's bytes_to_unicode: the printable Latin-1 bytes stand for themselves, the other 68
 * bytes for U+0100.. in byte order. tok_bytelevel_byte is the inverse (-1: not in the map). */
uint32_t tok_bytelevel_cp(unsigned char b);
int tok_bytelevel_byte(uint32_t cp);

/* ---- UTF-8 ---- */

/* Decode one code point of well-formed UTF-8 at s, n >= 1 bytes available (never read past
 * them: a sequence cut short decodes as its lead byte); returns its length. */
static inline int tok_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    size_t need = c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (need == 1 || n < need) { *cp = c; return 1; }
    if (need == 2) { *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu); return 2; }
    if (need == 3) { *cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu); return 3; }
    *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
    return 4;
}

/* Length of the UTF-8 sequence a lead byte starts (1 for continuation/invalid bytes). */
static inline int tok_utf8_len(unsigned char c) {
    return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Encode cp into out (4 bytes room); returns the length. */
int tok_utf8_encode(uint32_t cp, char *out);

/* Length of the well-formed sequence at s[0..n), or 0 when s starts with an ill-formed
 * subpart; *bad receives the length of that maximal subpart (>= 1) in that case. */
size_t tok_utf8_check_one(const unsigned char *s, size_t n, size_t *bad);

/* 1 when s[0..n) is well-formed UTF-8. */
int tok_utf8_valid(const char *s, size_t n);

/* 1 when s[0..n) (n >= 1) is a proper prefix of a well-formed sequence: more bytes could
 * still complete it. */
int tok_utf8_incomplete(const char *s, size_t n);

#endif
