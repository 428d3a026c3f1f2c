/*
 * tokenizer_unicode.c — General Category lookup, White_Space, UTF-8 helpers.
 */
#include "text/tokenizer_unicode.h"

#include <string.h>

int tok_ucat_of(uint32_t cp) {
    if (cp > 0x10FFFF) return UC_CN;
    size_t lo = 0, hi = tok_ucat_count; /* find the last start <= cp */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (tok_ucat_start[mid] <= cp) lo = mid;
        else hi = mid;
    }
    return tok_ucat_cat[lo];
}

#define M(c) (1u << (c))
#define MASK_L (M(UC_LU) | M(UC_LL) | M(UC_LT) | M(UC_LM) | M(UC_LO))
#define MASK_M (M(UC_MN) | M(UC_MC) | M(UC_ME))
#define MASK_N (M(UC_ND) | M(UC_NL) | M(UC_NO))
#define MASK_P (M(UC_PC) | M(UC_PD) | M(UC_PS) | M(UC_PE) | M(UC_PI) | M(UC_PF) | M(UC_PO))
#define MASK_S (M(UC_SM) | M(UC_SC) | M(UC_SK) | M(UC_SO))
#define MASK_Z (M(UC_ZS) | M(UC_ZL) | M(UC_ZP))
#define MASK_C (M(UC_CN) | M(UC_CC) | M(UC_CF) | M(UC_CS) | M(UC_CO))

static const struct { const char *name; uint32_t mask; } UCAT_NAMES[] = {
    {"L", MASK_L}, {"Letter", MASK_L}, {"M", MASK_M}, {"Mark", MASK_M}, {"Combining_Mark", MASK_M},
    {"N", MASK_N}, {"Number", MASK_N}, {"P", MASK_P}, {"Punct", MASK_P}, {"Punctuation", MASK_P},
    {"S", MASK_S}, {"Symbol", MASK_S}, {"Z", MASK_Z}, {"Separator", MASK_Z}, {"C", MASK_C}, {"Other", MASK_C},
    {"Lu", M(UC_LU)}, {"Uppercase_Letter", M(UC_LU)}, {"Ll", M(UC_LL)}, {"Lowercase_Letter", M(UC_LL)},
    {"Lt", M(UC_LT)}, {"Titlecase_Letter", M(UC_LT)}, {"Lm", M(UC_LM)}, {"Modifier_Letter", M(UC_LM)},
    {"Lo", M(UC_LO)}, {"Other_Letter", M(UC_LO)}, {"LC", M(UC_LU) | M(UC_LL) | M(UC_LT)},
    {"Cased_Letter", M(UC_LU) | M(UC_LL) | M(UC_LT)},
    {"Mn", M(UC_MN)}, {"Nonspacing_Mark", M(UC_MN)}, {"Mc", M(UC_MC)}, {"Spacing_Mark", M(UC_MC)},
    {"Me", M(UC_ME)}, {"Enclosing_Mark", M(UC_ME)},
    {"Nd", M(UC_ND)}, {"Decimal_Number", M(UC_ND)}, {"Nl", M(UC_NL)}, {"Letter_Number", M(UC_NL)},
    {"No", M(UC_NO)}, {"Other_Number", M(UC_NO)},
    {"Pc", M(UC_PC)}, {"Connector_Punctuation", M(UC_PC)}, {"Pd", M(UC_PD)}, {"Dash_Punctuation", M(UC_PD)},
    {"Ps", M(UC_PS)}, {"Open_Punctuation", M(UC_PS)}, {"Pe", M(UC_PE)}, {"Close_Punctuation", M(UC_PE)},
    {"Pi", M(UC_PI)}, {"Initial_Punctuation", M(UC_PI)}, {"Pf", M(UC_PF)}, {"Final_Punctuation", M(UC_PF)},
    {"Po", M(UC_PO)}, {"Other_Punctuation", M(UC_PO)},
    {"Sm", M(UC_SM)}, {"Math_Symbol", M(UC_SM)}, {"Sc", M(UC_SC)}, {"Currency_Symbol", M(UC_SC)},
    {"Sk", M(UC_SK)}, {"Modifier_Symbol", M(UC_SK)}, {"So", M(UC_SO)}, {"Other_Symbol", M(UC_SO)},
    {"Zs", M(UC_ZS)}, {"Space_Separator", M(UC_ZS)}, {"Zl", M(UC_ZL)}, {"Line_Separator", M(UC_ZL)},
    {"Zp", M(UC_ZP)}, {"Paragraph_Separator", M(UC_ZP)},
    {"Cc", M(UC_CC)}, {"Control", M(UC_CC)}, {"Cf", M(UC_CF)}, {"Format", M(UC_CF)},
    {"Cs", M(UC_CS)}, {"Surrogate", M(UC_CS)}, {"Co", M(UC_CO)}, {"Private_Use", M(UC_CO)},
    {"Cn", M(UC_CN)}, {"Unassigned", M(UC_CN)},
};

uint32_t tok_ucat_mask(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof UCAT_NAMES / sizeof UCAT_NAMES[0]; i++)
        if (strlen(UCAT_NAMES[i].name) == len && memcmp(UCAT_NAMES[i].name, name, len) == 0) return UCAT_NAMES[i].mask;
    return 0;
}

/* PropList.txt White_Space (unchanged since Unicode 6.3, when U+180E left it). */
int tok_is_white_space(uint32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return 0;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int tok_is_word_char(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || cp == '_';
    int c = tok_ucat_of(cp);
    if ((MASK_L | MASK_M | M(UC_ND) | M(UC_NL) | M(UC_PC)) & M(c)) return 1;
    /* join controls and the symbols that are Other_Alphabetic (circled / squared letters) */
    return cp == 0x200C || cp == 0x200D || (cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) ||
           (cp >= 0x1F150 && cp <= 0x1F169) || (cp >= 0x1F170 && cp <= 0x1F189);
}

static int bl_printable(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

uint32_t tok_bytelevel_cp(unsigned char b) {
    if (bl_printable(b)) return b;
    unsigned n = 0; /* rank of b among the non-printable bytes */
    for (unsigned x = 0; x < b; x++) n += !bl_printable(x);
    return 256 + n;
}

int tok_bytelevel_byte(uint32_t cp) {
    if (cp < 256) return bl_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    unsigned n = cp - 256;
    for (unsigned x = 0; x < 256; x++)
        if (!bl_printable(x) && n-- == 0) return (int)x;
    return -1;
}

int tok_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | (cp >> 6)); o[1] = (unsigned char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Table 3-7 of the Unicode standard: the well-formed byte sequences. The maximal ill-formed
 * subpart is the longest prefix of a well-formed sequence that the input matches (at least one
 * byte); each such subpart becomes one U+FFFD. */
size_t tok_utf8_check_one(const unsigned char *s, size_t n, size_t *bad) {
    unsigned c = s[0];
    *bad = 1;
    if (c < 0x80) return 1;
    if (c < 0xC2 || c > 0xF4) return 0;
    size_t need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    size_t i = 1;
    for (; i < need; i++) {
        if (i >= n) { *bad = i; return 0; }
        unsigned b = s[i];
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) { *bad = i; return 0; }
    }
    return need;
}

int tok_utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, bad;
    while (i < n) {
        if (p[i] < 0x80) { i++; continue; }
        size_t k = tok_utf8_check_one(p + i, n - i, &bad);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

int tok_utf8_incomplete(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    if (n == 0 || n > 3 || p[0] < 0xC2 || p[0] > 0xF4) return 0;
    size_t bad;
    return tok_utf8_check_one(p, n, &bad) == 0 && bad == n;
}
