/* test_smstext.c - GSM-7 / UCS-2 choice, parts, UTF-16 and inbound text.
 *
 * The GSM 03.38 default alphabet is written out here in its own order (code
 * 0x00 to 0x7f) and every code point below U+3000 is checked against it and
 * the extension table. Part counts are checked at the exact boundaries
 * (160/161 and 306/307 septets, 70/71 and 134/135 units), with escape
 * characters and surrogate pairs placed so they would straddle a part; each
 * split is also checked for its invariants (parts contiguous, covering the
 * text, on character boundaries, within the limit, units adding up). The
 * UTF-16 encoder and the inbound decoder are checked by hand-made bytes,
 * round trips and, for windows-1251 and ISO-8859-1, against glibc's iconv
 * for all 256 bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <iconv.h>

#include "smstext.h"
#include "util.h"

/* 3GPP TS 23.038 6.2.1, by GSM code; 0x1b (ESC) is not a character. */
static const uint16_t gsm_basic[128] = {
    0x0040, 0x00a3, 0x0024, 0x00a5, 0x00e8, 0x00e9, 0x00f9, 0x00ec, 0x00f2,
    0x00c7, 0x000a, 0x00d8, 0x00f8, 0x000d, 0x00c5, 0x00e5, 0x0394, 0x005f,
    0x03a6, 0x0393, 0x039b, 0x03a9, 0x03a0, 0x03a8, 0x03a3, 0x0398, 0x039e,
    0xffff, 0x00c6, 0x00e6, 0x00df, 0x00c9, 0x0020, 0x0021, 0x0022, 0x0023,
    0x00a4, 0x0025, 0x0026, 0x0027, 0x0028, 0x0029, 0x002a, 0x002b, 0x002c,
    0x002d, 0x002e, 0x002f, 0x0030, 0x0031, 0x0032, 0x0033, 0x0034, 0x0035,
    0x0036, 0x0037, 0x0038, 0x0039, 0x003a, 0x003b, 0x003c, 0x003d, 0x003e,
    0x003f, 0x00a1, 0x0041, 0x0042, 0x0043, 0x0044, 0x0045, 0x0046, 0x0047,
    0x0048, 0x0049, 0x004a, 0x004b, 0x004c, 0x004d, 0x004e, 0x004f, 0x0050,
    0x0051, 0x0052, 0x0053, 0x0054, 0x0055, 0x0056, 0x0057, 0x0058, 0x0059,
    0x005a, 0x00c4, 0x00d6, 0x00d1, 0x00dc, 0x00a7, 0x00bf, 0x0061, 0x0062,
    0x0063, 0x0064, 0x0065, 0x0066, 0x0067, 0x0068, 0x0069, 0x006a, 0x006b,
    0x006c, 0x006d, 0x006e, 0x006f, 0x0070, 0x0071, 0x0072, 0x0073, 0x0074,
    0x0075, 0x0076, 0x0077, 0x0078, 0x0079, 0x007a, 0x00e4, 0x00f6, 0x00f1,
    0x00fc, 0x00e0,
};

/* The extension table (6.2.1.1): form feed ^ { } \ [ ~ ] | euro. */
static const uint16_t gsm_ext[] = {0x000c, 0x005e, 0x007b, 0x007d, 0x005c,
                                   0x005b, 0x007e, 0x005d, 0x007c, 0x20ac};

static unsigned expected_septets(unsigned long cp)
{
    for (size_t i = 0; i < 128; i++)
        if (gsm_basic[i] == cp && i != 0x1b)
            return 1;
    for (size_t i = 0; i < sizeof(gsm_ext) / sizeof(gsm_ext[0]); i++)
        if (gsm_ext[i] == cp)
            return 2;
    return 0;
}

static void test_gsm7_alphabet(void **state)
{
    int basic = 0, ext = 0;

    (void)state;
    for (unsigned long cp = 0; cp < 0x3000; cp++) {
        unsigned got = 99, want = expected_septets(cp);
        int in = sb_sms_gsm7_char(cp, &got);

        if (got != want)
            print_error("U+%04lX: %u septets, want %u\n", cp, got, want);
        assert_int_equal(got, want);
        assert_int_equal(in, want != 0);
        basic += want == 1;
        ext += want == 2;
    }
    assert_int_equal(basic, 127);
    assert_int_equal(ext, 10);
    assert_int_equal(sb_sms_gsm7_char(0x1f600, NULL), 0);
    assert_int_equal(sb_sms_gsm7_char(0x20ac, NULL), 1);
    assert_string_equal(sb_sms_coding_name(SB_SMS_GSM7), "gsm7");
    assert_string_equal(sb_sms_coding_name(SB_SMS_UCS2), "ucs2");
}

/* ---- splitting --------------------------------------------------------- */

/* A growing test string. */
struct text {
    char s[4096];
    size_t n;
};

static void add(struct text *t, const char *piece, size_t times)
{
    size_t k = strlen(piece);

    for (size_t i = 0; i < times; i++) {
        assert_true(t->n + k < sizeof(t->s));
        memcpy(t->s + t->n, piece, k);
        t->n += k;
    }
    t->s[t->n] = '\0';
}

/* Units of text[off, off+len) in the given coding, recomputed here. */
static size_t units_of(const char *s, size_t len, enum sb_sms_coding coding)
{
    size_t u = 0;

    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(s + i, len - i, &cp);

        assert_true(k > 0);
        if (coding == SB_SMS_UCS2)
            u += cp > 0xffff ? 2 : 1;
        else
            u += expected_septets(cp);
        i += k;
    }
    return u;
}

/* Split and check every invariant; returns the info. */
static struct sb_sms_info split_ok(const struct text *t)
{
    struct sb_sms_info info;
    struct sb_sms_part parts[SB_SMS_MAX_PARTS];
    const char *why = NULL;
    size_t off = 0, sum = 0, limit;

    memset(parts, 0xa5, sizeof(parts));
    if (sb_sms_split(t->s, t->n, 0, &info, parts, &why) != 0) {
        print_error("split refused: %s\n", why);
        fail();
    }
    assert_true(info.parts >= 1);
    if (info.coding == SB_SMS_GSM7)
        limit = info.parts == 1 ? SB_SMS_GSM7_SINGLE : SB_SMS_GSM7_PART;
    else
        limit = info.parts == 1 ? SB_SMS_UCS2_SINGLE : SB_SMS_UCS2_PART;
    assert_int_equal(info.units, units_of(t->s, t->n, info.coding));
    for (size_t i = 0; i < info.parts; i++) {
        const struct sb_sms_part *p = &parts[i];

        assert_int_equal(p->off, off);
        assert_true(p->len > 0 || t->n == 0);
        assert_true(p->units <= limit);
        assert_int_equal(p->units,
                         units_of(t->s + p->off, p->len, info.coding));
        /* greedy: the next character would not have fitted */
        if (i + 1 < info.parts) {
            const char *next = t->s + p->off + p->len;
            size_t k = sb_utf8_seq(next, t->n - p->off - p->len, NULL);

            assert_true(k > 0);
            assert_true(p->units + units_of(next, k, info.coding) > limit);
        }
        off += p->len;
        sum += p->units;
    }
    assert_int_equal(off, t->n);
    assert_int_equal(sum, info.units);
    return info;
}

struct split_case {
    const char *what;
    const char *piece1;
    size_t times1;
    const char *piece2;
    size_t times2;
    enum sb_sms_coding coding;
    size_t units;
    size_t parts;
    size_t first_len; /* bytes of part 1 */
};

#define ZH "\xd0\xb6" /* U+0436, Cyrillic small zhe */
#define EURO "\xe2\x82\xac"
#define SMILE "\xf0\x9f\x98\x80" /* U+1F600 */

static const struct split_case split_cases[] = {
    {"latin 160", "a", 160, "", 0, SB_SMS_GSM7, 160, 1, 160},
    {"latin 161", "a", 161, "", 0, SB_SMS_GSM7, 161, 2, 153},
    {"latin 306", "a", 306, "", 0, SB_SMS_GSM7, 306, 2, 153},
    {"latin 307", "a", 307, "", 0, SB_SMS_GSM7, 307, 3, 153},
    {"russian 70", ZH, 70, "", 0, SB_SMS_UCS2, 70, 1, 140},
    {"russian 71", ZH, 71, "", 0, SB_SMS_UCS2, 71, 2, 134},
    {"russian 134", ZH, 134, "", 0, SB_SMS_UCS2, 134, 2, 134},
    {"russian 135", ZH, 135, "", 0, SB_SMS_UCS2, 135, 3, 134},
    {"ext fits single", "a", 158, "^", 1, SB_SMS_GSM7, 160, 1, 159},
    {"ext overflows single", "a", 159, "^", 1, SB_SMS_GSM7, 161, 2, 153},
    {"euro straddles", "a", 152, EURO "bbbbbbbbbb", 1, SB_SMS_GSM7, 164, 2,
     152},
    {"euro single", "a", 152, EURO, 1, SB_SMS_GSM7, 154, 1, 155},
    {"euro ends part", "a", 151, EURO "bbbbbbbbbb", 1, SB_SMS_GSM7, 163, 2,
     154},
    {"brace straddles", "a", 152, "{aaaaaaaaa", 1, SB_SMS_GSM7, 163, 2, 152},
    {"all ext", "}", 80, "", 0, SB_SMS_GSM7, 160, 1, 80},
    {"all ext over", "}", 81, "", 0, SB_SMS_GSM7, 162, 2, 76},
    {"emoji 35", SMILE, 35, "", 0, SB_SMS_UCS2, 70, 1, 140},
    {"emoji 36", SMILE, 36, "", 0, SB_SMS_UCS2, 72, 2, 132},
    {"emoji single 70", ZH, 66, SMILE, 2, SB_SMS_UCS2, 70, 1, 140},
    {"emoji single 69", ZH, 66, SMILE ZH, 1, SB_SMS_UCS2, 69, 1, 138},
    {"emoji single 70b", ZH, 66, SMILE ZH ZH, 1, SB_SMS_UCS2, 70, 1, 140},
    {"emoji straddles", ZH, 66, SMILE ZH ZH ZH, 1, SB_SMS_UCS2, 71, 2, 132},
    {"emoji ends part", ZH, 65, SMILE ZH ZH ZH, 1, SB_SMS_UCS2, 70, 1, 140},
    {"emoji ends part 2", ZH, 65, SMILE ZH ZH ZH ZH, 1, SB_SMS_UCS2, 71, 2,
     134},
    {"one cyrillic", "a", 100, ZH, 1, SB_SMS_UCS2, 101, 2, 67},
    {"backtick", "a", 10, "`", 1, SB_SMS_UCS2, 11, 1, 11},
    {"greek", "\xce\xa9", 160, "", 0, SB_SMS_GSM7, 160, 1, 320},
    {"newlines", "\r\n", 80, "", 0, SB_SMS_GSM7, 160, 1, 160},
    {"tab is ucs2", "\t", 1, "", 0, SB_SMS_UCS2, 1, 1, 1},
    {"empty", "", 0, "", 0, SB_SMS_GSM7, 0, 1, 0},
};

static void test_split_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(split_cases) / sizeof(split_cases[0]); i++) {
        const struct split_case *c = &split_cases[i];
        struct text t = {.n = 0};
        struct sb_sms_info info;
        struct sb_sms_part parts[SB_SMS_MAX_PARTS];

        add(&t, c->piece1, c->times1);
        add(&t, c->piece2, c->times2);
        info = split_ok(&t);
        if (info.coding != c->coding || info.units != c->units ||
            info.parts != c->parts)
            print_error("%s: %s %zu units %zu parts, want %s %zu %zu\n",
                        c->what, sb_sms_coding_name(info.coding), info.units,
                        info.parts, sb_sms_coding_name(c->coding), c->units,
                        c->parts);
        assert_int_equal(info.coding, c->coding);
        assert_int_equal(info.units, c->units);
        assert_int_equal(info.parts, c->parts);
        assert_int_equal(sb_sms_split(t.s, t.n, 0, NULL, parts, NULL), 0);
        if (parts[0].len != c->first_len)
            print_error("%s: part 1 is %zu bytes, want %zu\n", c->what,
                        parts[0].len, c->first_len);
        assert_int_equal(parts[0].len, c->first_len);
    }
}

static void test_split_mixed(void **state)
{
    struct sb_sms_info info;
    struct sb_sms_part parts[2];
    const char *hello = "Hello \xd0\x96\xd0\xb0\xd0\xbd\xd0\xbd\xd0\xb0!";
    const char *price = "Price: 5" EURO " [net] {ok}";

    (void)state;
    assert_int_equal(sb_sms_split(hello, strlen(hello), 1, &info, parts, NULL),
                     0);
    assert_int_equal(info.coding, SB_SMS_UCS2);
    assert_int_equal(info.units, 12);
    assert_int_equal(info.parts, 1);
    assert_int_equal(parts[0].len, strlen(hello));

    assert_int_equal(sb_sms_split(price, strlen(price), 1, &info, parts, NULL),
                     0);
    assert_int_equal(info.coding, SB_SMS_GSM7);
    assert_int_equal(info.units, 20 + 5); /* 20 characters, 5 escaped */
    assert_int_equal(info.parts, 1);

    /* parts may be NULL, info may be NULL */
    assert_int_equal(sb_sms_split(price, strlen(price), 1, &info, NULL, NULL),
                     0);
    assert_int_equal(sb_sms_split(price, strlen(price), 1, NULL, NULL, NULL),
                     0);
    /* an empty text, NULL allowed with len 0 */
    assert_int_equal(sb_sms_split(NULL, 0, 1, &info, parts, NULL), 0);
    assert_int_equal(info.parts, 1);
    assert_int_equal(info.units, 0);
    assert_int_equal(info.coding, SB_SMS_GSM7);
    assert_int_equal(parts[0].off, 0);
    assert_int_equal(parts[0].len, 0);
}

static void test_split_max_parts(void **state)
{
    struct text t = {.n = 0};
    struct sb_sms_info info;
    struct sb_sms_part parts[SB_SMS_MAX_PARTS + 1];
    const char *why = NULL;

    (void)state;
    add(&t, "a", 161);
    memset(parts, 0, sizeof(parts));
    assert_int_equal(sb_sms_split(t.s, t.n, 1, &info, parts, &why), -1);
    assert_non_null(strstr(why, "too long"));
    assert_int_equal(info.parts, 2);
    assert_int_equal(parts[0].len, 153);
    assert_int_equal(parts[1].len, 0); /* not written past max_parts */
    assert_int_equal(sb_sms_split(t.s, t.n, 2, &info, parts, &why), 0);
    assert_int_equal(info.parts, 2);

    /* 255 parts is the protocol's limit, the default for 0 */
    {
        static char big[153 * 256 + 1];
        struct sb_sms_info bi;

        memset(big, 'b', sizeof(big) - 1);
        assert_int_equal(sb_sms_split(big, 153 * 255, 0, &bi, parts, &why), 0);
        assert_int_equal(bi.parts, 255);
        assert_int_equal(parts[254].off, 153 * 254);
        why = NULL;
        assert_int_equal(sb_sms_split(big, 153 * 255 + 1, 0, &bi, parts, &why),
                         -1);
        assert_non_null(why);
        assert_int_equal(bi.parts, 256);
        assert_int_equal(
            sb_sms_split(big, 153 * 255 + 1, 256, &bi, parts, &why), -1);
        assert_string_equal(why, "max_parts above 255");
    }
}

struct bad_case {
    const char *s;
    size_t n;
    const char *why;
};

static const struct bad_case bad_texts[] = {
    {"\xff", 1, "invalid UTF-8"},
    {"ab\xd0", 3, "invalid UTF-8"},           /* truncated */
    {"\xc0\xaf", 2, "invalid UTF-8"},         /* overlong '/' */
    {"\xed\xa0\x80", 3, "invalid UTF-8"},     /* a surrogate */
    {"\xf4\x90\x80\x80", 4, "invalid UTF-8"}, /* above U+10FFFF */
    {"a\0b", 3, "NUL character in text"},
};

static void test_split_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_texts) / sizeof(bad_texts[0]); i++) {
        const struct bad_case *c = &bad_texts[i];
        struct sb_sms_info info;
        const char *why = NULL;
        char *out = NULL;
        size_t outlen = 0;

        assert_int_equal(sb_sms_split(c->s, c->n, 0, &info, NULL, &why), -1);
        assert_string_equal(why, c->why);
        why = NULL;
        assert_int_equal(sb_sms_to_utf16be(c->s, c->n, &out, &outlen, &why),
                         -1);
        assert_string_equal(why, c->why);
        assert_null(out);
    }
    assert_int_equal(sb_sms_split(NULL, 1, 0, NULL, NULL, NULL), -1);
}

/* ---- UTF-16 out, inbound in --------------------------------------------- */

static void test_utf16be(void **state)
{
    const char *s = "\xd0\x96"
                    "a" SMILE EURO;
    static const unsigned char want[] = {0x04, 0x16, 0x00, 0x61, 0xd8,
                                         0x3d, 0xde, 0x00, 0x20, 0xac};
    char *out = NULL, *back = NULL;
    size_t n = 0, bn = 0;

    (void)state;
    assert_int_equal(sb_sms_to_utf16be(s, strlen(s), &out, &n, NULL), 0);
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    assert_int_equal(
        sb_sms_decode(SB_SMS_CODING_UCS2, "UTF-16BE", out, n, &back, &bn, NULL),
        0);
    assert_int_equal(bn, strlen(s));
    assert_string_equal(back, s);
    free(out);
    free(back);

    assert_int_equal(sb_sms_to_utf16be("", 0, &out, &n, NULL), 0);
    assert_int_equal(n, 0);
    free(out);
    assert_int_equal(sb_sms_to_utf16be(NULL, 0, &out, NULL, NULL), 0);
    free(out);
}

struct dec_case {
    int coding;
    const char *charset;
    const char *in;
    size_t n;
    const char *want; /* NULL: refused */
    const char *why;
};

static const struct dec_case dec_cases[] = {
    {2, NULL, "\x04\x1f\x04\x40", 4, "\xd0\x9f\xd1\x80", NULL},
    {2, "", "\x04\x1f\x04\x40", 4, "\xd0\x9f\xd1\x80", NULL},
    {2, "UTF-16BE", "\x00h\x00i", 4, "hi", NULL},
    {2, "utf-16be", "\x00h\x00i", 4, "hi", NULL},
    {2, "UCS-2", "\x00h\x00i", 4, "hi", NULL},
    {2, "UTF-16LE", "h\x00i\x00", 4, "hi", NULL},
    {2, "UTF-16", "\xfe\xff\x00h", 4, "h", NULL},
    {2, "UTF-16", "\xff\xfeh\x00", 4, "h", NULL},
    {2, "UTF-16", "\x00h", 2, "h", NULL},
    {2, "UTF-16BE", "\xfe\xff\x00h", 4, "h", NULL},
    /* only the first byte-order mark goes (fuzz_smstext found this) */
    {2, "UTF-16BE", "\xfe\xff\xfe\xff\x00h", 6, "\xef\xbb\xbfh", NULL},
    {2, "UTF-16", "\xff\xfe\xff\xfeh\x00", 6, "\xef\xbb\xbfh", NULL},
    {0, "UTF-8", "\xef\xbb\xbf\xef\xbb\xbfh", 7, "\xef\xbb\xbfh", NULL},
    {2, "UTF-16BE", "\xd8\x3d\xde\x00", 4, SMILE, NULL},
    {2, "UTF-16BE", "", 0, "", NULL},
    {2, "UTF-16BE", "\x00h\x00", 3, NULL, "odd number of bytes in UTF-16"},
    {2, "UTF-16BE", "\xd8\x3d", 2, NULL, "lone surrogate in UTF-16"},
    {2, "UTF-16BE", "\xd8\x3d\x00h", 4, NULL, "lone surrogate in UTF-16"},
    {2, "UTF-16BE", "\xde\x00\x00h", 4, NULL, "lone surrogate in UTF-16"},
    {2, "UTF-16BE", "\xd8\x3d\xd8\x3d", 4, NULL, "lone surrogate in UTF-16"},
    {2, "UTF-16BE", "\x00h\x00\x00", 4, NULL, "NUL character in text"},
    {2, "UTF-8", "\xd0\x96", 2, "\xd0\x96", NULL}, /* mo-recode */
    {0, NULL, "caf\xc3\xa9", 5, "caf\xc3\xa9", NULL},
    {-1, NULL, "plain", 5, "plain", NULL},
    {0, "UTF-8", "\xef\xbb\xbfhi", 5, "hi", NULL},
    {0, "utf8", "\xc3\x28", 2, NULL, "invalid UTF-8"},
    {0, "UTF-8", "a\0b", 3, NULL, "NUL character in text"},
    {0, "ISO-8859-1", "caf\xe9", 4, "caf\xc3\xa9", NULL},
    {0, "latin1", "\xa3\xff", 2, "\xc2\xa3\xc3\xbf", NULL},
    {0, "windows-1251", "\xcf\xf0\xe8\xe2\xe5\xf2", 6,
     "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", NULL},
    {0, "CP1251", "\xa8\xb8\x88\xb9", 4,
     "\xd0\x81\xd1\x91\xe2\x82\xac\xe2\x84\x96", NULL},
    {0, "windows-1251", "\x98", 1, NULL, "byte not defined in windows-1251"},
    {0, "ISO-8859-1", "a\0", 2, NULL, "NUL character in text"},
    {1, NULL, "\x01\x02", 2, NULL, "8-bit binary message"},
    {1, "UTF-8", "hi", 2, NULL, "8-bit binary message"},
    {3, NULL, "hi", 2, NULL, "unknown coding"},
    {0, "koi8-r", "hi", 2, NULL, "unsupported charset"},
    {0, "UTF-7", "hi", 2, NULL, "unsupported charset"},
};

static void test_decode_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(dec_cases) / sizeof(dec_cases[0]); i++) {
        const struct dec_case *c = &dec_cases[i];
        char *out = NULL;
        size_t n = 999;
        const char *why = NULL;
        int rc =
            sb_sms_decode(c->coding, c->charset, c->in, c->n, &out, &n, &why);

        if (c->want) {
            if (rc != 0)
                print_error("decode case %zu: refused (%s)\n", i, why);
            assert_int_equal(rc, 0);
            assert_int_equal(n, strlen(c->want));
            assert_string_equal(out, c->want);
            free(out);
        } else {
            if (rc == 0)
                print_error("decode case %zu: accepted\n", i);
            assert_int_equal(rc, -1);
            assert_null(out);
            assert_non_null(why);
            assert_string_equal(why, c->why);
        }
    }
}

/* Each single byte of an 8-bit charset against glibc's iconv. */
static void check_8bit_iconv(const char *charset, const char *iconv_name)
{
    iconv_t cd = iconv_open("UTF-8", iconv_name);
    int defined = 0;

    assert_true(cd != (iconv_t)-1);
    for (int b = 1; b < 256; b++) {
        char in[1] = {(char)b}, want[8], *ip = in, *op = want, *out = NULL;
        size_t il = 1, ol = sizeof(want), n = 0;
        int ok = iconv(cd, &ip, &il, &op, &ol) != (size_t)-1;
        int rc = sb_sms_decode(0, charset, in, 1, &out, &n, NULL);

        iconv(cd, NULL, NULL, NULL, NULL);
        if ((rc == 0) != ok)
            print_error("%s byte 0x%02x: rc %d, iconv %s\n", charset, b, rc,
                        ok ? "ok" : "refuses");
        assert_int_equal(rc == 0, ok);
        if (ok) {
            size_t wn = sizeof(want) - ol;

            assert_int_equal(n, wn);
            assert_memory_equal(out, want, wn);
            defined++;
        }
        free(out);
    }
    iconv_close(cd);
    assert_true(defined >= 254);
}

static void test_decode_vs_iconv(void **state)
{
    (void)state;
    check_8bit_iconv("windows-1251", "CP1251");
    check_8bit_iconv("ISO-8859-1", "ISO-8859-1");
}

/* UTF-8 -> parts -> UTF-16BE per part -> decoded -> joined = original. */
static void test_round_trip(void **state)
{
    struct text t = {.n = 0};
    struct sb_sms_info info;
    struct sb_sms_part parts[SB_SMS_MAX_PARTS];
    char joined[4096];
    size_t jn = 0;

    (void)state;
    add(&t,
        "Order #42 \xd0\xb4\xd0\xbe\xd1\x81\xd1\x82\xd0\xb0\xd0\xb2"
        "\xd0\xbb\xd0\xb5\xd0\xbd " SMILE " ",
        5);
    add(&t, "\xf0\x9d\x84\x9e caf\xc3\xa9 " EURO " \xe4\xb8\xad ", 7);
    assert_int_equal(sb_sms_split(t.s, t.n, 0, &info, parts, NULL), 0);
    assert_int_equal(info.coding, SB_SMS_UCS2);
    assert_true(info.parts > 2);
    for (size_t i = 0; i < info.parts; i++) {
        char *u16 = NULL, *back = NULL;
        size_t n = 0, bn = 0;

        assert_int_equal(
            sb_sms_to_utf16be(t.s + parts[i].off, parts[i].len, &u16, &n, NULL),
            0);
        /* a part's UTF-16 is exactly its units */
        assert_int_equal(n, 2 * parts[i].units);
        assert_true(n <= 2 * SB_SMS_UCS2_PART);
        assert_int_equal(sb_sms_decode(2, NULL, u16, n, &back, &bn, NULL), 0);
        assert_int_equal(bn, parts[i].len);
        memcpy(joined + jn, back, bn);
        jn += bn;
        free(u16);
        free(back);
    }
    assert_int_equal(jn, t.n);
    assert_memory_equal(joined, t.s, t.n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gsm7_alphabet),
        cmocka_unit_test(test_split_table),
        cmocka_unit_test(test_split_mixed),
        cmocka_unit_test(test_split_max_parts),
        cmocka_unit_test(test_split_refusals),
        cmocka_unit_test(test_utf16be),
        cmocka_unit_test(test_decode_table),
        cmocka_unit_test(test_decode_vs_iconv),
        cmocka_unit_test(test_round_trip),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
