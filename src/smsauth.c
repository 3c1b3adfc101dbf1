/* smsauth.c - Twilio webhook signatures and form-encoded bodies.
 *
 * SHA-1 follows FIPS 180-4 section 6.1 word for word (80 rounds over a
 * 16-word block expanded into W[0..79]); HMAC follows RFC 2104 with a
 * 64-byte block. The signature is computed streaming, so a large form is
 * never copied into one string: HMAC's inner hash takes the URL and then
 * each sorted name and value. Base64 and the constant-time comparison come
 * from libsodium. Nothing here logs: tokens and webhook bodies are secret
 * or private, and the caller decides what a refusal means (a 403 and a
 * metric).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "smsauth.h"
#include "util.h"

/* ---- SHA-1 ------------------------------------------------------------- */

struct sha1_ctx {
    uint32_t h[5];
    uint64_t total; /* bytes hashed so far */
    unsigned char block[64];
    size_t used;
};

static uint32_t rotl(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_init(struct sha1_ctx *c)
{
    c->h[0] = 0x67452301;
    c->h[1] = 0xefcdab89;
    c->h[2] = 0x98badcfe;
    c->h[3] = 0x10325476;
    c->h[4] = 0xc3d2e1f0;
    c->total = 0;
    c->used = 0;
}

static void sha1_block(struct sha1_ctx *c, const unsigned char *p)
{
    uint32_t w[80], a, b, d, e, f, k, t, cc;

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    a = c->h[0];
    b = c->h[1];
    cc = c->h[2];
    d = c->h[3];
    e = c->h[4];
    for (int i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & cc) | (~b & d);
            k = 0x5a827999;
        } else if (i < 40) {
            f = b ^ cc ^ d;
            k = 0x6ed9eba1;
        } else if (i < 60) {
            f = (b & cc) | (b & d) | (cc & d);
            k = 0x8f1bbcdc;
        } else {
            f = b ^ cc ^ d;
            k = 0xca62c1d6;
        }
        t = rotl(a, 5) + f + e + k + w[i];
        e = d;
        d = cc;
        cc = rotl(b, 30);
        b = a;
        a = t;
    }
    c->h[0] += a;
    c->h[1] += b;
    c->h[2] += cc;
    c->h[3] += d;
    c->h[4] += e;
}

static void sha1_update(struct sha1_ctx *c, const void *data, size_t len)
{
    const unsigned char *p = data;

    c->total += len;
    if (c->used) {
        size_t take = 64 - c->used < len ? 64 - c->used : len;

        memcpy(c->block + c->used, p, take);
        c->used += take;
        p += take;
        len -= take;
        if (c->used < 64)
            return;
        sha1_block(c, c->block);
        c->used = 0;
    }
    for (; len >= 64; p += 64, len -= 64)
        sha1_block(c, p);
    if (len) {
        memcpy(c->block, p, len);
        c->used = len;
    }
}

static void sha1_final(struct sha1_ctx *c, unsigned char out[SB_SHA1_LEN])
{
    uint64_t bits = c->total * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (c->used < 56 ? 56 : 120) - c->used;

    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha1_update(c, pad, padlen + 8);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(c->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)c->h[i];
    }
    sodium_memzero(c, sizeof(*c));
}

void sb_sha1(const void *data, size_t len, unsigned char out[SB_SHA1_LEN])
{
    struct sha1_ctx c;

    sha1_init(&c);
    sha1_update(&c, data, len);
    sha1_final(&c, out);
}

/* ---- HMAC-SHA1 --------------------------------------------------------- */

struct hmac_ctx {
    struct sha1_ctx inner;
    unsigned char opad[64];
};

static void hmac_init(struct hmac_ctx *h, const void *key, size_t keylen)
{
    unsigned char k[64] = {0}, ipad[64];

    if (keylen > 64)
        sb_sha1(key, keylen, k);
    else if (keylen)
        memcpy(k, key, keylen);
    for (int i = 0; i < 64; i++) {
        ipad[i] = k[i] ^ 0x36;
        h->opad[i] = k[i] ^ 0x5c;
    }
    sha1_init(&h->inner);
    sha1_update(&h->inner, ipad, sizeof(ipad));
    sodium_memzero(k, sizeof(k));
    sodium_memzero(ipad, sizeof(ipad));
}

static void hmac_final(struct hmac_ctx *h, unsigned char out[SB_SHA1_LEN])
{
    struct sha1_ctx outer;
    unsigned char ih[SB_SHA1_LEN];

    sha1_final(&h->inner, ih);
    sha1_init(&outer);
    sha1_update(&outer, h->opad, sizeof(h->opad));
    sha1_update(&outer, ih, sizeof(ih));
    sha1_final(&outer, out);
    sodium_memzero(h, sizeof(*h));
}

void sb_hmac_sha1(const void *key, size_t keylen, const void *data, size_t len,
                  unsigned char out[SB_SHA1_LEN])
{
    struct hmac_ctx h;

    hmac_init(&h, key, keylen);
    sha1_update(&h.inner, data, len);
    hmac_final(&h, out);
}

/* ---- Twilio signature -------------------------------------------------- */

struct param {
    const char *name;
    const char *value;
};

static int param_cmp(const void *a, const void *b)
{
    const struct param *x = a, *y = b;
    int r = strcmp(x->name, y->name);

    return r ? r : strcmp(x->value, y->value);
}

int sb_twilio_signature(const char *token, const char *url,
                        const char *const *names, const char *const *values,
                        size_t n, char out[SB_TWILIO_SIG_LEN + 1])
{
    struct param *ps = NULL;
    struct hmac_ctx h;
    unsigned char mac[SB_SHA1_LEN];

    if (!token || !url || (n && (!names || !values)))
        return -1;
    if (n) {
        ps = sb_calloc(n, sizeof(*ps));
        for (size_t i = 0; i < n; i++) {
            if (!names[i] || !values[i]) {
                free(ps);
                return -1;
            }
            ps[i].name = names[i];
            ps[i].value = values[i];
        }
        qsort(ps, n, sizeof(*ps), param_cmp);
    }
    hmac_init(&h, token, strlen(token));
    sha1_update(&h.inner, url, strlen(url));
    for (size_t i = 0; i < n; i++) {
        sha1_update(&h.inner, ps[i].name, strlen(ps[i].name));
        sha1_update(&h.inner, ps[i].value, strlen(ps[i].value));
    }
    hmac_final(&h, mac);
    free(ps);
    sodium_bin2base64(out, SB_TWILIO_SIG_LEN + 1, mac, sizeof(mac),
                      sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

int sb_twilio_url_alt(const char *url, char *out, size_t outlen)
{
    const char *def, *auth, *end, *host, *colon = NULL;
    size_t need;

    if (!url)
        return -1;
    if (strncasecmp(url, "https://", 8) == 0) {
        def = "443";
        auth = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        def = "80";
        auth = url + 7;
    } else {
        return -1;
    }
    end = auth + strcspn(auth, "/?#");
    host = auth;
    for (const char *p = auth; p < end; p++)
        if (*p == '@')
            host = p + 1; /* skip user:password@ */
    if (host < end && *host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));

        if (!rb)
            return -1;
        if (rb + 1 < end) {
            if (rb[1] != ':')
                return -1;
            colon = rb + 1;
        }
    } else {
        for (const char *p = host; p < end; p++)
            if (*p == ':')
                colon = p;
    }
    if (host == end)
        return -1;
    if (colon) {
        /* Only the default port can be dropped. */
        size_t plen = (size_t)(end - colon - 1);

        if (plen != strlen(def) || memcmp(colon + 1, def, plen) != 0)
            return -1;
        need = strlen(url) - plen - 1;
        if (need + 1 > outlen)
            return -1;
        memcpy(out, url, (size_t)(colon - url));
        strcpy(out + (colon - url), end);
        return 0;
    }
    need = strlen(url) + 1 + strlen(def);
    if (need + 1 > outlen)
        return -1;
    memcpy(out, url, (size_t)(end - url));
    out[end - url] = ':';
    strcpy(out + (end - url) + 1, def);
    strcat(out, end);
    return 0;
}

static int sig_matches(const char *token, const char *url,
                       const char *const *names, const char *const *values,
                       size_t n, const char *header)
{
    char sig[SB_TWILIO_SIG_LEN + 1];

    if (sb_twilio_signature(token, url, names, values, n, sig) < 0)
        return 0;
    return sodium_memcmp(sig, header, SB_TWILIO_SIG_LEN) == 0;
}

int sb_twilio_verify(const char *token, const char *url,
                     const char *const *names, const char *const *values,
                     size_t n, const char *header)
{
    size_t alen;
    char *alt;
    int ok;

    if (!header || strlen(header) != SB_TWILIO_SIG_LEN || !url)
        return 0;
    ok = sig_matches(token, url, names, values, n, header);
    alen = strlen(url) + 8;
    alt = sb_malloc(alen);
    if (sb_twilio_url_alt(url, alt, alen) == 0)
        ok |= sig_matches(token, alt, names, values, n, header);
    free(alt);
    return ok;
}

/* ---- application/x-www-form-urlencoded -------------------------------- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode n bytes of src into dst; returns the decoded length or -1 on an
 * invalid escape. dst has room for n bytes. */
static long form_decode(const char *src, size_t n, char *dst)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];

        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi, lo;

            if (i + 2 >= n)
                return -1;
            hi = hexval((unsigned char)src[i + 1]);
            lo = hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        dst[o++] = (char)c;
    }
    return (long)o;
}

static int form_fail(struct sb_form *form, const char **why, const char *reason)
{
    sb_form_free(form);
    if (why)
        *why = reason;
    return -1;
}

/* The next non-empty pair of data[*pos..len): its start and length;
 * advances *pos past it. 0 at the end. */
static int next_pair(const char *data, size_t len, size_t *pos,
                     const char **start, size_t *n)
{
    while (*pos < len) {
        const char *p = data + *pos;
        const char *amp = memchr(p, '&', len - *pos);
        size_t k = amp ? (size_t)(amp - p) : len - *pos;

        *pos += k + (amp ? 1 : 0);
        if (k) {
            *start = p;
            *n = k;
            return 1;
        }
    }
    return 0;
}

int sb_form_parse(const char *data, size_t len, size_t max_fields,
                  size_t max_bytes, struct sb_form *form, const char **why)
{
    size_t count = 0, pos = 0, o = 0, k;
    const char *p;

    memset(form, 0, sizeof(*form));
    if (max_fields == 0)
        max_fields = SB_FORM_MAX_FIELDS;
    if (max_bytes == 0)
        max_bytes = SB_FORM_MAX_BYTES;
    if (len > max_bytes)
        return form_fail(form, why, "form too large");
    if (!data && len)
        return form_fail(form, why, "no data");
    while (next_pair(data, len, &pos, &p, &k))
        if (++count > max_fields)
            return form_fail(form, why, "too many form fields");
    if (count == 0)
        return 0;

    /* A pair of k bytes decodes to at most k bytes plus two NULs. */
    form->mem = sb_malloc(len + 2 * count);
    form->names = sb_calloc(count, sizeof(*form->names));
    form->values = sb_calloc(count, sizeof(*form->values));
    form->value_lens = sb_calloc(count, sizeof(*form->value_lens));
    pos = 0;
    while (next_pair(data, len, &pos, &p, &k)) {
        const char *eq = memchr(p, '=', k);
        size_t nk = eq ? (size_t)(eq - p) : k;
        char *name = form->mem + o, *value;
        long nl, vl;

        nl = form_decode(p, nk, name);
        if (nl < 0)
            return form_fail(form, why, "invalid percent escape");
        if (nl == 0)
            return form_fail(form, why, "empty form field name");
        if (memchr(name, '\0', (size_t)nl))
            return form_fail(form, why, "NUL in a form field name");
        name[nl] = '\0';
        o += (size_t)nl + 1;
        value = form->mem + o;
        vl = eq ? form_decode(eq + 1, k - nk - 1, value) : 0;
        if (vl < 0)
            return form_fail(form, why, "invalid percent escape");
        value[vl] = '\0';
        o += (size_t)vl + 1;
        form->names[form->n] = name;
        form->values[form->n] = value;
        form->value_lens[form->n] = (size_t)vl;
        form->n++;
    }
    return 0;
}

const char *sb_form_get(const struct sb_form *form, const char *name,
                        size_t *len)
{
    if (!form || !name)
        return NULL;
    for (size_t i = 0; i < form->n; i++) {
        if (strcmp(form->names[i], name) == 0) {
            if (len)
                *len = form->value_lens[i];
            return form->values[i];
        }
    }
    return NULL;
}

void sb_form_free(struct sb_form *form)
{
    if (!form)
        return;
    free(form->mem);
    free(form->names);
    free(form->values);
    free(form->value_lens);
    memset(form, 0, sizeof(*form));
}
