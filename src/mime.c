/* mime.c - one e-mail message, parsed with GMime into what the contact log
 * needs.
 *
 * sb_mime_parse() runs in three steps. A pre-scan walks the raw bytes the
 * way GMime 3.2.13's parser will (same header-block and boundary rules,
 * GMime's own Content-Type parser for the boundary), without building
 * anything, and refuses early what the limits forbid: an oversized header
 * field, nesting deeper than max_depth, more than max_parts parts. It is
 * linear and stops at the first excess, so a 10,000-deep nesting bomb costs
 * a few hundred lines of scanning. It also refuses two inputs that would
 * make GMime itself slow: a header block over 16 times max_header (GMime
 * parses every address of every To and Cc), and a header field with more
 * than 50 unterminated encoded words (GMime rescans the rest of the field
 * for each one). GMime then parses the message; the walk over its tree
 * checks the same limits again (the tree is the authority: the pre-scan
 * only makes refusals cheap) and collects text, HTML and attachments. The
 * walk recurses only after checking the depth, so it never goes deeper
 * than max_depth (itself capped at SB_MIME_DEPTH_CAP).
 *
 * Charsets: bodies are decoded here, not with g_mime_text_part_get_text()
 * (which keeps a UTF-16 byte-order mark, stops at NUL, ignores the fallback
 * list for bodies and decodes UTF-7). Undeclared 8-bit text (and text
 * declared as UTF-7, US-ASCII or an unknown charset) goes through the
 * fallback list: valid UTF-8 wins, otherwise every single-byte candidate
 * that converts cleanly is scored on a sample (Russian letter frequencies,
 * case changes inside a word, box-drawing characters, mixed scripts) and
 * the best wins, earlier in the list on a tie. That is what tells KOI8-R
 * from windows-1251, which both convert any byte.
 *
 * Headers: raw values are unfolded; undeclared 8-bit bytes are converted
 * as above; runs of adjacent RFC 2047 words that GMime 3.2.13 would
 * mangle (a base64 word with '=' padding followed by another word, upstream
 * bug #133) or that are declared UTF-7 are decoded here and replaced by one
 * UTF-8 word; then GMime's decoders (text, address list, parameters) do
 * the rest. Every header-derived string is finally made valid UTF-8 with
 * control characters (CR and LF included) turned into spaces.
 *
 * Thread safety: everything GMime builds is per call; the only global
 * state is GMime's own (initialised once by sb_mime_init()). No logging:
 * the caller decides what a refusal means, and bodies are never logged.
 */
#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>

#include "mime.h"
#include "util.h"

/* GMime stops nesting at 1024 levels of its own count, which grows at
 * least as fast as ours; deeper limits than this make no sense. */
#define SB_MIME_DEPTH_CAP 500
/* Addresses kept per field (To, Cc). */
#define SB_MIME_MAX_ADDRS 1000
/* Distinct charsets reported. */
#define SB_MIME_MAX_CHARSETS 16
/* Bytes of undeclared text scored per candidate charset. */
#define SB_MIME_SAMPLE 16384
/* The longest charset name we look at. */
#define SB_MIME_CS_LEN 40
/* A header block may hold this many max_header of fields in all: GMime
 * parses every address of every To and Cc at once, so megabytes of
 * headers cost seconds. */
#define SB_MIME_BLOCK_FIELDS 16
/* Encoded words left unterminated in one header field: GMime 3.2.13 scans
 * to the end of the field for each one (quadratic), so more is refused. */
#define SB_MIME_MAX_BROKEN_WORDS 50

static const char *const default_fallbacks[] = {"utf-8", "windows-1251",
                                                "koi8-r", NULL};

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int initialised;

void sb_mime_init(void)
{
    pthread_mutex_lock(&init_lock);
    if (!initialised) {
        g_mime_init();
        initialised = 1;
    }
    pthread_mutex_unlock(&init_lock);
}

void sb_mime_shutdown(void)
{
    pthread_mutex_lock(&init_lock);
    if (initialised) {
        g_mime_shutdown();
        initialised = 0;
    }
    pthread_mutex_unlock(&init_lock);
}

void sb_mime_limits_default(struct sb_mime_limits *lim)
{
    memset(lim, 0, sizeof(*lim));
    lim->max_size = 25u << 20;
    lim->max_header = 64u << 10;
    lim->max_depth = 20;
    lim->max_parts = 500;
    lim->max_attachment = 10u << 20;
    lim->max_text = 1u << 20;
    lim->fallback_charsets = NULL;
}

/* ---- per-call state ---------------------------------------------------- */

struct alt_state {
    int plain; /* a text/plain alternative was taken */
    int html;  /* a text/html alternative was taken */
};

struct mctx {
    struct sb_mime_limits lim;
    const char *const *fallbacks;
    GMimeParserOptions *opts;
    struct sb_mime_msg *m;
    char *err;
    size_t errlen;
    int refused;
    int parts;

    struct sb_buf text; /* plain text parts, joined */
    struct sb_buf html; /* HTML parts, joined, full length */
    size_t natts_alloc;
    char *charsets[SB_MIME_MAX_CHARSETS + 1];
    int ncharsets;

    int dsn_seen;      /* a delivery-status part was parsed */
    char *returned_id; /* Message-ID of a returned message */
};

static int refuse(struct mctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int refuse(struct mctx *c, const char *fmt, ...)
{
    va_list ap;

    if (!c->refused && c->err && c->errlen) {
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    c->refused = 1;
    return -1;
}

/* ---- small string helpers ---------------------------------------------- */

static int is_lwsp(int ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static int ci_prefix(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);

    return n >= k && strncasecmp(s, prefix, k) == 0;
}

static int ci_suffix(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);

    return n >= k && strncasecmp(s + n - k, suffix, k) == 0;
}

/* Case-insensitive (ASCII) search of needle in s[0..n). */
static const char *ci_find(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);

    for (size_t i = 0; k && i + k <= n; i++)
        if (strncasecmp(s + i, needle, k) == 0)
            return s + i;
    return NULL;
}

static void trim(const char **s, size_t *n)
{
    while (*n && is_lwsp((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_lwsp((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

static void buf_put_cp(struct sb_buf *b, uint32_t cp)
{
    char u[4];
    size_t n;

    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    sb_buf_append(b, u, n);
}

#define REPLACEMENT 0xfffd

/* Append n bytes as UTF-8, each invalid byte replaced by U+FFFD. */
static void utf8_lossy(struct sb_buf *b, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t k = sb_utf8_seq(s + i, n - i, NULL);
        if (k == 0) {
            buf_put_cp(b, REPLACEMENT);
            i++;
        } else {
            sb_buf_append(b, s + i, k);
            i += k;
        }
    }
}

/* 1: valid UTF-8; 2: mostly UTF-8 (multi-byte sequences outnumber stray
 * bytes eight to one); 0: not UTF-8. */
static int utf8_class(const char *s, size_t n)
{
    size_t i = 0, good = 0, bad = 0;

    while (i < n) {
        size_t k = sb_utf8_seq(s + i, n - i, NULL);
        if (k == 0) {
            bad++;
            i++;
        } else {
            good += k > 1;
            i += k;
        }
    }
    if (bad == 0)
        return 1;
    return good >= 8 * bad ? 2 : 0;
}

static int has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 1;
    return 0;
}

/* A header-derived string: valid UTF-8, no control characters (each C0
 * control, DEL, U+0085, U+2028 and U+2029 becomes a space), runs of spaces
 * collapsed, trimmed. Returns a new string. */
static char *clean_header(const char *s)
{
    struct sb_buf b;
    size_t n = s ? strlen(s) : 0, i = 0;
    int space = 0;

    sb_buf_init(&b, 0);
    sb_buf_append(&b, "", 0);
    while (i < n) {
        uint32_t cp;
        size_t k = sb_utf8_seq(s + i, n - i, &cp);

        if (k == 0) {
            cp = REPLACEMENT;
            k = 1;
        }
        if (cp < 0x20 || cp == 0x7f || cp == 0x85 || cp == 0x2028 ||
            cp == 0x2029 || cp == ' ') {
            space = b.len > 0;
        } else {
            if (space)
                sb_buf_append(&b, " ", 1);
            space = 0;
            if (cp == REPLACEMENT && k == 1)
                buf_put_cp(&b, cp);
            else
                sb_buf_append(&b, s + i, k);
        }
        i += k;
    }
    return sb_buf_steal(&b, NULL);
}

/* Body text: drop NUL and C0 controls other than tab and newline, CR LF
 * and lone CR become LF, a leading byte-order mark goes; the input is
 * valid UTF-8 already. Appends to out. */
static void clean_text(struct sb_buf *out, const char *s, size_t n)
{
    size_t i = 0;

    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    while (i < n) {
        size_t j = i;

        while (j < n && ((unsigned char)s[j] >= 0x20 || s[j] == '\t') &&
               s[j] != 0x7f)
            j++;
        sb_buf_append(out, s + i, j - i);
        if (j >= n)
            break;
        if (s[j] == '\n') {
            sb_buf_append(out, "\n", 1);
        } else if (s[j] == '\r') {
            sb_buf_append(out, "\n", 1);
            if (j + 1 < n && s[j + 1] == '\n')
                j++;
        }
        i = j + 1;
    }
}

/* Cut b to at most max bytes at a character boundary. Returns 1 if cut. */
static int cut_utf8(struct sb_buf *b, size_t max)
{
    size_t n;

    if (b->len <= max)
        return 0;
    n = max;
    while (n > 0 && ((unsigned char)b->data[n] & 0xc0) == 0x80)
        n--;
    b->len = n;
    b->data[n] = '\0';
    return 1;
}

/* ---- charsets ---------------------------------------------------------- */

/* Lower-cased, '_' as '-', cut at an RFC 2231 language ('*'), common
 * aliases folded: "CP1251" -> "windows-1251". out has SB_MIME_CS_LEN + 1
 * bytes; "" when nothing usable. */
static void cs_norm(const char *in, size_t n, char *out)
{
    static const char *const alias[][2] = {
        {"cp1251", "windows-1251"},
        {"win-1251", "windows-1251"},
        {"x-cp1251", "windows-1251"},
        {"windows1251", "windows-1251"},
        {"win1251", "windows-1251"},
        {"cp-1251", "windows-1251"},
        {"koi8r", "koi8-r"},
        {"koi8", "koi8-r"},
        {"utf8", "utf-8"},
        {"unicode-1-1-utf-8", "utf-8"},
        {"latin1", "iso-8859-1"},
        {"l1", "iso-8859-1"},
        {"iso8859-1", "iso-8859-1"},
        {"iso-8859-1:1987", "iso-8859-1"},
        {"iso8859-5", "iso-8859-5"},
        {"cyrillic", "iso-8859-5"},
        {"ascii", "us-ascii"},
        {"ansi-x3.4-1968", "us-ascii"},
        {"us", "us-ascii"},
        {"iso646-us", "us-ascii"},
        {"utf7", "utf-7"},
        {"unicode-1-1-utf-7", "utf-7"},
        {"x-unicode-1-1-utf-7", "utf-7"},
    };
    size_t k = 0;

    while (n && (is_lwsp((unsigned char)*in) || *in == '"')) {
        in++;
        n--;
    }
    for (size_t i = 0; i < n && k < SB_MIME_CS_LEN; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '_')
            ch = '-';
        if (!isalnum(ch) && ch != '-' && ch != '.' && ch != ':')
            break;
        out[k++] = (char)tolower(ch);
    }
    out[k] = '\0';
    for (size_t i = 0; i < SB_ARRAY_LEN(alias); i++) {
        if (strcmp(out, alias[i][0]) == 0) {
            snprintf(out, SB_MIME_CS_LEN + 1, "%s", alias[i][1]);
            break;
        }
    }
}

static int cs_is_utf8(const char *cs)
{
    return strcmp(cs, "utf-8") == 0;
}

/* UTF-7 can smuggle markup ("+ADw-script+AD4-"); it is never decoded. */
static int cs_is_utf7(const char *cs)
{
    return strstr(cs, "utf-7") != NULL;
}

/* Whether iconv can decode cs (normalised); UTF-7 never. */
static int cs_known(const char *cs)
{
    iconv_t cd;

    if (cs_is_utf8(cs))
        return 1;
    if (!*cs || cs_is_utf7(cs))
        return 0;
    cd = iconv_open("UTF-8", cs);
    if (cd == (iconv_t)-1)
        return 0;
    iconv_close(cd);
    return 1;
}

/* Record a charset met (normalised name), once. */
static void cs_note(struct mctx *c, const char *cs)
{
    if (!cs || !*cs || c->ncharsets >= SB_MIME_MAX_CHARSETS)
        return;
    for (int i = 0; i < c->ncharsets; i++)
        if (strcmp(c->charsets[i], cs) == 0)
            return;
    c->charsets[c->ncharsets++] = sb_strdup(cs);
}

/* Convert n bytes in charset cs (normalised) to UTF-8, appended to out.
 * strict: fail on the first invalid sequence (an incomplete one at the
 * very end is tolerated: samples are cut anywhere). Returns 0; -1 when the
 * charset is unknown or UTF-7 (out untouched); -2 when strict and the
 * bytes are invalid in it (out may hold part of the text). */
static int cs_convert(const char *cs, const char *src, size_t n, int strict,
                      struct sb_buf *out)
{
    char obuf[4096];
    const char *name = cs;
    iconv_t cd;
    char *in = (char *)src;
    size_t inleft = n;
    int rc = 0;

    if (!*cs || cs_is_utf7(cs))
        return -1;
    if (cs_is_utf8(cs)) {
        if (strict && !sb_utf8_valid(src, n))
            return -2;
        utf8_lossy(out, src, n);
        return 0;
    }
    if (strcmp(cs, "utf-16") == 0 && n >= 2 &&
        !((unsigned char)src[0] == 0xff && (unsigned char)src[1] == 0xfe) &&
        !((unsigned char)src[0] == 0xfe && (unsigned char)src[1] == 0xff)) {
        /* No byte-order mark: guess from where the zero bytes are. */
        size_t even = 0, odd = 0;
        for (size_t i = 0; i + 1 < n && i < SB_MIME_SAMPLE; i += 2) {
            even += src[i] == 0;
            odd += src[i + 1] == 0;
        }
        name = odd > even ? "utf-16le" : "utf-16be";
    }
    cd = iconv_open("UTF-8", name);
    if (cd == (iconv_t)-1)
        return -1;
    while (inleft > 0) {
        char *o = obuf;
        size_t oleft = sizeof(obuf);
        size_t r = iconv(cd, &in, &inleft, &o, &oleft);

        sb_buf_append(out, obuf, sizeof(obuf) - oleft);
        if (r != (size_t)-1)
            break;
        if (errno == E2BIG)
            continue;
        if (errno == EINVAL) { /* incomplete sequence at the end */
            if (!strict)
                buf_put_cp(out, REPLACEMENT);
            break;
        }
        if (strict) {
            rc = -2;
            break;
        }
        buf_put_cp(out, REPLACEMENT); /* EILSEQ: skip one byte */
        in++;
        inleft--;
    }
    if (rc == 0) { /* flush a stateful decoder */
        char *o = obuf;
        size_t oleft = sizeof(obuf);
        iconv(cd, NULL, NULL, &o, &oleft);
        sb_buf_append(out, obuf, sizeof(obuf) - oleft);
    }
    iconv_close(cd);
    return rc;
}

/* Russian letter weights: 10 * ln(frequency in %), for a..ya. */
static const signed char ru_weight[32] = {
    21, 5,  15, 5,  11,  21, -1, 5, 20, 2,   13,  15, 12, 19,  24, 10,
    16, 17, 18, 10, -13, 0,  -7, 4, -3, -10, -32, 6,  6,  -11, -4, 7,
};

enum { CL_OTHER, CL_CYR_LOW, CL_CYR_UP, CL_LATIN };

/* How plausible a decoded sample is as text: Russian letters by their
 * frequency, a capital after a small letter inside a word, scripts mixed
 * inside a word, box drawing and C1 controls count against. */
static long text_score(const char *s, size_t n)
{
    long score = 0;
    int prev = CL_OTHER;
    size_t i = 0;

    while (i < n) {
        uint32_t cp;
        size_t k = sb_utf8_seq(s + i, n - i, &cp);
        int cl = CL_OTHER;

        if (k == 0) {
            cp = REPLACEMENT;
            k = 1;
        }
        i += k;
        if (cp >= 0x430 && cp <= 0x44f) {
            score += ru_weight[cp - 0x430];
            score -= prev == CL_LATIN ? 20 : 0;
            cl = CL_CYR_LOW;
        } else if (cp >= 0x410 && cp <= 0x42f) {
            score += ru_weight[cp - 0x410];
            score -= prev == CL_CYR_LOW ? 40 : prev == CL_LATIN ? 20 : 0;
            cl = CL_CYR_UP;
        } else if (cp == 0x451 || cp == 0x401) {
            score -= 10;
            cl = cp == 0x451 ? CL_CYR_LOW : CL_CYR_UP;
        } else if (cp >= 0x400 && cp <= 0x4ff) {
            score -= 5;
            cl = CL_CYR_LOW;
        } else if ((cp < 0x80 && isalpha((int)cp)) ||
                   (cp >= 0xc0 && cp <= 0x24f && cp != 0xd7 && cp != 0xf7)) {
            score -= (prev == CL_CYR_LOW || prev == CL_CYR_UP) ? 20 : 0;
            cl = CL_LATIN;
        } else if ((cp >= 0x2500 && cp <= 0x25ff) || cp == 0x2320 ||
                   cp == 0x2321 || cp == 0x2219 || cp == 0x221a ||
                   cp == 0x2248 || cp == 0x2264 || cp == 0x2265) {
            score -= 30;
        } else if ((cp >= 0x80 && cp <= 0x9f) || cp == REPLACEMENT) {
            score -= 50;
        }
        prev = cl;
    }
    return score;
}

/* The charset to decode undeclared 8-bit bytes with (see the top of the
 * file), normalised into out (SB_MIME_CS_LEN + 1 bytes): a name from the
 * fallback list, or "utf-8" (lossy) when nothing else is usable. */
static void cs_pick(struct mctx *c, const char *s, size_t n, char *out)
{
    char cs[SB_MIME_CS_LEN + 1], lossy[SB_MIME_CS_LEN + 1] = "";
    size_t sn = n < SB_MIME_SAMPLE ? n : SB_MIME_SAMPLE;
    int u8 = utf8_class(s, n), have = 0;
    long best = 0;

    snprintf(out, SB_MIME_CS_LEN + 1, "utf-8");
    if (u8 == 1)
        return;
    for (int i = 0; c->fallbacks[i]; i++) {
        struct sb_buf b;
        int rc;

        cs_norm(c->fallbacks[i], strlen(c->fallbacks[i]), cs);
        if (cs_is_utf8(cs)) {
            if (u8 == 2)
                return;
            continue;
        }
        sb_buf_init(&b, 0);
        rc = cs_convert(cs, s, sn, 1, &b);
        if (rc == 0) {
            long sc = text_score(b.data ? b.data : "", b.len);
            if (!have || sc > best) {
                snprintf(out, SB_MIME_CS_LEN + 1, "%s", cs);
                best = sc;
                have = 1;
            }
        } else if (rc == -2 && !lossy[0]) {
            snprintf(lossy, sizeof(lossy), "%s", cs);
        }
        sb_buf_free(&b);
    }
    if (!have && lossy[0])
        snprintf(out, SB_MIME_CS_LEN + 1, "%s", lossy);
}

/* Decode bytes declared as charset decl (NULL or "" when undeclared) to
 * UTF-8 appended to out; records the charset used. */
static void decode_bytes(struct mctx *c, const char *decl, const char *s,
                         size_t n, struct sb_buf *out)
{
    char cs[SB_MIME_CS_LEN + 1] = "";
    char used[SB_MIME_CS_LEN + 1];

    if (decl)
        cs_norm(decl, strlen(decl), cs);
    if (*cs && strcmp(cs, "us-ascii") != 0) {
        if (cs_is_utf8(cs)) {
            if (utf8_class(s, n) != 0) {
                cs_note(c, "utf-8");
                utf8_lossy(out, s, n);
                return;
            }
        } else if (cs_convert(cs, s, n, 0, out) == 0) {
            cs_note(c, cs);
            return;
        } /* unknown or UTF-7: as if undeclared */
    }
    if (!has_8bit(s, n)) {
        /* ASCII, or UTF-16 without a declaration: nothing to guess */
        cs_note(c, "utf-8");
        utf8_lossy(out, s, n);
        return;
    }
    cs_pick(c, s, n, used);
    cs_note(c, used);
    if (cs_convert(used, s, n, 0, out) < 0)
        utf8_lossy(out, s, n);
}

/* ---- header values ----------------------------------------------------- */

static int b64_val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

static int hex_val(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Base64 of one encoded word, to its padding. */
static void b64_decode(const char *s, size_t n, struct sb_buf *out)
{
    uint32_t acc = 0;
    int bits = 0;

    for (size_t i = 0; i < n && s[i] != '='; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            char ch = (char)((acc >> (bits - 8)) & 0xff);
            bits -= 8;
            sb_buf_append(out, &ch, 1);
        }
    }
}

static void q_decode(const char *s, size_t n, struct sb_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '_') {
            ch = ' ';
        } else if (ch == '=' && i + 2 < n && hex_val(s[i + 1]) >= 0 &&
                   hex_val(s[i + 2]) >= 0) {
            ch = (char)(hex_val(s[i + 1]) * 16 + hex_val(s[i + 2]));
            i += 2;
        }
        sb_buf_append(out, &ch, 1);
    }
}

static void b64_encode(const unsigned char *s, size_t n, struct sb_buf *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        char q[4];
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        q[0] = tab[(v >> 18) & 63];
        q[1] = tab[(v >> 12) & 63];
        q[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? tab[v & 63] : '=';
        sb_buf_append(out, q, 4);
    }
}

/* One RFC 2047 encoded word: "=?charset?X?text?=". */
struct eword {
    size_t start, end; /* in the value */
    char cs[SB_MIME_CS_LEN + 1];
    char enc; /* 'B' or 'Q' */
    size_t pstart, plen;
};

static int eword_at(const char *s, size_t n, size_t i, struct eword *w)
{
    size_t j = i + 2, cs_start;

    if (i + 2 > n || s[i] != '=' || s[i + 1] != '?')
        return 0;
    cs_start = j;
    while (j < n && s[j] != '?' && !is_lwsp((unsigned char)s[j]))
        j++;
    if (j + 3 > n || s[j] != '?' || j == cs_start)
        return 0;
    w->enc = (char)toupper((unsigned char)s[j + 1]);
    if ((w->enc != 'B' && w->enc != 'Q') || s[j + 2] != '?')
        return 0;
    cs_norm(s + cs_start, j - cs_start, w->cs);
    w->pstart = j + 3;
    j = w->pstart;
    /* the text holds neither '?' nor white space: every scan stops at the
     * next '?', so looking at each "=?" in turn stays linear */
    while (j < n && s[j] != '?' && !is_lwsp((unsigned char)s[j]))
        j++;
    if (j + 1 >= n || s[j] != '?' || s[j + 1] != '=')
        return 0;
    w->plen = j - w->pstart;
    w->start = i;
    w->end = j + 2;
    return 1;
}

/* Decode a run of adjacent encoded words to UTF-8 (bytes of neighbouring
 * words in the same charset are joined before conversion: a character
 * may be split between words). */
static void run_decode(struct mctx *c, const char *s, const struct eword *w,
                       size_t nw, struct sb_buf *out)
{
    size_t i = 0;

    while (i < nw) {
        struct sb_buf bytes;
        size_t j = i;

        sb_buf_init(&bytes, 0);
        while (j < nw && strcmp(w[j].cs, w[i].cs) == 0) {
            if (w[j].enc == 'B')
                b64_decode(s + w[j].pstart, w[j].plen, &bytes);
            else
                q_decode(s + w[j].pstart, w[j].plen, &bytes);
            j++;
        }
        decode_bytes(c, w[i].cs, bytes.data ? bytes.data : "", bytes.len, out);
        sb_buf_free(&bytes);
        i = j;
    }
}

/* Rewrite the runs of encoded words GMime 3.2.13 would get wrong: a
 * base64 word with '=' padding followed by another word of the run, or a
 * word in UTF-7. Other runs are left to GMime. Returns a new string. */
static char *ewords_fix(struct mctx *c, const char *s)
{
    size_t n = strlen(s), i = 0, copied = 0, alloc = 8;
    struct eword *run = sb_malloc(alloc * sizeof(*run));
    struct sb_buf out;

    sb_buf_init(&out, 0);
    sb_buf_append(&out, "", 0);
    while (i < n) {
        size_t nw, k;
        int fix = 0;

        if (!eword_at(s, n, i, &run[0])) {
            i++;
            continue;
        }
        nw = 1;
        k = run[0].end;
        for (;;) { /* extend the run over linear white space */
            size_t j = k;
            while (j < n && is_lwsp((unsigned char)s[j]))
                j++;
            if (nw == alloc) {
                alloc *= 2;
                run = sb_realloc(run, alloc * sizeof(*run));
            }
            if (j == k || !eword_at(s, n, j, &run[nw]))
                break;
            k = run[nw].end;
            nw++;
        }
        for (size_t w = 0; w < nw; w++) {
            if (cs_is_utf7(run[w].cs))
                fix = 1;
            if (w + 1 < nw && run[w].enc == 'B' &&
                memchr(s + run[w].pstart, '=', run[w].plen))
                fix = 1;
        }
        if (fix) {
            struct sb_buf txt;
            sb_buf_init(&txt, 0);
            run_decode(c, s, run, nw, &txt);
            sb_buf_append(&out, s + copied, run[0].start - copied);
            if (txt.len) {
                sb_buf_appends(&out, "=?UTF-8?B?");
                b64_encode((const unsigned char *)txt.data, txt.len, &out);
                sb_buf_appends(&out, "?=");
            }
            sb_buf_free(&txt);
            copied = k;
        } else {
            for (size_t w = 0; w < nw; w++)
                if (strcmp(run[w].cs, "us-ascii") != 0 && cs_known(run[w].cs))
                    cs_note(c, run[w].cs);
        }
        i = k;
    }
    free(run);
    sb_buf_append(&out, s + copied, n - copied);
    return sb_buf_steal(&out, NULL);
}

/* A raw header value made ready for GMime's decoders: unfolded, 8-bit
 * bytes decoded to UTF-8 by the fallback rules, troublesome encoded words
 * rewritten. Returns a new string. */
static char *hdr_prepare(struct mctx *c, const char *raw)
{
    struct sb_buf u, conv;
    const char *p;
    size_t n;
    char *res;

    sb_buf_init(&u, 0);
    sb_buf_append(&u, "", 0);
    for (const char *q = raw ? raw : ""; *q; q++)
        if (*q != '\r' && *q != '\n')
            sb_buf_append(&u, q, 1);
    p = u.data;
    n = u.len;
    trim(&p, &n);
    sb_buf_init(&conv, 0);
    sb_buf_append(&conv, "", 0);
    if (has_8bit(p, n)) {
        if (sb_utf8_valid(p, n)) {
            cs_note(c, "utf-8");
            sb_buf_append(&conv, p, n);
        } else {
            char cs[SB_MIME_CS_LEN + 1];
            cs_pick(c, p, n, cs);
            cs_note(c, cs);
            if (cs_convert(cs, p, n, 0, &conv) < 0)
                utf8_lossy(&conv, p, n);
        }
    } else {
        sb_buf_append(&conv, p, n);
    }
    sb_buf_free(&u);
    res = ewords_fix(c, conv.data);
    sb_buf_free(&conv);
    return res;
}

static GMimeHeader *hdr_find(GMimeObject *obj, const char *name)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(obj);

    return hl ? g_mime_header_list_get_header(hl, name) : NULL;
}

static const char *hdr_raw(GMimeObject *obj, const char *name)
{
    GMimeHeader *h = hdr_find(obj, name);

    return h ? g_mime_header_get_raw_value(h) : NULL;
}

/* Unstructured text (Subject): decoded, cleaned; "" when absent. */
static char *hdr_text(struct mctx *c, const char *raw)
{
    char *prep, *dec, *res;

    if (!raw)
        return sb_strdup("");
    prep = hdr_prepare(c, raw);
    dec = g_mime_utils_header_decode_text(c->opts, prep);
    res = clean_header(dec ? dec : prep);
    g_free(dec);
    free(prep);
    return res;
}

static void addr_set(struct sb_mime_addr *a, InternetAddress *ia)
{
    const char *name = internet_address_get_name(ia);
    const char *addr = "";

    if (INTERNET_ADDRESS_IS_MAILBOX(ia))
        addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
    a->name = clean_header(name ? name : "");
    a->addr = clean_header(addr ? addr : "");
}

/* Flatten an address list (group members included) into *arr. */
static void addr_collect(InternetAddressList *l, struct sb_mime_addr **arr,
                         size_t *n, size_t *alloc, int depth)
{
    int len = l ? internet_address_list_length(l) : 0;

    for (int i = 0; i < len && *n < SB_MIME_MAX_ADDRS; i++) {
        InternetAddress *ia = internet_address_list_get_address(l, i);
        if (INTERNET_ADDRESS_IS_GROUP(ia)) {
            if (depth < 2)
                addr_collect(internet_address_group_get_members(
                                 INTERNET_ADDRESS_GROUP(ia)),
                             arr, n, alloc, depth + 1);
            continue;
        }
        if (*n == *alloc) {
            *alloc = *alloc ? *alloc * 2 : 4;
            *arr = sb_realloc(*arr, *alloc * sizeof(**arr));
        }
        addr_set(&(*arr)[(*n)++], ia);
    }
}

/* Every header called name, parsed as address lists. */
static void hdr_addrs(struct mctx *c, GMimeObject *obj, const char *name,
                      struct sb_mime_addr **arr, size_t *n)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
    int count = hl ? g_mime_header_list_get_count(hl) : 0;
    size_t alloc = 0;

    *arr = NULL;
    *n = 0;
    for (int i = 0; i < count; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        InternetAddressList *l;
        char *prep;

        if (g_ascii_strcasecmp(g_mime_header_get_name(h), name) != 0)
            continue;
        if (*n >= SB_MIME_MAX_ADDRS)
            break;
        prep = hdr_prepare(c, g_mime_header_get_raw_value(h));
        l = internet_address_list_parse(c->opts, prep);
        free(prep);
        addr_collect(l, arr, n, &alloc, 0);
        if (l)
            g_object_unref(l);
    }
}

/* The first mailbox of the first header called name. */
static void hdr_addr1(struct mctx *c, GMimeObject *obj, const char *name,
                      struct sb_mime_addr *a)
{
    struct sb_mime_addr *arr = NULL;
    size_t n = 0;
    const char *raw = hdr_raw(obj, name);
    InternetAddressList *l = NULL;
    size_t alloc = 0;

    if (raw) {
        char *prep = hdr_prepare(c, raw);
        l = internet_address_list_parse(c->opts, prep);
        free(prep);
        addr_collect(l, &arr, &n, &alloc, 0);
        if (l)
            g_object_unref(l);
    }
    if (n > 0) {
        *a = arr[0];
        for (size_t i = 1; i < n; i++) {
            free(arr[i].name);
            free(arr[i].addr);
        }
    } else {
        a->name = sb_strdup("");
        a->addr = sb_strdup("");
    }
    free(arr);
}

/* A cleaned msg-id, NULL when empty. */
static char *id_clean(const char *id)
{
    char *s;

    if (!id)
        return NULL;
    s = clean_header(id);
    if (*s == '\0') {
        free(s);
        return NULL;
    }
    return s;
}

static char **refs_list(struct mctx *c, const char *raw, int max)
{
    GMimeReferences *r = raw ? g_mime_references_parse(c->opts, raw) : NULL;
    int len = r ? g_mime_references_length(r) : 0;
    char **v;
    int k = 0;

    if (max > 0 && len > max)
        len = max;
    v = sb_calloc((size_t)len + 1, sizeof(*v));
    for (int i = 0; i < len; i++) {
        char *id = id_clean(g_mime_references_get_message_id(r, i));
        if (id)
            v[k++] = id;
    }
    if (r)
        g_mime_references_free(r);
    return v;
}

/* Return-Path: the addr-spec inside <>, "" for "<>", NULL when absent. */
static char *return_path(GMimeObject *obj)
{
    const char *raw = hdr_raw(obj, "Return-Path");
    const char *p, *lt, *gt;
    size_t n;
    char *tmp, *res;

    if (!raw)
        return NULL;
    p = raw;
    n = strlen(raw);
    trim(&p, &n);
    lt = memchr(p, '<', n);
    if (lt) {
        gt = memchr(lt, '>', n - (size_t)(lt - p));
        n = gt ? (size_t)(gt - lt - 1) : n - (size_t)(lt - p) - 1;
        p = lt + 1;
    }
    tmp = sb_strndup(p, n);
    res = clean_header(tmp);
    free(tmp);
    return res;
}

/* ---- pre-scan: GMime's parse without the objects ----------------------- */

enum {
    F_NONE,
    F_EOS,
    F_IMM,
    F_IMM_END,
    F_PARENT,
    F_PARENT_END,
};

struct scan {
    const char *buf, *end, *pos;
    struct mctx *c;
    char **bounds; /* "--boundary--" */
    size_t *blen;  /* strlen("--boundary") */
    int nb;
};

/* The line at p: its length without '\n' and where the next one starts. */
static size_t line_at(const struct scan *s, const char *p, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(s->end - p));

    if (!nl) {
        *next = s->end;
        return (size_t)(s->end - p);
    }
    *next = nl + 1;
    return (size_t)(nl - p);
}

static int is_boundary(const char *t, size_t len, const char *b, size_t bl)
{
    if (bl > len || memcmp(t, b, bl) != 0)
        return 0;
    for (size_t i = bl; i < len; i++)
        if (!is_lwsp((unsigned char)t[i]))
            return 0;
    return 1;
}

static int check_boundary(const struct scan *s, const char *t, size_t len)
{
    if (len > 0 && t[len - 1] == '\r')
        len--;
    if (len < 2 || t[0] != '-' || t[1] != '-')
        return F_NONE;
    for (int i = s->nb - 1; i >= 0; i--) {
        if (is_boundary(t, len, s->bounds[i], s->blen[i] + 2))
            return i == s->nb - 1 ? F_IMM_END : F_PARENT_END;
        if (is_boundary(t, len, s->bounds[i], s->blen[i]))
            return i == s->nb - 1 ? F_IMM : F_PARENT;
    }
    return F_NONE;
}

/* Content up to the next boundary line (left unread), or the end. */
static int scan_content(struct scan *s)
{
    while (s->pos < s->end) {
        const char *next;
        size_t len = line_at(s, s->pos, &next);
        int f = check_boundary(s, s->pos, len);
        if (f != F_NONE)
            return f;
        s->pos = next;
    }
    return F_EOS;
}

static int skip_line(struct scan *s)
{
    const char *nl = memchr(s->pos, '\n', (size_t)(s->end - s->pos));

    if (!nl) {
        s->pos = s->end;
        return -1;
    }
    s->pos = nl + 1;
    return 0;
}

/* GMime's field-name rule: blanks may precede the colon, but no blank
 * inside the name and no control character. */
static int field_name_ok(const char *p, size_t len, size_t *name_len)
{
    int blank = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == ':') {
            if (i == 0)
                return 0;
            *name_len = i;
            while (*name_len &&
                   (p[*name_len - 1] == ' ' || p[*name_len - 1] == '\t'))
                (*name_len)--;
            return 1;
        }
        if (ch == ' ' || ch == '\t')
            blank = 1;
        else if (blank || ch < 0x20 || ch == 0x7f)
            return 0;
    }
    return 0;
}

struct hblock {
    const char *ct, *cte; /* value starts (after ':'), or NULL */
    size_t ct_len, cte_len;
    int nvalid;
    int on_boundary; /* the block ended on a boundary line */
};

/* Encoded words that start ("=?charset?B?") but never end properly. */
static int broken_words(const char *p, size_t n)
{
    int broken = 0;

    for (const char *q = p; (q = memchr(q, '=', (size_t)(p + n - q))); q++) {
        struct eword w;
        size_t i = (size_t)(q - p), j = i + 2;

        if (j >= n || q[1] != '?' || eword_at(p, n, i, &w))
            continue;
        while (j < n && p[j] != '?' && !is_lwsp((unsigned char)p[j]))
            j++;
        if (j + 2 < n && p[j] == '?' && strchr("BbQq", p[j + 1]) &&
            p[j + 2] == '?')
            broken++;
    }
    return broken;
}

/* A field of a header block is complete: check its size and its encoded
 * words, note the values the structure depends on (the last Content-Type,
 * the first Content-Transfer-Encoding). */
static int field_done(struct scan *s, struct hblock *h, const char *start,
                      const char *end, size_t name_len, int valid)
{
    const char *v;

    if ((size_t)(end - start) > s->c->lim.max_header)
        return refuse(s->c, "header field over %zu bytes",
                      s->c->lim.max_header);
    if (!valid)
        return 0;
    if (broken_words(start, (size_t)(end - start)) > SB_MIME_MAX_BROKEN_WORDS)
        return refuse(s->c,
                      "more than %d broken encoded words in a header "
                      "field",
                      SB_MIME_MAX_BROKEN_WORDS);
    h->nvalid++;
    v = (const char *)memchr(start, ':', (size_t)(end - start)) + 1;
    if (name_len == 12 && strncasecmp(start, "Content-Type", 12) == 0) {
        h->ct = v;
        h->ct_len = (size_t)(end - v);
    } else if (!h->cte && name_len == 25 &&
               strncasecmp(start, "Content-Transfer-Encoding", 25) == 0) {
        h->cte = v;
        h->cte_len = (size_t)(end - v);
    }
    return 0;
}

/* An mbox "From " line (or a munged ">From "), which GMime lets stand
 * before the first header of a message. */
static int from_marker(const char *p, size_t len)
{
    if (len > 0 && p[0] == '>') {
        p++;
        len--;
    }
    return len >= 5 && memcmp(p, "From ", 5) == 0;
}

/* One header block, as GMime 3.2.13 reads it: a field runs over the lines
 * that start with a blank; an empty line ends the block, and so does a
 * boundary line of any open multipart (the content is then empty);
 * before the first valid field, lines with an invalid name are skipped (at
 * the top of a message only a "From " line may be: anything else is
 * GMime's error state). A block that starts at the very end of the input
 * is an error state too. Returns 0, 1 for the error state, -1 refused.
 * The input always ends with a newline (sb_mime_parse makes sure of it). */
static int scan_headers(struct scan *s, int top, struct hblock *h)
{
    const char *fstart = NULL, *fend = NULL;
    size_t fname = 0;
    int fvalid = 0;
    const char *block = s->pos;
    size_t block_max = s->c->lim.max_header > SIZE_MAX / SB_MIME_BLOCK_FIELDS
                           ? SIZE_MAX
                           : SB_MIME_BLOCK_FIELDS * s->c->lim.max_header;

    memset(h, 0, sizeof(*h));
    if (s->pos >= s->end)
        return 1;
    while (s->pos < s->end) {
        const char *p = s->pos, *next;
        size_t len = line_at(s, p, &next), name_len = 0;
        int valid;

        if (fstart && (p[0] == ' ' || p[0] == '\t')) { /* folded */
            fend = p + len;
            if ((size_t)(fend - fstart) > s->c->lim.max_header)
                return refuse(s->c, "header field over %zu bytes",
                              s->c->lim.max_header);
            s->pos = next;
            continue;
        }
        if (fstart) {
            if (field_done(s, h, fstart, fend, fname, fvalid) < 0)
                return -1;
            fstart = NULL;
        }
        if ((size_t)(p - block) > block_max)
            return refuse(s->c, "header block over %zu bytes", block_max);
        if (len == 0 || (len == 1 && p[0] == '\r')) {
            s->pos = next; /* the empty line ends the block */
            return 0;
        }
        if (s->nb > 0 && check_boundary(s, p, len) != F_NONE) {
            h->on_boundary = 1; /* left for the content scan */
            return 0;
        }
        valid = field_name_ok(p, len, &name_len);
        if (!valid && h->nvalid == 0) {
            if (top && !from_marker(p, len))
                return 1;
            if (len > s->c->lim.max_header)
                return refuse(s->c, "header field over %zu bytes",
                              s->c->lim.max_header);
            s->pos = next; /* GMime keeps it aside */
            continue;
        }
        fstart = p;
        fend = p + len;
        fname = name_len;
        fvalid = valid;
        s->pos = next;
    }
    if (fstart && field_done(s, h, fstart, fend, fname, fvalid) < 0)
        return -1;
    return 0;
}

enum { K_LEAF, K_MULTIPART, K_MESSAGE };

/* What GMime makes of a part with these headers. *boundary is new (or
 * NULL); *digest says a multipart/digest (whose untyped parts are
 * messages). */
/* The boundary GMime will look for: its multipart takes it from the
 * header's value (unfolded, 8-bit text converted by the fallback list,
 * encoded words decoded), not from the raw bytes. New, or NULL. */
static char *scan_boundary(struct scan *s, const struct hblock *h)
{
    char *raw = g_strndup(h->ct, h->ct_len);
    char *unfolded = g_mime_utils_header_unfold(raw);
    char *value = g_mime_utils_header_decode_text(s->c->opts, unfolded);
    GMimeContentType *ct = g_mime_content_type_parse(s->c->opts, value);
    const char *b = g_mime_content_type_get_parameter(ct, "boundary");
    char *res = b ? g_strdup(b) : NULL;

    g_object_unref(ct);
    g_free(value);
    g_free(unfolded);
    g_free(raw);
    return res;
}

static int scan_kind(struct scan *s, const struct hblock *h, int in_digest,
                     char **boundary, int *digest)
{
    GMimeContentType *ct = NULL;
    const char *type = "text", *sub = "plain";
    int kind = K_LEAF;

    *boundary = NULL;
    *digest = 0;
    if (h->ct) {
        char *v = g_strndup(h->ct, h->ct_len);
        ct = g_mime_content_type_parse(s->c->opts, v);
        type = g_mime_content_type_get_media_type(ct);
        sub = g_mime_content_type_get_media_subtype(ct);
        if (g_ascii_strcasecmp(type, "application") == 0 &&
            g_ascii_strcasecmp(sub, "octet-stream") == 0 &&
            !ci_find(v, strlen(v), "octet-stream")) {
            type = NULL; /* GMime's parser failed: its default applies */
        }
        g_free(v);
    }
    if (!type || !h->ct) {
        type = in_digest ? "message" : "text";
        sub = in_digest ? "rfc822" : "plain";
    }
    if (g_ascii_strcasecmp(type, "multipart") == 0) {
        kind = K_MULTIPART;
        *digest = g_ascii_strcasecmp(sub, "digest") == 0;
        *boundary = scan_boundary(s, h);
    } else if (g_ascii_strcasecmp(type, "message") == 0 &&
               (g_ascii_strcasecmp(sub, "rfc822") == 0 ||
                g_ascii_strcasecmp(sub, "rfc2822") == 0 ||
                g_ascii_strcasecmp(sub, "global") == 0 ||
                g_ascii_strcasecmp(sub, "news") == 0)) {
        kind = K_MESSAGE;
        if (h->cte) {
            char *v = g_strndup(h->cte, h->cte_len);
            switch (g_mime_content_encoding_from_string(v)) {
            case GMIME_CONTENT_ENCODING_BASE64:
            case GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE:
            case GMIME_CONTENT_ENCODING_UUENCODE:
                kind = K_LEAF;
                break;
            default:
                break;
            }
            g_free(v);
        }
    }
    if (ct)
        g_object_unref(ct);
    return kind;
}

/* Where a header block is: the top of the message, a part of a multipart,
 * the body of a message/rfc822 part. */
enum { AT_TOP, AT_PART, AT_MESSAGE };

static int scan_object(struct scan *s, int depth, int in_digest, int at,
                       int *found);

static int scan_multipart(struct scan *s, char *boundary, int digest, int depth,
                          int *found)
{
    const char *next;
    size_t len;
    int f;

    if (!boundary) {
        *found = scan_content(s);
        return 0;
    }
    s->bounds[s->nb] = g_strdup_printf("--%s--", boundary);
    s->blen[s->nb] = strlen(boundary) + 2;
    s->nb++;
    f = scan_content(s);
    if (f == F_IMM) {
        do {
            if (skip_line(s) < 0) {
                f = F_EOS;
                break;
            }
            if (scan_object(s, depth + 1, digest, AT_PART, &f) < 0)
                return -1;
        } while (f == F_IMM);
    }
    if (f == F_IMM_END) {
        skip_line(s);
        g_free(s->bounds[--s->nb]);
        *found = scan_content(s);
        return 0;
    }
    g_free(s->bounds[--s->nb]);
    if (s->nb > 0 && (f == F_PARENT || f == F_PARENT_END)) {
        len = line_at(s, s->pos, &next);
        if (len > 0 && s->pos[len - 1] == '\r')
            len--;
        if (f == F_PARENT_END && is_boundary(s->pos, len, s->bounds[s->nb - 1],
                                             s->blen[s->nb - 1] + 2))
            f = F_IMM_END;
        else if (f == F_PARENT && is_boundary(s->pos, len, s->bounds[s->nb - 1],
                                              s->blen[s->nb - 1]))
            f = F_IMM;
    }
    *found = f;
    return 0;
}

static int scan_object(struct scan *s, int depth, int in_digest, int at,
                       int *found)
{
    struct mctx *c = s->c;
    struct hblock h;
    char *boundary = NULL;
    int kind, digest, rc;

    rc = scan_headers(s, at == AT_TOP, &h);
    if (rc < 0)
        return -1;
    if (rc > 0) { /* GMime's error state: no object */
        if (at == AT_TOP)
            return refuse(c, "no header");
        *found = F_EOS;
        s->pos = s->end;
        return 0;
    }
    if (at == AT_TOP && h.nvalid == 0)
        return refuse(c, "no header");
    if (at == AT_PART && h.on_boundary && h.nvalid == 0) {
        /* neither header nor content: GMime drops the part */
        const char *next;
        *found = check_boundary(s, s->pos, line_at(s, s->pos, &next));
        return 0;
    }
    if (++c->parts > c->lim.max_parts)
        return refuse(c, "more than %d parts", c->lim.max_parts);
    if (depth > c->lim.max_depth)
        return refuse(c, "nesting deeper than %d", c->lim.max_depth);
    kind = scan_kind(s, &h, in_digest, &boundary, &digest);
    if (kind == K_MULTIPART) {
        rc = scan_multipart(s, boundary, digest, depth, found);
        g_free(boundary);
        return rc;
    }
    if (kind == K_LEAF) {
        *found = scan_content(s);
        return 0;
    }
    /* message/rfc822: an empty one ends at once on a boundary */
    if (s->pos >= s->end) {
        *found = F_EOS;
        return 0;
    }
    if (s->nb > 0) {
        const char *next;
        size_t len = line_at(s, s->pos, &next);
        int f = check_boundary(s, s->pos, len);

        if (f == F_IMM || f == F_IMM_END || f == F_PARENT ||
            (f == F_PARENT_END &&
             !(len >= 5 && memcmp(s->pos, "From ", 5) == 0))) {
            *found = f;
            return 0;
        }
    }
    return scan_object(s, depth + 1, 0, AT_MESSAGE, found);
}

static int prescan(struct mctx *c, const char *buf, size_t len)
{
    struct scan s;
    int found, rc;

    memset(&s, 0, sizeof(s));
    s.buf = s.pos = buf;
    s.end = buf + len;
    s.c = c;
    s.bounds = sb_calloc((size_t)c->lim.max_depth + 2, sizeof(*s.bounds));
    s.blen = sb_calloc((size_t)c->lim.max_depth + 2, sizeof(*s.blen));
    c->parts = 0;
    rc = scan_object(&s, 0, 0, AT_TOP, &found);
    while (s.nb > 0)
        g_free(s.bounds[--s.nb]);
    free(s.bounds);
    free(s.blen);
    c->parts = 0;
    return rc;
}

/* ---- HTML to text ------------------------------------------------------ */

struct h2t {
    struct sb_buf *out;
    int nl;        /* newlines owed before the next text (0..2) */
    int space;     /* a space owed */
    int started;   /* some text was written */
    int line_open; /* the current line has text */
    int pre;
    int bq; /* blockquote depth */
    int skip_ws;
    int list[16]; /* 0 for <ul>, else the next <ol> number */
    int nlist;
    char *href;
    size_t a_start;
};

static void h_break(struct h2t *h, int n)
{
    h->space = 0;
    if (h->nl < n)
        h->nl = n;
}

static void h_emit(struct h2t *h, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (h->started && h->nl) {
        for (int i = 0; i < h->nl; i++)
            sb_buf_append(h->out, "\n", 1);
        h->line_open = 0;
        h->space = 0;
    }
    h->nl = 0;
    if (!h->line_open) {
        for (int i = 0; i < h->bq && i < 8; i++)
            sb_buf_append(h->out, "> ", 2);
        h->line_open = 1;
    } else if (h->space) {
        sb_buf_append(h->out, " ", 1);
    }
    h->space = 0;
    sb_buf_append(h->out, s, n);
    h->started = 1;
}

static const struct {
    const char *name;
    uint32_t cp;
} html_entities[] = {
    {"amp", '&'},       {"lt", '<'},       {"gt", '>'},
    {"quot", '"'},      {"apos", '\''},    {"nbsp", ' '},
    {"copy", 0xa9},     {"reg", 0xae},     {"trade", 0x2122},
    {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013},
    {"laquo", 0xab},    {"raquo", 0xbb},   {"lsquo", 0x2018},
    {"rsquo", 0x2019},  {"ldquo", 0x201c}, {"rdquo", 0x201d},
    {"sbquo", 0x201a},  {"bdquo", 0x201e}, {"bull", 0x2022},
    {"middot", 0xb7},   {"euro", 0x20ac},  {"pound", 0xa3},
    {"yen", 0xa5},      {"cent", 0xa2},    {"deg", 0xb0},
    {"plusmn", 0xb1},   {"times", 0xd7},   {"divide", 0xf7},
    {"para", 0xb6},     {"sect", 0xa7},    {"shy", 0},
    {"zwnj", 0},        {"zwj", 0},        {"ensp", ' '},
    {"emsp", ' '},      {"thinsp", ' '},   {"iexcl", 0xa1},
    {"iquest", 0xbf},   {"frac12", 0xbd},  {"frac14", 0xbc},
    {"frac34", 0xbe},   {"micro", 0xb5},   {"larr", 0x2190},
    {"rarr", 0x2192},   {"uarr", 0x2191},  {"darr", 0x2193},
    {"numero", 0x2116}, {"minus", 0x2212}, {"prime", 0x2032},
    {"auml", 0xe4},     {"ouml", 0xf6},    {"uuml", 0xfc},
    {"Auml", 0xc4},     {"Ouml", 0xd6},    {"Uuml", 0xdc},
    {"szlig", 0xdf},    {"eacute", 0xe9},  {"egrave", 0xe8},
    {"agrave", 0xe0},   {"ccedil", 0xe7},  {"Eacute", 0xc9},
};

/* windows-1252 for the numeric references &#128; .. &#159; (HTML5). */
static const uint16_t html_c1[32] = {
    0x20ac, 0xfffd, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
    0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0xfffd, 0x017d, 0xfffd,
    0xfffd, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
    0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0xfffd, 0x017e, 0x0178,
};

/* An entity at s[0] == '&'. Returns its length (0: not an entity) and the
 * code point (0: nothing to write). */
static size_t html_entity(const char *s, size_t n, uint32_t *cp)
{
    size_t i = 1;

    if (n > 2 && s[1] == '#') {
        uint64_t v = 0;
        int hex = s[2] == 'x' || s[2] == 'X', digits = 0;
        i = hex ? 3 : 2;
        while (i < n && i < 16 &&
               (hex ? isxdigit((unsigned char)s[i])
                    : isdigit((unsigned char)s[i]))) {
            v = v * (hex ? 16 : 10) +
                (uint64_t)(hex ? hex_val(s[i]) : s[i] - '0');
            i++;
            digits++;
        }
        if (!digits)
            return 0;
        if (i < n && s[i] == ';')
            i++;
        if (v >= 0x80 && v <= 0x9f)
            v = html_c1[v - 0x80];
        if (v == 0 || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
            v = REPLACEMENT;
        else if (v < 0x20 || v == 0x7f)
            v = ' '; /* a control character is at most white space */
        *cp = (uint32_t)v;
        return i;
    }
    while (i < n && i < 12 && isalnum((unsigned char)s[i]))
        i++;
    if (i == 1)
        return 0;
    for (size_t k = 0; k < SB_ARRAY_LEN(html_entities); k++) {
        size_t len = strlen(html_entities[k].name);
        if (len == i - 1 && strncmp(s + 1, html_entities[k].name, len) == 0) {
            *cp = html_entities[k].cp;
            if (i < n && s[i] == ';')
                return i + 1;
            /* without ';' only the classic few */
            return k < 6 ? i : 0;
        }
    }
    return 0;
}

/* Text with entities decoded into out. */
static void html_unescape(const char *s, size_t n, struct sb_buf *out)
{
    size_t i = 0;

    while (i < n) {
        const char *amp = memchr(s + i, '&', n - i);
        size_t stop = amp ? (size_t)(amp - s) : n, k;
        uint32_t cp;

        sb_buf_append(out, s + i, stop - i);
        i = stop;
        if (i >= n)
            break;
        k = html_entity(s + i, n - i, &cp);
        if (k == 0) {
            sb_buf_append(out, "&", 1);
            i++;
            continue;
        }
        if (cp)
            buf_put_cp(out, cp);
        i += k;
    }
}

/* A line break (<br>, a newline inside <pre>): two in a row leave an
 * empty line. */
static void h_newline(struct h2t *h)
{
    h->space = 0;
    if (h->started && h->nl < 2)
        h->nl++;
}

/* Text between tags: white space collapsed (kept inside <pre>). */
static void h_text(struct h2t *h, const char *s, size_t n)
{
    struct sb_buf t;
    size_t i = 0;

    sb_buf_init(&t, 0);
    html_unescape(s, n, &t);
    while (i < t.len) {
        size_t j = i;
        if (h->pre) {
            while (j < t.len && t.data[j] != '\n')
                j++;
            h_emit(h, t.data + i, j - i);
            if (j < t.len) {
                h_newline(h);
                j++;
            }
            i = j;
            continue;
        }
        while (j < t.len && !isspace((unsigned char)t.data[j]))
            j++;
        h_emit(h, t.data + i, j - i);
        if (j < t.len && h->line_open && !h->nl)
            h->space = 1;
        while (j < t.len && isspace((unsigned char)t.data[j]))
            j++;
        i = j;
    }
    sb_buf_free(&t);
}

/* The value of attribute name in tag text a[0..n), new, or NULL. */
static char *html_attr(const char *a, size_t n, const char *name)
{
    size_t i = 0, k = strlen(name);

    while (i < n) {
        size_t ns, ne, vs, ve;
        char q = 0;

        while (i < n && (isspace((unsigned char)a[i]) || a[i] == '/'))
            i++;
        ns = i;
        while (i < n && !isspace((unsigned char)a[i]) && a[i] != '=' &&
               a[i] != '>')
            i++;
        ne = i;
        while (i < n && isspace((unsigned char)a[i]))
            i++;
        vs = ve = i;
        if (i < n && a[i] == '=') {
            i++;
            while (i < n && isspace((unsigned char)a[i]))
                i++;
            if (i < n && (a[i] == '"' || a[i] == '\''))
                q = a[i++];
            vs = i;
            while (i < n && (q ? a[i] != q : !isspace((unsigned char)a[i])))
                i++;
            ve = i;
            if (q && i < n)
                i++;
        }
        if (ne - ns == k && strncasecmp(a + ns, name, k) == 0) {
            struct sb_buf b;
            sb_buf_init(&b, 0);
            sb_buf_append(&b, "", 0);
            html_unescape(a + vs, ve - vs, &b);
            return sb_buf_steal(&b, NULL);
        }
        if (ne == ns)
            i++;
    }
    return NULL;
}

static void h_link_end(struct h2t *h)
{
    const char *href = h->href, *txt;
    size_t tn, hn;

    if (!href)
        return;
    if (strncasecmp(href, "mailto:", 7) == 0)
        href += 7;
    hn = strlen(href);
    txt = h->out->data ? h->out->data + h->a_start : "";
    tn = h->out->len > h->a_start ? h->out->len - h->a_start : 0;
    trim(&txt, &tn);
    if (hn && hn < 2048 && href[0] != '#' &&
        strncasecmp(href, "javascript:", 11) != 0 &&
        strncasecmp(href, "data:", 5) != 0 &&
        !(tn == hn && strncmp(txt, href, hn) == 0)) {
        int ok = 1;
        for (size_t i = 0; i < hn; i++)
            if ((unsigned char)href[i] < 0x20 || href[i] == ' ')
                ok = 0;
        if (ok) {
            h->space = tn > 0;
            h_emit(h, "<", 1);
            sb_buf_append(h->out, href, hn);
            sb_buf_append(h->out, ">", 1);
        }
    }
    free(h->href);
    h->href = NULL;
}

/* Tags that end a line (1) or a paragraph (2). */
static int h_block(const char *name)
{
    static const char *const para[] = {
        "p",     "h1", "h2", "h3", "h4", "h5",         "h6",
        "table", "hr", "ul", "ol", "dl", "blockquote", "pre",
    };
    static const char *const line[] = {
        "div",     "tr",     "li",         "dt",    "dd",       "section",
        "article", "header", "footer",     "nav",   "aside",    "main",
        "address", "figure", "figcaption", "form",  "fieldset", "center",
        "caption", "tbody",  "thead",      "tfoot",
    };
    for (size_t i = 0; i < SB_ARRAY_LEN(para); i++)
        if (strcmp(name, para[i]) == 0)
            return 2;
    for (size_t i = 0; i < SB_ARRAY_LEN(line); i++)
        if (strcmp(name, line[i]) == 0)
            return 1;
    return 0;
}

static void h_tag(struct h2t *h, const char *name, int close, const char *a,
                  size_t an)
{
    int blk = h_block(name);

    if (strcmp(name, "br") == 0) {
        h_newline(h);
        return;
    }
    if (strcmp(name, "a") == 0) {
        h_link_end(h);
        if (!close) {
            h->href = html_attr(a, an, "href");
            h->a_start = h->out->len;
        }
        return;
    }
    if (strcmp(name, "td") == 0 || strcmp(name, "th") == 0) {
        if (close)
            h->space = h->line_open;
        return;
    }
    if (strcmp(name, "blockquote") == 0) {
        h_break(h, 2);
        h->bq += close ? (h->bq > 0 ? -1 : 0) : 1;
        return;
    }
    if (strcmp(name, "pre") == 0)
        h->pre += close ? (h->pre > 0 ? -1 : 0) : 1;
    if (strcmp(name, "ul") == 0 || strcmp(name, "ol") == 0) {
        if (!close && h->nlist < (int)SB_ARRAY_LEN(h->list))
            h->list[h->nlist++] = name[0] == 'o' ? 1 : 0;
        else if (close && h->nlist > 0)
            h->nlist--;
        h_break(h, h->nlist ? 1 : 2);
        return;
    }
    if (strcmp(name, "li") == 0 && !close) {
        char mark[24];
        int *n = h->nlist ? &h->list[h->nlist - 1] : NULL;
        h_break(h, 1);
        if (n && *n)
            snprintf(mark, sizeof(mark), "%d.", (*n)++);
        else
            snprintf(mark, sizeof(mark), "-");
        h_emit(h, mark, strlen(mark));
        h->space = 1;
        return;
    }
    if (blk)
        h_break(h, blk);
}

/* Elements whose content is never text: their index from 1, or 0. */
static const char *const raw_elements[] = {
    "script", "style", "title", "template", "svg", "xml", "head",
};

static size_t h_raw(const char *name)
{
    for (size_t i = 0; i < SB_ARRAY_LEN(raw_elements); i++)
        if (strcmp(name, raw_elements[i]) == 0)
            return i + 1;
    return 0;
}

/* HTML (UTF-8) to readable text appended to out. One pass: a tag left
 * open runs to the end; a quote in a tag that never closes is taken as a
 * plain character (there is then no such quote further on, so the search
 * fails at most once per quote character), and an element whose end tag
 * is missing is remembered (the search is not repeated for the next one):
 * no quadratic rescans. */
static void html_to_text(const char *s, size_t n, struct sb_buf *out)
{
    size_t noend[SB_ARRAY_LEN(raw_elements) + 1];
    struct h2t h;
    size_t i = 0, raw;

    memset(&h, 0, sizeof(h));
    h.out = out;
    for (size_t k = 0; k < SB_ARRAY_LEN(noend); k++)
        noend[k] = SIZE_MAX;
    while (i < n) {
        const char *lt = memchr(s + i, '<', n - i);
        size_t t = lt ? (size_t)(lt - s) : n, j, ns, ne;
        char name[16];
        int close = 0, k = 0;

        h_text(&h, s + i, t - i);
        if (t >= n)
            break;
        i = t;
        if (i + 3 < n && strncmp(s + i, "<!--", 4) == 0) {
            const char *e = NULL;
            for (j = i + 4; j + 2 < n; j++)
                if (s[j] == '-' && s[j + 1] == '-' && s[j + 2] == '>') {
                    e = s + j;
                    break;
                }
            i = e ? (size_t)(e - s) + 3 : n;
            continue;
        }
        j = i + 1;
        if (j < n && s[j] == '/') {
            close = 1;
            j++;
        }
        if (j >= n || (!isalpha((unsigned char)s[j]) &&
                       !(!close && (s[j] == '!' || s[j] == '?')))) {
            h_text(&h, "<", 1); /* a lone '<' is text */
            i++;
            continue;
        }
        ns = j;
        while (j < n && (isalnum((unsigned char)s[j]) || s[j] == ':' ||
                         s[j] == '-' || s[j] == '!' || s[j] == '?'))
            j++;
        ne = j;
        for (size_t q = ns; q < ne && k < (int)sizeof(name) - 1; q++)
            name[k++] = (char)tolower((unsigned char)s[q]);
        name[k] = '\0';
        /* the end of the tag, quotes respected */
        while (j < n && s[j] != '>') {
            if (s[j] == '"' || s[j] == '\'') {
                const char *q = memchr(s + j + 1, s[j], n - j - 1);
                if (q) {
                    j = (size_t)(q - s) + 1;
                    continue;
                }
            }
            j++;
        }
        if (!close && name[0] != '!' && name[0] != '?')
            h_tag(&h, name, 0, s + ne, j - ne);
        else if (close)
            h_tag(&h, name, 1, "", 0);
        i = j < n ? j + 1 : n;
        raw = close ? 0 : h_raw(name);
        if (raw && s[j - 1] != '/') {
            /* skip to the matching end tag */
            size_t len = strlen(name);
            const char *e = NULL;
            for (size_t q = i; q < noend[raw] && q + 2 + len <= n; q++) {
                const char *lt2 = memchr(s + q, '<', n - q);
                if (!lt2)
                    break;
                q = (size_t)(lt2 - s);
                if (q + 2 + len <= n && s[q + 1] == '/' &&
                    strncasecmp(s + q + 2, name, len) == 0) {
                    e = lt2;
                    break;
                }
            }
            if (e) {
                const char *gt = memchr(e, '>', n - (size_t)(e - s));
                i = gt ? (size_t)(gt - s) + 1 : n;
            } else {
                if (i < noend[raw])
                    noend[raw] = i;
                if (strcmp(name, "head") != 0)
                    i = n; /* <head> without its end: just the tag */
            }
        }
    }
    h_link_end(&h);
    sb_buf_append(out, "", 0);
}

/* ---- quoted history ---------------------------------------------------- */

struct tline {
    const char *p;
    size_t n;   /* trimmed length */
    size_t off; /* offset of the line start in the text */
};

static int line_quoted(const struct tline *l)
{
    return l->n > 0 && l->p[0] == '>';
}

static int line_blank(const struct tline *l)
{
    return l->n == 0;
}

/* "On ... wrote:", "... написал(а):" and their kin. */
static int attribution_end(const struct tline *l)
{
    /* ">:" ends "..., Name <addr>:" (Gmail and Yandex in Russian) */
    static const char *const ends[] = {
        "wrote:",   "написал(а):", "написал:", "написала:", "пишет:",
        "schrieb:", "a écrit :",   "a écrit:", "escribió:", ">:",
    };
    for (size_t i = 0; i < SB_ARRAY_LEN(ends); i++)
        if (ci_suffix(l->p, l->n, ends[i]))
            return 1;
    return 0;
}

/* "-----Original Message-----" and its kin. */
static int separator_line(const struct tline *l)
{
    /* ASCII letters match in any case, Cyrillic ones as written */
    static const char *const marks[] = {
        "original message",       "Исходное сообщение",
        "исходное сообщение",     "Оригинальное сообщение",
        "оригинальное сообщение", "ursprüngliche nachricht",
        "message d'origine",
    };
    if (l->n < 6 || l->p[0] != '-' || l->p[l->n - 1] != '-')
        return 0;
    for (size_t i = 0; i < SB_ARRAY_LEN(marks); i++)
        if (ci_find(l->p, l->n, marks[i]))
            return 1;
    return 0;
}

static int header_line(const struct tline *l, const char *const *names,
                       size_t count)
{
    const char *p = l->p;
    size_t n = l->n;

    while (n && (*p == '*' || *p == ' ')) { /* "*From:*" from HTML bold */
        p++;
        n--;
    }
    for (size_t i = 0; i < count; i++)
        if (ci_prefix(p, n, names[i]))
            return 1;
    return 0;
}

static int from_line(const struct tline *l)
{
    static const char *const names[] = {"From:", "От:", "Von:", "De :", "De:"};
    return header_line(l, names, SB_ARRAY_LEN(names));
}

static int sent_line(const struct tline *l)
{
    static const char *const names[] = {
        "Sent:", "Date:", "Отправлено:", "Дата:", "Gesendet:", "Envoyé :"};
    return header_line(l, names, SB_ARRAY_LEN(names));
}

/* Where quoted history starts in text, or -1. */
static long quote_start(const char *text, size_t len)
{
    struct tline *lines;
    size_t nl = 0, alloc = 64, i = 0;
    long res = -1;
    int have_text = 0;

    lines = sb_malloc(alloc * sizeof(*lines));
    while (i <= len) {
        const char *e = memchr(text + i, '\n', len - i);
        size_t end = e ? (size_t)(e - text) : len;
        const char *p = text + i;
        size_t n = end - i;

        if (nl == alloc) {
            alloc *= 2;
            lines = sb_realloc(lines, alloc * sizeof(*lines));
        }
        lines[nl].off = i;
        while (n && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
            n--;
        lines[nl].p = p;
        lines[nl].n = n;
        nl++;
        if (!e)
            break;
        i = end + 1;
    }
    for (i = 0; i < nl && res < 0; i++) {
        const struct tline *l = &lines[i];
        size_t k;

        if (have_text && separator_line(l)) {
            res = (long)l->off;
            break;
        }
        if (have_text && l->n >= 10 && strspn(l->p, "_") >= 10) {
            for (k = i + 1; k < nl && line_blank(&lines[k]); k++)
                ;
            if (k < nl && from_line(&lines[k])) {
                res = (long)l->off;
                break;
            }
        }
        if (have_text && from_line(l)) {
            for (k = i + 1; k < nl && k <= i + 4; k++)
                if (sent_line(&lines[k])) {
                    res = (long)l->off;
                    break;
                }
            if (res >= 0)
                break;
        }
        if (have_text && attribution_end(l)) {
            size_t start = i, q = 0, other = 0;
            if (i > 0 && !line_blank(&lines[i - 1]) &&
                ci_prefix(lines[i - 1].p, lines[i - 1].n, "On ") &&
                !ci_prefix(l->p, l->n, "On "))
                start = i - 1; /* an attribution wrapped over two lines */
            for (k = i + 1; k < nl; k++) {
                if (line_quoted(&lines[k]))
                    q++;
                else if (!line_blank(&lines[k]))
                    other++;
            }
            if (other == 0 &&
                (q > 0 || ci_prefix(lines[start].p, lines[start].n, "On "))) {
                res = (long)lines[start].off;
                break;
            }
        }
        if (!line_blank(l) && !line_quoted(l))
            have_text = 1;
    }
    if (res < 0) {
        /* "> " lines running to the end, with their attribution */
        size_t last = nl;
        while (last > 0 && line_blank(&lines[last - 1]))
            last--;
        if (last > 0 && line_quoted(&lines[last - 1])) {
            size_t start = last - 1, k;
            while (start > 0 && (line_quoted(&lines[start - 1]) ||
                                 line_blank(&lines[start - 1])))
                start--;
            while (start < last && line_blank(&lines[start]))
                start++;
            k = start;
            while (k > 0 && line_blank(&lines[k - 1]))
                k--;
            if (k > 0 && attribution_end(&lines[k - 1]))
                start = k - 1;
            for (k = 0; k < start; k++)
                if (!line_blank(&lines[k]))
                    break;
            if (k < start)
                res = (long)lines[start].off;
        }
    }
    free(lines);
    return res;
}

/* ---- parts ------------------------------------------------------------- */

/* The decoded content of a leaf part (transfer encoding undone); data is
 * never NULL and is followed by a NUL. */
static GByteArray *part_bytes(GMimePart *part)
{
    GMimeDataWrapper *w = g_mime_part_get_content(part);
    GByteArray *arr = g_byte_array_new();

    if (w) {
        GMimeStream *st = g_mime_stream_mem_new_with_byte_array(arr);
        g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(st), FALSE);
        g_mime_data_wrapper_write_to_stream(w, st);
        g_object_unref(st);
    }
    g_byte_array_append(arr, (const guint8 *)"", 1);
    g_byte_array_set_size(arr, arr->len - 1);
    return arr;
}

static char *mime_type_lower(GMimeObject *obj)
{
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    char *mt = ct ? g_mime_content_type_get_mime_type(ct) : NULL;
    char *res = clean_header(mt ? mt : "application/octet-stream");

    g_free(mt);
    for (char *p = res; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return res;
}

/* A parameter of a structured header, decoded through hdr_prepare (so the
 * GMime 3.2.13 encoded-word bug and undeclared 8-bit names are handled).
 * New string or NULL. */
static char *hdr_param(struct mctx *c, GMimeObject *obj, const char *header,
                       const char *param)
{
    const char *raw = hdr_raw(obj, header), *v = NULL;
    char *prep, *res = NULL;

    if (!raw)
        return NULL;
    prep = hdr_prepare(c, raw);
    if (g_ascii_strcasecmp(header, "Content-Disposition") == 0) {
        GMimeContentDisposition *d =
            g_mime_content_disposition_parse(c->opts, prep);
        v = d ? g_mime_content_disposition_get_parameter(d, param) : NULL;
        if (v && *v)
            res = clean_header(v);
        if (d)
            g_object_unref(d);
    } else {
        GMimeContentType *ct = g_mime_content_type_parse(c->opts, prep);
        v = ct ? g_mime_content_type_get_parameter(ct, param) : NULL;
        if (v && *v)
            res = clean_header(v);
        if (ct)
            g_object_unref(ct);
    }
    free(prep);
    return res;
}

/* The file name, path parts removed; "" when none. */
static char *part_filename(struct mctx *c, GMimeObject *obj)
{
    char *fn = hdr_param(c, obj, "Content-Disposition", "filename");
    const char *base;
    char *res;

    if (!fn)
        fn = hdr_param(c, obj, "Content-Type", "name");
    if (!fn)
        return sb_strdup("");
    base = fn;
    for (const char *p = fn; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    while (*base == ' ')
        base++;
    res = (strcmp(base, ".") == 0 || strcmp(base, "..") == 0) ? sb_strdup("")
                                                              : sb_strdup(base);
    free(fn);
    return res;
}

static int disposition_is(GMimeObject *obj, const char *what)
{
    const char *d = g_mime_object_get_disposition(obj);

    return d && g_ascii_strcasecmp(d, what) == 0;
}

static struct sb_mime_att *att_new(struct mctx *c)
{
    struct sb_mime_msg *m = c->m;

    if (m->natts == c->natts_alloc) {
        c->natts_alloc = c->natts_alloc ? c->natts_alloc * 2 : 4;
        m->atts = sb_realloc(m->atts, c->natts_alloc * sizeof(*m->atts));
    }
    memset(&m->atts[m->natts], 0, sizeof(m->atts[0]));
    return &m->atts[m->natts++];
}

static void att_content(struct mctx *c, struct sb_mime_att *a,
                        const unsigned char *data, size_t len)
{
    GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);

    g_checksum_update(sum, data, (gssize)len);
    snprintf(a->sha256, sizeof(a->sha256), "%s", g_checksum_get_string(sum));
    g_checksum_free(sum);
    a->size = len;
    if (len > c->lim.max_attachment) {
        a->truncated = 1;
        return;
    }
    a->data = sb_malloc(len ? len : 1);
    if (len)
        memcpy(a->data, data, len);
}

static void att_meta(struct mctx *c, struct sb_mime_att *a, GMimeObject *obj)
{
    const char *cid = g_mime_object_get_content_id(obj);

    a->filename = part_filename(c, obj);
    a->content_type = mime_type_lower(obj);
    a->content_id = id_clean(cid);
    a->is_inline = disposition_is(obj, "inline");
}

/* Text of a body part (text/plain or text/html) as clean UTF-8. */
static void part_text(struct mctx *c, GMimePart *part, int html,
                      struct sb_buf *out)
{
    GByteArray *arr = part_bytes(part);
    const char *cs =
        g_mime_object_get_content_type_parameter(GMIME_OBJECT(part), "charset");
    char meta[SB_MIME_CS_LEN + 1] = "";
    struct sb_buf u;

    if (html && (!cs || !*cs)) {
        /* <meta charset=...> or http-equiv content="...; charset=..." */
        size_t n = arr->len < 4096 ? arr->len : 4096;
        const char *d = (const char *)arr->data;
        const char *p = ci_find(d, n, "charset=");
        if (p) {
            p += 8;
            while (p < d + n && (*p == '"' || *p == '\'' || *p == ' '))
                p++;
            cs_norm(p, (size_t)(d + n - p), meta);
            cs = meta;
        }
    }
    sb_buf_init(&u, 0);
    decode_bytes(c, cs, (const char *)arr->data, arr->len, &u);
    clean_text(out, u.data ? u.data : "", u.len);
    sb_buf_free(&u);
    g_byte_array_free(arr, TRUE);
}

enum { DF_NONE, DF_FINAL, DF_ORIGINAL, DF_ACTION, DF_STATUS, DF_DIAG };

static void dsn_clear(struct sb_mime_dsn *d)
{
    free(d->recipient);
    free(d->action);
    free(d->status);
    free(d->diagnostic);
    memset(d, 0, sizeof(*d));
}

/* One delivery-status field (unfolded value) into d. */
static void dsn_field(struct sb_mime_dsn *d, int field, const char *v, size_t n)
{
    char **slot = NULL;
    size_t k = 0;
    char *tmp;

    trim(&v, &n);
    if (field == DF_FINAL || field == DF_ORIGINAL || field == DF_DIAG) {
        /* "rfc822; user@host", "smtp; 550 ..." */
        const char *semi = memchr(v, ';', n);
        if (semi) {
            n -= (size_t)(semi + 1 - v);
            v = semi + 1;
            trim(&v, &n);
        }
    }
    switch (field) {
    case DF_FINAL:
    case DF_ORIGINAL:
        if (field == DF_ORIGINAL && d->recipient)
            return; /* Final-Recipient wins */
        if (n > 1 && v[0] == '<' && v[n - 1] == '>') {
            v++;
            n -= 2;
        }
        slot = &d->recipient;
        break;
    case DF_ACTION:
        while (k < n && isalpha((unsigned char)v[k]))
            k++;
        n = k;
        slot = &d->action;
        break;
    case DF_STATUS:
        while (k < n && (isdigit((unsigned char)v[k]) || v[k] == '.'))
            k++;
        n = k;
        slot = &d->status;
        break;
    case DF_DIAG:
        slot = &d->diagnostic;
        break;
    default:
        return;
    }
    if (n == 0)
        return;
    tmp = sb_strndup(v, n < 1024 ? n : 1024);
    free(*slot);
    *slot = clean_header(tmp);
    free(tmp);
    if (field == DF_ACTION)
        for (char *q = d->action; *q; q++)
            *q = (char)tolower((unsigned char)*q);
}

/* Delivery-status fields (RFC 3464: a group of per-message fields, then
 * one group per recipient): the first recipient group whose action is
 * "failed", else the first one. */
static void dsn_parse(struct mctx *c, const char *s, size_t n)
{
    static const struct {
        const char *name;
        int field;
    } names[] = {
        {"Final-Recipient", DF_FINAL}, {"Original-Recipient", DF_ORIGINAL},
        {"Action", DF_ACTION},         {"Status", DF_STATUS},
        {"Diagnostic-Code", DF_DIAG},
    };
    struct sb_mime_dsn *d = &c->m->dsn, cur;
    struct sb_buf val;
    size_t i = 0;
    int group = 0, field = DF_NONE, done = 0;

    memset(&cur, 0, sizeof(cur));
    sb_buf_init(&val, 0);
    while (!done) {
        const char *e = i < n ? memchr(s + i, '\n', n - i) : NULL;
        size_t end = e ? (size_t)(e - s) : n;
        const char *p = s + i, *colon;
        size_t len = end - i;
        int folded = len > 0 && (p[0] == ' ' || p[0] == '\t');

        if (folded && field != DF_NONE) {
            sb_buf_append(&val, " ", 1);
            sb_buf_append(&val, p, len);
        } else {
            if (field != DF_NONE)
                dsn_field(&cur, field, val.data, val.len);
            field = DF_NONE;
            sb_buf_reset(&val);
        }
        trim(&p, &len);
        if (len == 0 || i >= n) { /* the end of a group */
            if (group > 0 && (cur.recipient || cur.action || cur.status)) {
                int failed = cur.action && strcmp(cur.action, "failed") == 0;
                if (failed || !d->recipient) {
                    dsn_clear(d);
                    d->recipient = cur.recipient;
                    d->action = cur.action;
                    d->status = cur.status;
                    d->diagnostic = cur.diagnostic;
                    memset(&cur, 0, sizeof(cur));
                    done = failed;
                }
            }
            dsn_clear(&cur);
            group++;
        } else if (!folded && (colon = memchr(p, ':', len)) != NULL) {
            size_t nn = (size_t)(colon - p);
            for (size_t k = 0; k < SB_ARRAY_LEN(names); k++) {
                if (nn == strlen(names[k].name) &&
                    strncasecmp(p, names[k].name, nn) == 0) {
                    field = names[k].field;
                    sb_buf_append(&val, colon + 1, len - nn - 1);
                }
            }
        }
        if (!e)
            break;
        i = end + 1;
    }
    dsn_clear(&cur);
    sb_buf_free(&val);
}

/* The Message-ID among header lines (text/rfc822-headers). */
static char *headers_message_id(struct mctx *c, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        const char *e = memchr(s + i, '\n', n - i);
        size_t end = e ? (size_t)(e - s) : n;

        if (end == i || (end == i + 1 && s[i] == '\r'))
            break; /* end of the header block */
        if (ci_prefix(s + i, end - i, "Message-ID:")) {
            struct sb_buf v;
            size_t j = end;
            char **ids;
            char *id = NULL;

            sb_buf_init(&v, 0);
            sb_buf_append(&v, s + i + 11, end - i - 11);
            while (j < n && j + 1 < n &&
                   (s[j + 1] == ' ' || s[j + 1] == '\t')) {
                const char *e2 = memchr(s + j + 1, '\n', n - j - 1);
                size_t end2 = e2 ? (size_t)(e2 - s) : n;
                sb_buf_append(&v, s + j + 1, end2 - j - 1);
                j = end2;
            }
            ids = refs_list(c, v.data, 1);
            if (ids[0])
                id = ids[0];
            free(ids);
            sb_buf_free(&v);
            return id;
        }
        i = end + 1;
    }
    return NULL;
}

static int walk(struct mctx *c, GMimeObject *obj, int depth, int attached,
                struct alt_state *alt);

/* Every header of an object within max_header. */
static int check_headers(struct mctx *c, GMimeObject *obj)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
    int n = hl ? g_mime_header_list_get_count(hl) : 0;

    for (int i = 0; i < n; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        const char *name = g_mime_header_get_raw_name(h);
        const char *raw = g_mime_header_get_raw_value(h);
        size_t len = (name ? strlen(name) : 0) + 1 + (raw ? strlen(raw) : 0);

        if (raw && raw[0] && raw[strlen(raw) - 1] == '\n')
            len--;
        if (len > c->lim.max_header)
            return refuse(c, "header field over %zu bytes", c->lim.max_header);
    }
    return 0;
}

static void text_append(struct sb_buf *b, struct sb_buf *add)
{
    if (!add->len)
        return;
    if (b->len)
        sb_buf_append(b, "\n\n", 2);
    sb_buf_append(b, add->data, add->len);
}

static int leaf(struct mctx *c, GMimePart *part, struct alt_state *alt)
{
    GMimeObject *obj = GMIME_OBJECT(part);
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    int plain = g_mime_content_type_is_type(ct, "text", "plain");
    int html = g_mime_content_type_is_type(ct, "text", "html");
    struct sb_mime_att *a;
    GByteArray *arr;

    if ((plain || html) && !disposition_is(obj, "attachment")) {
        char *fn = part_filename(c, obj);
        int body = *fn == '\0';
        free(fn);
        if (body) {
            struct sb_buf t;
            if (alt && (plain ? alt->plain : alt->html))
                return 0; /* a second alternative of the same kind */
            if (alt)
                *(plain ? &alt->plain : &alt->html) = 1;
            sb_buf_init(&t, 0);
            part_text(c, part, html, &t);
            text_append(plain ? &c->text : &c->html, &t);
            sb_buf_free(&t);
            return 0;
        }
    }
    arr = part_bytes(part);
    if (g_mime_content_type_is_type(ct, "message", "delivery-status") ||
        g_mime_content_type_is_type(ct, "message", "global-delivery-status")) {
        if (!c->dsn_seen)
            dsn_parse(c, (const char *)arr->data, arr->len);
        c->dsn_seen = 1;
    } else if (!c->returned_id &&
               (g_mime_content_type_is_type(ct, "text", "rfc822-headers") ||
                g_mime_content_type_is_type(ct, "message", "global-headers"))) {
        c->returned_id =
            headers_message_id(c, (const char *)arr->data, arr->len);
    }
    a = att_new(c);
    att_meta(c, a, obj);
    att_content(c, a, arr->data, arr->len);
    g_byte_array_free(arr, TRUE);
    return 0;
}

static int message_part(struct mctx *c, GMimeMessagePart *mp, int depth,
                        int attached)
{
    GMimeMessage *msg = g_mime_message_part_get_message(mp);
    GMimeObject *body = msg ? g_mime_message_get_mime_part(msg) : NULL;

    if (msg && check_headers(c, GMIME_OBJECT(msg)) < 0)
        return -1;
    if (!attached) {
        struct sb_mime_att *a = att_new(c);
        GMimeStream *st = g_mime_stream_mem_new();
        GByteArray *arr;

        att_meta(c, a, GMIME_OBJECT(mp));
        if (msg)
            g_mime_object_write_to_stream(GMIME_OBJECT(msg), NULL, st);
        arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(st));
        att_content(c, a, arr->data, arr->len);
        g_object_unref(st);
        if (msg && !c->returned_id)
            c->returned_id = id_clean(g_mime_message_get_message_id(msg));
    }
    if (body)
        return walk(c, body, depth + 1, 1, NULL);
    return 0;
}

/* The tree, depth first; recursion only after the depth check. attached:
 * inside a message/rfc822 part (counted and checked, nothing taken). */
static int walk(struct mctx *c, GMimeObject *obj, int depth, int attached,
                struct alt_state *alt)
{
    if (++c->parts > c->lim.max_parts)
        return refuse(c, "more than %d parts", c->lim.max_parts);
    if (depth > c->lim.max_depth)
        return refuse(c, "nesting deeper than %d", c->lim.max_depth);
    if (check_headers(c, obj) < 0)
        return -1;
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        int n = g_mime_multipart_get_count(mp);
        struct alt_state st = {0, 0};
        int is_alt = g_mime_content_type_is_type(
            g_mime_object_get_content_type(obj), "multipart", "alternative");

        for (int i = 0; i < n; i++) {
            GMimeObject *child = g_mime_multipart_get_part(mp, i);
            if (walk(c, child, depth + 1, attached,
                     is_alt && GMIME_IS_PART(child) ? &st : NULL) < 0)
                return -1;
        }
        return 0;
    }
    if (GMIME_IS_MESSAGE_PART(obj))
        return message_part(c, GMIME_MESSAGE_PART(obj), depth, attached);
    if (GMIME_IS_PART(obj) && !attached)
        return leaf(c, GMIME_PART(obj), alt);
    return 0;
}

/* ---- automatic mail ---------------------------------------------------- */

static char *token_lower(const char *v, size_t max)
{
    struct sb_buf b;
    const char *p = v ? v : "";

    sb_buf_init(&b, 0);
    sb_buf_append(&b, "", 0);
    while (*p == ' ' || *p == '\t')
        p++;
    for (; *p && b.len < max; p++) {
        unsigned char ch = (unsigned char)*p;
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.') {
            char lc = (char)tolower(ch);
            sb_buf_append(&b, &lc, 1);
        } else {
            break;
        }
    }
    return sb_buf_steal(&b, NULL);
}

static int list_has(const char *v, const char *tok)
{
    const char *p = v;
    size_t k = strlen(tok);

    while (p && *p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == ';')
            p++;
        if (strncasecmp(p, tok, k) == 0 &&
            (p[k] == '\0' || p[k] == ',' || p[k] == ' ' || p[k] == ';'))
            return 1;
        p = strpbrk(p, ",; \t");
    }
    return 0;
}

/* A bounce without RFC 3464 structure: from the mailer daemon (or with an
 * empty Return-Path) with a bounce-like subject. */
static int bounce_shape(struct sb_mime_msg *m)
{
    static const char *const subj[] = {
        "undeliver",
        "delivery status notification",
        "returned mail",
        "delivery failure",
        "failure notice",
        "mail delivery failed",
        "delivery has failed",
        "non-delivery",
        "недостав",
        "не доставлено",
        "не удалось доставить",
    };
    const char *at = strchr(m->from.addr, '@');
    size_t local = at ? (size_t)(at - m->from.addr) : 0;
    int daemon =
        (local == 13 && strncasecmp(m->from.addr, "mailer-daemon", 13) == 0) ||
        (local == 10 && strncasecmp(m->from.addr, "postmaster", 10) == 0) ||
        ci_find(m->from.name, strlen(m->from.name), "mail delivery") != NULL;

    if (!daemon && !(m->return_path && !*m->return_path))
        return 0;
    for (size_t i = 0; i < SB_ARRAY_LEN(subj); i++)
        if (ci_find(m->subject, strlen(m->subject), subj[i]))
            return 1;
    return 0;
}

/* Status, recipient and returned Message-ID of a bounce whose report is
 * missing or broken, from its text. */
static void bounce_guess(struct mctx *c)
{
    struct sb_mime_msg *m = c->m;
    const char *t = m->text;
    size_t n = strlen(t);

    for (size_t i = 0; !m->dsn.status && i + 5 <= n; i++) {
        size_t j = i, d1 = 0, d2 = 0;
        if ((t[i] != '2' && t[i] != '4' && t[i] != '5') ||
            (i > 0 && (isalnum((unsigned char)t[i - 1]) || t[i - 1] == '.')))
            continue;
        j++;
        if (j >= n || t[j] != '.')
            continue;
        for (j++; j < n && isdigit((unsigned char)t[j]) && d1 < 3; j++)
            d1++;
        if (!d1 || j >= n || t[j] != '.')
            continue;
        for (j++; j < n && isdigit((unsigned char)t[j]) && d2 < 3; j++)
            d2++;
        if (!d2 || (j < n && (isalnum((unsigned char)t[j]))))
            continue;
        m->dsn.status = sb_strndup(t + i, j - i);
    }
    if (!m->dsn.action)
        m->dsn.action = sb_strdup(
            m->dsn.status && m->dsn.status[0] == '4' ? "delayed" : "failed");
    if (!m->dsn.recipient) {
        /* "<user@host>:" opening a line (qmail, Postfix, Exim) */
        for (size_t i = 0; i < n; i++) {
            const char *e, *gt;
            size_t ll;
            if ((i > 0 && t[i - 1] != '\n') || t[i] != '<')
                continue;
            e = memchr(t + i, '\n', n - i);
            ll = e ? (size_t)(e - (t + i)) : n - i;
            gt = memchr(t + i, '>', ll);
            if (gt && gt + 1 < t + i + ll && gt[1] == ':' &&
                memchr(t + i, '@', (size_t)(gt - (t + i))) &&
                gt - (t + i) > 3) {
                char *r = sb_strndup(t + i + 1, (size_t)(gt - (t + i)) - 1);
                m->dsn.recipient = clean_header(r);
                free(r);
                break;
            }
        }
    }
    for (size_t i = 1; !m->dsn.original_message_id && i + 11 < n; i++) {
        /* a copy of the message below the report text */
        if (t[i - 1] == '\n' && ci_prefix(t + i, n - i, "Message-ID:")) {
            const char *e = memchr(t + i, '\n', n - i);
            char *v =
                sb_strndup(t + i + 11, (e ? (size_t)(e - t) : n) - i - 11);
            char **ids = refs_list(c, v, 1);
            m->dsn.original_message_id = ids[0];
            free(ids);
            free(v);
        }
    }
}

static void automatic(struct mctx *c, GMimeObject *top)
{
    struct sb_mime_msg *m = c->m;
    const char *v;
    char *tok;

    if ((v = g_mime_object_get_header(top, "Auto-Submitted")) != NULL) {
        tok = token_lower(v, 40);
        if (*tok && strcmp(tok, "no") != 0 && !m->auto_reason)
            m->auto_reason = sb_asprintf("auto-submitted: %s", tok);
        free(tok);
    }
    if (!m->auto_reason &&
        (v = g_mime_object_get_header(top, "Precedence")) != NULL) {
        tok = token_lower(v, 40);
        if (strcmp(tok, "bulk") == 0 || strcmp(tok, "junk") == 0 ||
            strcmp(tok, "list") == 0 || strcmp(tok, "auto-reply") == 0 ||
            strcmp(tok, "auto_reply") == 0)
            m->auto_reason = sb_asprintf("precedence: %s", tok);
        free(tok);
    }
    if (!m->auto_reason && hdr_find(top, "X-Autoreply"))
        m->auto_reason = sb_strdup("x-autoreply");
    if (!m->auto_reason && hdr_find(top, "X-Autorespond"))
        m->auto_reason = sb_strdup("x-autorespond");
    if (!m->auto_reason &&
        (v = g_mime_object_get_header(top, "X-Auto-Response-Suppress"))) {
        if (list_has(v, "all"))
            m->auto_reason = sb_strdup("x-auto-response-suppress: all");
        else if (list_has(v, "oof"))
            m->auto_reason = sb_strdup("x-auto-response-suppress: oof");
    }
    if (!m->auto_reason && m->return_path && !*m->return_path)
        m->auto_reason = sb_strdup("return-path: <>");
    if (!m->auto_reason && m->is_dsn)
        m->auto_reason = sb_strdup("delivery status notification");
    m->automatic = m->auto_reason != NULL;
}

/* ---- the whole message ------------------------------------------------- */

/* The text of a multipart that has no text part: its prologue, unless it
 * is the usual "This is a multi-part message in MIME format." (a
 * multipart without a usable boundary keeps all its content there). */
static void prologue_text(struct mctx *c, GMimeObject *body)
{
    const char *pro;
    struct sb_buf u;
    size_t n;

    if (!body || !GMIME_IS_MULTIPART(body))
        return;
    pro = g_mime_multipart_get_prologue(GMIME_MULTIPART(body));
    n = pro ? strlen(pro) : 0;
    if (!n || ci_find(pro, n, "MIME format") ||
        ci_find(pro, n, "multi-part message") ||
        ci_find(pro, n, "multipart message"))
        return;
    sb_buf_init(&u, 0);
    decode_bytes(c, NULL, pro, n, &u);
    clean_text(&c->text, u.data ? u.data : "", u.len);
    sb_buf_free(&u);
}

static void fill_text(struct mctx *c)
{
    struct sb_mime_msg *m = c->m;
    struct sb_buf t;
    const char *p = c->text.data ? c->text.data : "";
    size_t n = c->text.len;
    int blank = 1;

    for (size_t i = 0; i < n && blank; i++)
        blank = isspace((unsigned char)p[i]) != 0;
    sb_buf_init(&t, 0);
    sb_buf_append(&t, "", 0);
    if (blank && c->html.len) {
        struct sb_buf h;
        sb_buf_init(&h, 0);
        html_to_text(c->html.data, c->html.len, &h);
        clean_text(&t, h.data ? h.data : "", h.len);
        sb_buf_free(&h);
        m->text_from_html = 1;
    } else {
        sb_buf_append(&t, p, n);
    }
    m->text_truncated = cut_utf8(&t, c->lim.max_text);
    m->quote_offset = quote_start(t.data, t.len);
    m->text = sb_buf_steal(&t, NULL);
    if (c->html.len) {
        m->text_truncated |= cut_utf8(&c->html, c->lim.max_text);
        m->html = sb_buf_steal(&c->html, NULL);
    }
}

static int parse_message(struct mctx *c, GMimeMessage *msg)
{
    struct sb_mime_msg *m = c->m;
    GMimeObject *top = GMIME_OBJECT(msg);
    GMimeObject *body = g_mime_message_get_mime_part(msg);
    GMimeHeaderList *hl = g_mime_object_get_header_list(top);
    GDateTime *date;
    char **irt;

    if ((!hl || g_mime_header_list_get_count(hl) == 0) &&
        (!body ||
         !g_mime_header_list_get_count(g_mime_object_get_header_list(body))))
        return refuse(c, "no header");
    if (check_headers(c, top) < 0)
        return -1;
    c->parts = 0;
    if (body && walk(c, body, 0, 0, NULL) < 0)
        return -1;
    m->parts = c->parts;

    m->message_id = id_clean(g_mime_message_get_message_id(msg));
    irt = refs_list(c, hdr_raw(top, "In-Reply-To"), 1);
    m->in_reply_to = irt[0];
    free(irt);
    m->references = refs_list(c, hdr_raw(top, "References"), 0);
    hdr_addr1(c, top, "From", &m->from);
    hdr_addr1(c, top, "Reply-To", &m->reply_to);
    hdr_addrs(c, top, "To", &m->to, &m->nto);
    hdr_addrs(c, top, "Cc", &m->cc, &m->ncc);
    m->return_path = return_path(top);
    m->subject = hdr_text(c, hdr_raw(top, "Subject"));
    if (c->text.len == 0 && c->html.len == 0)
        prologue_text(c, body);
    date = g_mime_message_get_date(msg);
    if (date)
        m->date_ms = g_date_time_to_unix(date) * 1000 +
                     g_date_time_get_microsecond(date) / 1000;
    fill_text(c);

    if (c->dsn_seen || bounce_shape(m)) {
        m->is_dsn = 1;
        if (c->returned_id) {
            m->dsn.original_message_id = c->returned_id;
            c->returned_id = NULL;
        }
        if (!m->dsn.status || !m->dsn.recipient || !m->dsn.original_message_id)
            bounce_guess(c);
    }
    automatic(c, top);
    m->charsets = sb_calloc((size_t)c->ncharsets + 1, sizeof(char *));
    for (int i = 0; i < c->ncharsets; i++) {
        m->charsets[i] = c->charsets[i];
        c->charsets[i] = NULL;
    }
    return 0;
}

int sb_mime_parse(const char *raw, size_t len, const struct sb_mime_limits *lim,
                  struct sb_mime_msg *out, char *err, size_t errlen)
{
    struct sb_mime_limits def;
    struct mctx c;
    GByteArray *copy = NULL;
    GMimeStream *st = NULL;
    GMimeParser *parser = NULL;
    GMimeMessage *msg = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (err && errlen)
        err[0] = '\0';
    memset(&c, 0, sizeof(c));
    sb_mime_limits_default(&def);
    c.lim = lim ? *lim : def;
    /* a zero limit means the default (but max_attachment 0: keep no
     * content at all) */
    if (!c.lim.max_size)
        c.lim.max_size = def.max_size;
    if (!c.lim.max_header)
        c.lim.max_header = def.max_header;
    if (c.lim.max_depth <= 0)
        c.lim.max_depth = def.max_depth;
    if (c.lim.max_depth > SB_MIME_DEPTH_CAP)
        c.lim.max_depth = SB_MIME_DEPTH_CAP;
    if (c.lim.max_parts <= 0)
        c.lim.max_parts = def.max_parts;
    if (!c.lim.max_text)
        c.lim.max_text = def.max_text;
    c.fallbacks =
        c.lim.fallback_charsets ? c.lim.fallback_charsets : default_fallbacks;
    c.m = out;
    c.err = err;
    c.errlen = errlen;
    c.m->quote_offset = -1;
    sb_buf_init(&c.text, 0);
    sb_buf_init(&c.html, 0);

    if (len > c.lim.max_size || len >= G_MAXUINT) {
        refuse(&c, "too large: %zu bytes", len);
        goto done;
    }
    if (!raw || len == 0) {
        refuse(&c, "no header");
        goto done;
    }
    if (len >= 3 && memcmp(raw, "\xef\xbb\xbf", 3) == 0) {
        raw += 3; /* a byte-order mark before the header */
        len -= 3;
        if (len == 0) {
            refuse(&c, "no header");
            goto done;
        }
    }
    sb_mime_init();
    c.opts = g_mime_parser_options_new();
    g_mime_parser_options_set_fallback_charsets(c.opts,
                                                (const char **)c.fallbacks);
    g_mime_parser_options_set_rfc2047_compliance_mode(
        c.opts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_address_compliance_mode(
        c.opts, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_parameter_compliance_mode(
        c.opts, GMIME_RFC_COMPLIANCE_LOOSE);

    /* GMime gives up on input that ends inside a header field name: a
     * final newline lets it see the field as broken instead. */
    copy = g_byte_array_sized_new((guint)len + 1);
    g_byte_array_append(copy, (const guint8 *)raw, (guint)len);
    if (raw[len - 1] != '\n')
        g_byte_array_append(copy, (const guint8 *)"\n", 1);
    /* NUL in the top-level header would cut a GMime header value short */
    for (size_t i = 0; i < copy->len; i++) {
        if (copy->data[i] == '\0')
            copy->data[i] = ' ';
        else if (copy->data[i] == '\n' && i + 1 < copy->len &&
                 (copy->data[i + 1] == '\n' ||
                  (copy->data[i + 1] == '\r' && i + 2 < copy->len &&
                   copy->data[i + 2] == '\n')))
            break;
    }
    if (prescan(&c, (const char *)copy->data, copy->len) < 0) {
        g_byte_array_free(copy, TRUE);
        goto done;
    }
    st = g_mime_stream_mem_new_with_byte_array(copy); /* owns copy */
    parser = g_mime_parser_new_with_stream(st);
    g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
    msg = g_mime_parser_construct_message(parser, c.opts);
    if (!msg) {
        refuse(&c, "no header");
        goto done;
    }
    rc = parse_message(&c, msg);

done:
    if (msg)
        g_object_unref(msg);
    if (parser)
        g_object_unref(parser);
    if (st)
        g_object_unref(st);
    if (c.opts)
        g_mime_parser_options_free(c.opts);
    sb_buf_free(&c.text);
    sb_buf_free(&c.html);
    for (int i = 0; i < c.ncharsets; i++)
        free(c.charsets[i]);
    free(c.returned_id);
    if (rc < 0) {
        sb_mime_free(out);
        if (err && errlen && !err[0])
            snprintf(err, errlen, "unparseable");
        return -1;
    }
    return 0;
}

static void addr_free(struct sb_mime_addr *a)
{
    free(a->name);
    free(a->addr);
}

void sb_mime_free(struct sb_mime_msg *m)
{
    if (!m)
        return;
    free(m->message_id);
    free(m->in_reply_to);
    for (char **p = m->references; p && *p; p++)
        free(*p);
    free(m->references);
    addr_free(&m->from);
    addr_free(&m->reply_to);
    for (size_t i = 0; i < m->nto; i++)
        addr_free(&m->to[i]);
    free(m->to);
    for (size_t i = 0; i < m->ncc; i++)
        addr_free(&m->cc[i]);
    free(m->cc);
    free(m->return_path);
    free(m->subject);
    free(m->text);
    free(m->html);
    for (size_t i = 0; i < m->natts; i++) {
        free(m->atts[i].filename);
        free(m->atts[i].content_type);
        free(m->atts[i].content_id);
        free(m->atts[i].data);
    }
    free(m->atts);
    free(m->auto_reason);
    free(m->dsn.original_message_id);
    free(m->dsn.recipient);
    free(m->dsn.action);
    free(m->dsn.status);
    free(m->dsn.diagnostic);
    for (char **p = m->charsets; p && *p; p++)
        free(*p);
    free(m->charsets);
    memset(m, 0, sizeof(*m));
}
