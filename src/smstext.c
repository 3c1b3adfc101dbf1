/* smstext.c - SMS text: GSM-7 or UCS-2, parts, and inbound decoding.
 *
 * The coding is GSM-7 when every character of the text is in the GSM 03.38
 * default alphabet or its extension table, UCS-2 otherwise (one character
 * outside the alphabet - a Cyrillic letter, a backtick, an emoji - makes the
 * whole message UCS-2). Parts are filled greedily, one whole character at a
 * time, so an escape sequence or a surrogate pair never straddles two parts.
 * Everything here is pure: no allocation except the documented results, no
 * logging (the texts are message bodies).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smstext.h"
#include "util.h"

/* Septets of each ASCII character: 1 in the default alphabet, 2 in the
 * extension table (sent as ESC + char), 0 not representable. */
static unsigned gsm7_ascii_cost(unsigned c)
{
    switch (c) {
    case '\n':
    case '\r':
        return 1;
    case '\f':
    case '^':
    case '{':
    case '}':
    case '\\':
    case '[':
    case '~':
    case ']':
    case '|':
        return 2;
    case '`':
        return 0;
    default:
        return c >= 0x20 && c < 0x7f ? 1 : 0;
    }
}

/* The non-ASCII characters of the default alphabet (TS 23.038 6.2.1). */
static const uint16_t gsm7_basic_nonascii[] = {
    0x00a1, 0x00a3, 0x00a4, 0x00a5, 0x00a7, 0x00bf, 0x00c4, 0x00c5,
    0x00c6, 0x00c7, 0x00c9, 0x00d1, 0x00d6, 0x00d8, 0x00dc, 0x00df,
    0x00e0, 0x00e4, 0x00e5, 0x00e6, 0x00e8, 0x00e9, 0x00ec, 0x00f1,
    0x00f2, 0x00f6, 0x00f8, 0x00f9, 0x00fc, 0x0393, 0x0394, 0x0398,
    0x039b, 0x039e, 0x03a0, 0x03a3, 0x03a6, 0x03a8, 0x03a9,
};

#define EURO_SIGN 0x20ac /* the one non-ASCII character of the extension */

int sb_sms_gsm7_char(unsigned long cp, unsigned *septets)
{
    unsigned cost = 0;

    if (cp < 0x80) {
        cost = gsm7_ascii_cost((unsigned)cp);
    } else if (cp == EURO_SIGN) {
        cost = 2;
    } else {
        for (size_t i = 0; i < SB_ARRAY_LEN(gsm7_basic_nonascii); i++) {
            if (gsm7_basic_nonascii[i] == cp) {
                cost = 1;
                break;
            }
        }
    }
    if (septets)
        *septets = cost;
    return cost != 0;
}

const char *sb_sms_coding_name(enum sb_sms_coding coding)
{
    return coding == SB_SMS_UCS2 ? "ucs2" : "gsm7";
}

/* Cost of one code point in the given coding (the text was checked). */
static size_t char_units(enum sb_sms_coding coding, uint32_t cp)
{
    unsigned septets;

    if (coding == SB_SMS_UCS2)
        return cp > 0xffff ? 2 : 1;
    sb_sms_gsm7_char(cp, &septets);
    return septets;
}

static int fail(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return -1;
}

/* Pass one: valid UTF-8 without NUL; GSM-7 when every character is. */
static int scan_text(const unsigned char *p, size_t len,
                     enum sb_sms_coding *coding, const char **why)
{
    int gsm = 1;

    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(p + i, len - i, &cp);

        if (k == 0)
            return fail(why, "invalid UTF-8");
        if (cp == 0)
            return fail(why, "NUL character in text");
        if (gsm && !sb_sms_gsm7_char(cp, NULL))
            gsm = 0;
        i += k;
    }
    *coding = gsm ? SB_SMS_GSM7 : SB_SMS_UCS2;
    return 0;
}

int sb_sms_split(const char *text, size_t len, size_t max_parts,
                 struct sb_sms_info *info, struct sb_sms_part *parts,
                 const char **why)
{
    const unsigned char *p = (const unsigned char *)text;
    enum sb_sms_coding coding;
    size_t total = 0, limit, nparts = 1, start = 0, units = 0;

    if (max_parts == 0)
        max_parts = SB_SMS_MAX_PARTS;
    if (max_parts > SB_SMS_MAX_PARTS)
        return fail(why, "max_parts above 255");
    if (!text && len)
        return fail(why, "no text");
    if (scan_text(p, len, &coding, why) < 0)
        return -1;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(p + i, len - i, &cp);

        total += char_units(coding, cp);
        i += k;
    }
    if (coding == SB_SMS_GSM7)
        limit = total <= SB_SMS_GSM7_SINGLE ? total : SB_SMS_GSM7_PART;
    else
        limit = total <= SB_SMS_UCS2_SINGLE ? total : SB_SMS_UCS2_PART;

    /* Pass two: whole characters into parts of at most `limit` units. */
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(p + i, len - i, &cp);
        size_t c = char_units(coding, cp);

        if (units + c > limit) {
            if (parts && nparts <= max_parts)
                parts[nparts - 1] =
                    (struct sb_sms_part){start, i - start, units};
            nparts++;
            start = i;
            units = 0;
        }
        units += c;
        i += k;
    }
    if (parts && nparts <= max_parts)
        parts[nparts - 1] = (struct sb_sms_part){start, len - start, units};

    if (info) {
        info->coding = coding;
        info->units = total;
        info->parts = nparts;
    }
    if (nparts > max_parts)
        return fail(why, "text too long: more parts than allowed");
    return 0;
}

/* UTF-8 bytes of cp (a valid scalar value) at out; returns their count. */
static size_t put_utf8(unsigned char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

static void put_u16be(unsigned char *out, uint32_t u)
{
    out[0] = (unsigned char)(u >> 8);
    out[1] = (unsigned char)(u & 0xff);
}

int sb_sms_to_utf16be(const char *text, size_t len, char **out, size_t *outlen,
                      const char **why)
{
    const unsigned char *p = (const unsigned char *)text;
    unsigned char *buf;
    size_t n = 0;

    if (!text && len)
        return fail(why, "no text");
    if (len > SIZE_MAX / 2 - 1)
        return fail(why, "text too long");
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(p + i, len - i, &cp);

        if (k == 0)
            return fail(why, "invalid UTF-8");
        if (cp == 0)
            return fail(why, "NUL character in text");
        i += k;
    }
    /* A UTF-8 sequence of k bytes becomes 2 or 4 UTF-16 bytes: <= 2k. */
    buf = sb_malloc(2 * len + 1);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(p + i, len - i, &cp);

        if (cp > 0xffff) {
            cp -= 0x10000;
            put_u16be(buf + n, 0xd800 | (cp >> 10));
            put_u16be(buf + n + 2, 0xdc00 | (cp & 0x3ff));
            n += 4;
        } else {
            put_u16be(buf + n, cp);
            n += 2;
        }
        i += k;
    }
    buf[n] = '\0';
    *out = (char *)buf;
    if (outlen)
        *outlen = n;
    return 0;
}

/* ---- inbound ---------------------------------------------------------- */

enum charset {
    CS_UTF8,
    CS_UTF16, /* byte-order mark decides; big-endian without one */
    CS_UTF16BE,
    CS_UTF16LE,
    CS_LATIN1,
    CS_CP1251,
};

static const struct {
    const char *name;
    enum charset cs;
} charsets[] = {
    {"UTF-8", CS_UTF8},       {"UTF8", CS_UTF8},
    {"UTF-16BE", CS_UTF16BE}, {"UTF16BE", CS_UTF16BE},
    {"UCS-2", CS_UTF16BE},    {"UCS-2BE", CS_UTF16BE},
    {"UCS2", CS_UTF16BE},     {"UTF-16LE", CS_UTF16LE},
    {"UTF16LE", CS_UTF16LE},  {"UTF-16", CS_UTF16},
    {"UTF16", CS_UTF16},      {"ISO-8859-1", CS_LATIN1},
    {"ISO8859-1", CS_LATIN1}, {"ISO_8859-1", CS_LATIN1},
    {"LATIN1", CS_LATIN1},    {"WINDOWS-1251", CS_CP1251},
    {"CP1251", CS_CP1251},
};

/* windows-1251 bytes 0x80..0xbf (0 = not defined); 0xc0..0xff are
 * U+0410..U+044F in order, below 0x80 it is ASCII. */
static const uint16_t cp1251_high[64] = {
    0x0402, 0x0403, 0x201a, 0x0453, 0x201e, 0x2026, 0x2020, 0x2021,
    0x20ac, 0x2030, 0x0409, 0x2039, 0x040a, 0x040c, 0x040b, 0x040f,
    0x0452, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
    0x0000, 0x2122, 0x0459, 0x203a, 0x045a, 0x045c, 0x045b, 0x045f,
    0x00a0, 0x040e, 0x045e, 0x0408, 0x00a4, 0x0490, 0x00a6, 0x00a7,
    0x0401, 0x00a9, 0x0404, 0x00ab, 0x00ac, 0x00ad, 0x00ae, 0x0407,
    0x00b0, 0x00b1, 0x0406, 0x0456, 0x0491, 0x00b5, 0x00b6, 0x00b7,
    0x0451, 0x2116, 0x0454, 0x00bb, 0x0458, 0x0405, 0x0455, 0x0457,
};

static int charset_find(const char *name, enum charset *cs)
{
    for (size_t i = 0; i < SB_ARRAY_LEN(charsets); i++) {
        if (strcasecmp(name, charsets[i].name) == 0) {
            *cs = charsets[i].cs;
            return 0;
        }
    }
    return -1;
}

/* UTF-16 in either byte order into out; returns bytes written or -1. A
 * leading byte-order mark is dropped when bom is set. */
static long decode_utf16(const unsigned char *p, size_t len, int big, int bom,
                         unsigned char *out, const char **why)
{
    size_t n = 0;

    if (len % 2)
        return fail(why, "odd number of bytes in UTF-16");
    for (size_t i = 0; i < len; i += 2) {
        uint32_t u = big ? (uint32_t)p[i] << 8 | p[i + 1]
                         : (uint32_t)p[i + 1] << 8 | p[i];

        if (u >= 0xdc00 && u <= 0xdfff)
            return fail(why, "lone surrogate in UTF-16");
        if (u >= 0xd800 && u <= 0xdbff) {
            uint32_t lo;

            if (i + 4 > len)
                return fail(why, "lone surrogate in UTF-16");
            lo = big ? (uint32_t)p[i + 2] << 8 | p[i + 3]
                     : (uint32_t)p[i + 3] << 8 | p[i + 2];
            if (lo < 0xdc00 || lo > 0xdfff)
                return fail(why, "lone surrogate in UTF-16");
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        }
        if (u == 0)
            return fail(why, "NUL character in text");
        if (i == 0 && bom && u == 0xfeff)
            continue;
        n += put_utf8(out + n, u);
    }
    return (long)n;
}

static long decode_8bit(const unsigned char *p, size_t len, enum charset cs,
                        unsigned char *out, const char **why)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        uint32_t u = p[i];

        if (u == 0)
            return fail(why, "NUL character in text");
        if (cs == CS_CP1251 && u >= 0xc0)
            u = 0x0410 + (u - 0xc0);
        else if (cs == CS_CP1251 && u >= 0x80)
            u = cp1251_high[u - 0x80];
        if (u == 0)
            return fail(why, "byte not defined in windows-1251");
        n += put_utf8(out + n, u);
    }
    return (long)n;
}

static long decode_utf8(const unsigned char *p, size_t len, unsigned char *out,
                        const char **why)
{
    size_t skip = 0;

    if (len >= 3 && p[0] == 0xef && p[1] == 0xbb && p[2] == 0xbf)
        skip = 3; /* a byte-order mark */
    for (size_t i = skip; i < len;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(p + i, len - i, &cp);

        if (k == 0)
            return fail(why, "invalid UTF-8");
        if (cp == 0)
            return fail(why, "NUL character in text");
        i += k;
    }
    memcpy(out, p + skip, len - skip);
    return (long)(len - skip);
}

int sb_sms_decode(int coding, const char *charset, const void *body, size_t len,
                  char **out, size_t *outlen, const char **why)
{
    const unsigned char *p = body;
    enum charset cs;
    unsigned char *buf;
    long n;

    if (coding == SB_SMS_CODING_8BIT)
        return fail(why, "8-bit binary message");
    if (coding != -1 && coding != SB_SMS_CODING_7BIT &&
        coding != SB_SMS_CODING_UCS2)
        return fail(why, "unknown coding");
    if (!body && len)
        return fail(why, "no body");
    if (charset && *charset) {
        if (charset_find(charset, &cs) < 0)
            return fail(why, "unsupported charset");
    } else {
        cs = coding == SB_SMS_CODING_UCS2 ? CS_UTF16BE : CS_UTF8;
    }
    if (len > (SIZE_MAX - 1) / 3)
        return fail(why, "body too long");
    /* Worst case 3 UTF-8 bytes per input byte (windows-1251 punctuation). */
    buf = sb_malloc(3 * len + 1);
    switch (cs) {
    case CS_UTF8:
        n = decode_utf8(p, len, buf, why);
        break;
    case CS_UTF16:
        if (len >= 2 && p[0] == 0xff && p[1] == 0xfe)
            n = decode_utf16(p + 2, len - 2, 0, 0, buf, why);
        else
            n = decode_utf16(p, len, 1, 1, buf, why);
        break;
    case CS_UTF16BE:
    case CS_UTF16LE:
        n = decode_utf16(p, len, cs == CS_UTF16BE, 1, buf, why);
        break;
    default:
        n = decode_8bit(p, len, cs, buf, why);
        break;
    }
    if (n < 0) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = (char *)buf;
    if (outlen)
        *outlen = (size_t)n;
    return 0;
}
