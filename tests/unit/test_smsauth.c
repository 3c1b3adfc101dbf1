/* test_smsauth.c - SHA-1, HMAC-SHA1, Twilio signatures, form bodies.
 *
 * SHA-1 against the FIPS 180-4 examples ("abc", the two-block messages, a
 * million 'a') and lengths around the padding boundaries; HMAC-SHA1 against
 * RFC 2202. The Twilio signature against the published vector in both URL
 * forms, then against a one-shot HMAC of the concatenation the rules
 * describe (sorting, repeated names, empty values, long URLs across block
 * boundaries). Forgeries of every kind must fail. The form parser is
 * table-driven, edge cases and limits included, and feeds a signature
 * check the way the webhook will.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smsauth.h"

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void check_sha1(const void *data, size_t len, const char *want)
{
    unsigned char md[SB_SHA1_LEN];
    char hex[2 * SB_SHA1_LEN + 1];

    sb_sha1(data, len, md);
    to_hex(md, sizeof(md), hex);
    if (strcmp(hex, want) != 0)
        print_error("sha1 of %zu bytes: %s, want %s\n", len, hex, want);
    assert_string_equal(hex, want);
}

static void test_sha1_fips(void **state)
{
    static const char two_block[] =
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    size_t million = 1000000;
    char *a = malloc(million);

    (void)state;
    check_sha1("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
    check_sha1("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    check_sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
               "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    check_sha1(two_block, strlen(two_block),
               "a49b2446a02c645bf419f995b67091253a04a259");
    assert_non_null(a);
    memset(a, 'a', million);
    check_sha1(a, million, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(a);
}

static void test_sha1_padding(void **state)
{
    static const struct {
        size_t n;
        const char *md;
    } cases[] = {
        {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
        {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
        {57, "f08f24908d682555111be7ff6f004e78283d989a"},
        {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
        {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
        {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
        {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
        {120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
        {128, "ad5b3fdbcb526778c2839d2f151ea753995e26a0"},
    };
    char a[128];

    (void)state;
    memset(a, 'a', sizeof(a));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_sha1(a, cases[i].n, cases[i].md);
}

static void check_hmac(const void *key, size_t klen, const void *data,
                       size_t dlen, const char *want)
{
    unsigned char md[SB_SHA1_LEN];
    char hex[2 * SB_SHA1_LEN + 1];

    sb_hmac_sha1(key, klen, data, dlen, md);
    to_hex(md, sizeof(md), hex);
    assert_string_equal(hex, want);
}

static void test_hmac_rfc2202(void **state)
{
    unsigned char k[80], d[50];
    static const char big1[] =
        "Test Using Larger Than Block-Size Key - Hash Key First";
    static const char big2[] = "Test Using Larger Than Block-Size Key and "
                               "Larger Than One Block-Size Data";

    (void)state;
    memset(k, 0x0b, 20);
    check_hmac(k, 20, "Hi There", 8,
               "b617318655057264e28bc0b6fb378c8ef146be00");
    check_hmac("Jefe", 4, "what do ya want for nothing?", 28,
               "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    memset(k, 0xaa, 20);
    memset(d, 0xdd, 50);
    check_hmac(k, 20, d, 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3");
    memset(k, 0xaa, 80);
    check_hmac(k, 80, big1, strlen(big1),
               "aa4ae5e15272d00e95705637ce8a3b55ed402112");
    check_hmac(k, 80, big2, strlen(big2),
               "e8e99d0f45237d786d6bbaa7965c7808bbff1a91");
}

/* ---- Twilio ------------------------------------------------------------ */

#define TOKEN "12345"
#define URL "https://mycompany.com/myapp.php?foo=1&bar=2"
#define URL443 "https://mycompany.com:443/myapp.php?foo=1&bar=2"
#define SIG "RSOYDt4T1cUTdK1PDd93/VVr8B8="
#define SIG443 "kvajT1Ptam85bY51eRf/AJRuM3w="

/* The vector's parameters, deliberately not in sorted order. */
static const char *const vnames[] = {"To", "Digits", "CallSid", "From",
                                     "Caller"};
static const char *const vvalues[] = {"+18005551212", "1234",
                                      "CA1234567890ABCDE", "+14158675309",
                                      "+14158675309"};

static void test_twilio_vectors(void **state)
{
    char sig[SB_TWILIO_SIG_LEN + 1];

    (void)state;
    assert_int_equal(sb_twilio_signature(TOKEN, URL, vnames, vvalues, 5, sig),
                     0);
    assert_string_equal(sig, SIG);
    assert_int_equal(
        sb_twilio_signature(TOKEN, URL443, vnames, vvalues, 5, sig), 0);
    assert_string_equal(sig, SIG443);

    /* each header verifies against either configured form */
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 5, SIG), 1);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 5, SIG443),
                     1);
    assert_int_equal(sb_twilio_verify(TOKEN, URL443, vnames, vvalues, 5, SIG),
                     1);
    assert_int_equal(
        sb_twilio_verify(TOKEN, URL443, vnames, vvalues, 5, SIG443), 1);
}

static void test_twilio_forged(void **state)
{
    static const char *const v2[] = {"+18005551212", "1235",
                                     "CA1234567890ABCDE", "+14158675309",
                                     "+14158675309"};
    static const char *const n6[] = {"To",   "Digits", "CallSid",
                                     "From", "Caller", "Extra"};
    static const char *const v6[] = {"+18005551212",      "1234",
                                     "CA1234567890ABCDE", "+14158675309",
                                     "+14158675309",      ""};
    char bad[SB_TWILIO_SIG_LEN + 2];

    (void)state;
    /* one character of the signature changed, at each position */
    for (size_t i = 0; i < SB_TWILIO_SIG_LEN; i++) {
        strcpy(bad, SIG);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 5, bad),
                         0);
    }
    /* wrong token, value, extra parameter, missing parameter, other URL */
    assert_int_equal(sb_twilio_verify("12346", URL, vnames, vvalues, 5, SIG),
                     0);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, v2, 5, SIG), 0);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, n6, v6, 6, SIG), 0);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 4, SIG), 0);
    assert_int_equal(sb_twilio_verify(TOKEN,
                                      "https://mycompany.com/myapp.php?"
                                      "foo=1&bar=3",
                                      vnames, vvalues, 5, SIG),
                     0);
    assert_int_equal(sb_twilio_verify(TOKEN,
                                      "http://mycompany.com/myapp.php?"
                                      "foo=1&bar=2",
                                      vnames, vvalues, 5, SIG),
                     0);
    /* a port other than the default is not the same URL */
    assert_int_equal(sb_twilio_verify(TOKEN,
                                      "https://mycompany.com:8443/myapp.php?"
                                      "foo=1&bar=2",
                                      vnames, vvalues, 5, SIG),
                     0);
    /* missing, empty, short, long, padded headers */
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 5, NULL), 0);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 5, ""), 0);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 5,
                                      "RSOYDt4T1cUTdK1PDd93/VVr8B8"),
                     0);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 5,
                                      "RSOYDt4T1cUTdK1PDd93/VVr8B8=="),
                     0);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, vnames, vvalues, 5,
                                      " RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                     0);
    /* NULL arguments: refused, never a match */
    assert_int_equal(sb_twilio_verify(NULL, URL, vnames, vvalues, 5, SIG), 0);
    assert_int_equal(sb_twilio_verify(TOKEN, NULL, vnames, vvalues, 5, SIG), 0);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, NULL, NULL, 5, SIG), 0);
}

/* Expected signature computed the long way: build the string, one HMAC. */
static void expect_concat(const char *url, const char *concat_params, char *out)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t ul = strlen(url), pl = strlen(concat_params);
    char *s = malloc(ul + pl + 1);
    unsigned char md[SB_SHA1_LEN + 1] = {0};
    size_t o = 0;

    assert_non_null(s);
    memcpy(s, url, ul);
    memcpy(s + ul, concat_params, pl + 1);
    sb_hmac_sha1(TOKEN, 5, s, ul + pl, md);
    free(s);
    /* base64 by hand: 20 bytes = 6 full groups + 2 bytes + "=" */
    for (size_t i = 0; i < 21; i += 3) {
        uint32_t v = (uint32_t)md[i] << 16 | (uint32_t)md[i + 1] << 8 |
                     (i + 2 < 20 ? md[i + 2] : 0);

        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = b64[v >> 6 & 63];
        out[o++] = i + 2 < 20 ? b64[v & 63] : '=';
    }
    out[o] = '\0';
}

static void test_twilio_rules(void **state)
{
    /* repeated names sort by value; empty values add just the name;
     * names compare bytewise ("B" < "a", "a" < "ab") */
    static const char *const n[] = {"b", "a", "ab", "a", "B", "Empty"};
    static const char *const v[] = {"2", "y", "0", "x", "z", ""};
    char sig[SB_TWILIO_SIG_LEN + 1], want[SB_TWILIO_SIG_LEN + 1];
    char url[300];

    (void)state;
    expect_concat(URL, "BzEmptyaxayab0b2", want);
    assert_int_equal(sb_twilio_signature(TOKEN, URL, n, v, 6, sig), 0);
    assert_string_equal(sig, want);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, n, v, 6, want), 1);

    /* the vector's own concatenation, no parameters, and URLs of every
     * length across the SHA-1 block boundaries */
    expect_concat(URL,
                  "CallSidCA1234567890ABCDECaller+14158675309Digits1234"
                  "From+14158675309To+18005551212",
                  want);
    assert_string_equal(want, SIG);
    for (size_t len = 8; len < 200; len++) {
        memset(url, 'x', len);
        memcpy(url, "https://", 8);
        url[len] = '\0';
        expect_concat(url, "", want);
        assert_int_equal(sb_twilio_signature(TOKEN, url, NULL, NULL, 0, sig),
                         0);
        assert_string_equal(sig, want);
        expect_concat(url, "a1", want);
        assert_int_equal(
            sb_twilio_signature(TOKEN, url, (const char *const[]){"a"},
                                (const char *const[]){"1"}, 1, sig),
            0);
        assert_string_equal(sig, want);
    }
    /* NULL entries are refused */
    assert_int_equal(
        sb_twilio_signature(TOKEN, URL, (const char *const[]){"a", NULL},
                            (const char *const[]){"1", "2"}, 2, sig),
        -1);
    assert_int_equal(
        sb_twilio_signature(TOKEN, URL, (const char *const[]){"a", "b"},
                            (const char *const[]){"1", NULL}, 2, sig),
        -1);
    assert_int_equal(sb_twilio_signature(NULL, URL, NULL, NULL, 0, sig), -1);
}

static void test_twilio_http_port(void **state)
{
    char sig[SB_TWILIO_SIG_LEN + 1];
    const char *n[] = {"MessageSid", "Body"};
    const char *v[] = {"SM1", "hi"};

    (void)state;
    assert_int_equal(
        sb_twilio_signature(TOKEN, "http://h.example:80/sms", n, v, 2, sig), 0);
    assert_int_equal(
        sb_twilio_verify(TOKEN, "http://h.example/sms", n, v, 2, sig), 1);
    /* :443 is not the default port of http */
    assert_int_equal(
        sb_twilio_signature(TOKEN, "http://h.example:443/sms", n, v, 2, sig),
        0);
    assert_int_equal(
        sb_twilio_verify(TOKEN, "http://h.example/sms", n, v, 2, sig), 0);
}

struct alt_case {
    const char *in;
    const char *want; /* NULL: -1 */
};

static const struct alt_case alt_cases[] = {
    {"https://a.com/x", "https://a.com:443/x"},
    {"https://a.com:443/x?y=1", "https://a.com/x?y=1"},
    {"https://a.com", "https://a.com:443"},
    {"https://a.com:443", "https://a.com"},
    {"https://a.com?q=1", "https://a.com:443?q=1"},
    {"https://a.com#f", "https://a.com:443#f"},
    {"HTTPS://a.com/x", "HTTPS://a.com:443/x"},
    {"http://a.com/x", "http://a.com:80/x"},
    {"http://a.com:80/x", "http://a.com/x"},
    {"http://u:p@h/x", "http://u:p@h:80/x"},
    {"http://u:p@h:80/x", "http://u:p@h/x"},
    {"https://[::1]/x", "https://[::1]:443/x"},
    {"https://[::1]:443/x", "https://[::1]/x"},
    {"https://a.com/x:443", "https://a.com:443/x:443"},
    {"https://a.com:8443/x", NULL},
    {"https://a.com:0443/x", NULL},
    {"https://a.com:/x", NULL},
    {"http://a.com:443/x", NULL},
    {"https://[::1]:8443/x", NULL},
    {"https://[::1/x", NULL},
    {"https:///x", NULL},
    {"https://", NULL},
    {"ftp://a.com/x", NULL},
    {"a.com/x", NULL},
    {"", NULL},
};

static void test_url_alt(void **state)
{
    char out[64], back[64], tiny[19];

    (void)state;
    for (size_t i = 0; i < sizeof(alt_cases) / sizeof(alt_cases[0]); i++) {
        const struct alt_case *c = &alt_cases[i];
        int rc = sb_twilio_url_alt(c->in, out, sizeof(out));

        if (c->want) {
            if (rc != 0)
                print_error("\"%s\": refused\n", c->in);
            assert_int_equal(rc, 0);
            assert_string_equal(out, c->want);
            /* and back */
            assert_int_equal(sb_twilio_url_alt(out, back, sizeof(back)), 0);
            assert_string_equal(back, c->in);
        } else {
            if (rc == 0)
                print_error("\"%s\": gave \"%s\"\n", c->in, out);
            assert_int_equal(rc, -1);
        }
    }
    /* one byte short, exactly big enough */
    assert_int_equal(sb_twilio_url_alt("https://a.com/x", tiny, sizeof(tiny)),
                     -1);
    assert_int_equal(sb_twilio_url_alt("https://a.com/x", out, 20), 0);
    assert_string_equal(out, "https://a.com:443/x");
    assert_int_equal(sb_twilio_url_alt("https://a.com:443/x", out, 16), 0);
    assert_int_equal(sb_twilio_url_alt("https://a.com:443/x", out, 15), -1);
    assert_int_equal(sb_twilio_url_alt(NULL, out, sizeof(out)), -1);
}

/* ---- forms ------------------------------------------------------------- */

struct form_case {
    const char *in;
    const char *want; /* "name=value|..." with values as C strings, or NULL
                         when refused */
    const char *why;  /* fragment of the reason when refused */
};

static const struct form_case form_cases[] = {
    {"a=1&b=2", "a=1|b=2|", NULL},
    {"a=hello+world&b=%41%42%e2%82%AC", "a=hello world|b=AB\xe2\x82\xac|",
     NULL},
    {"a=1&&b=2&", "a=1|b=2|", NULL},
    {"&&&", "", NULL},
    {"", "", NULL},
    {"flag", "flag=|", NULL},
    {"a=", "a=|", NULL},
    {"a=b=c", "a=b=c|", NULL},
    {"a=1&a=2", "a=1|a=2|", NULL},
    {"%2B=%2b&sp%20ace=x+y%2Bz", "+=+|sp ace=x y+z|", NULL},
    {"Body=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82",
     "Body=\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82|", NULL},
    {"a=%25", "a=%|", NULL},
    {"a=%26b%3Dc", "a=&b=c|", NULL},
    {"=x", NULL, "empty form field name"},
    {"a=1&=x", NULL, "empty form field name"},
    {"%", NULL, "invalid percent escape"},
    {"a=%", NULL, "invalid percent escape"},
    {"a=%4", NULL, "invalid percent escape"},
    {"a=%4&b=1", NULL, "invalid percent escape"},
    {"a=%zz", NULL, "invalid percent escape"},
    {"a=%g0", NULL, "invalid percent escape"},
    {"a%=1", NULL, "invalid percent escape"},
    {"a=1&b=%x1", NULL, "invalid percent escape"},
    {"%00=x", NULL, "NUL in a form field name"},
    {"a%00b=x", NULL, "NUL in a form field name"},
};

/* The fields as "name=value|..." (values up to their first NUL). */
static void form_render(const struct sb_form *f, char *out, size_t outlen)
{
    size_t o = 0;

    out[0] = '\0';
    for (size_t i = 0; i < f->n; i++) {
        int k =
            snprintf(out + o, outlen - o, "%s=%s|", f->names[i], f->values[i]);

        assert_true(k > 0 && (size_t)k < outlen - o);
        assert_int_equal(strlen(f->values[i]), f->value_lens[i]);
        o += (size_t)k;
    }
}

static void test_form_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(form_cases) / sizeof(form_cases[0]); i++) {
        const struct form_case *c = &form_cases[i];
        struct sb_form f;
        const char *why = NULL;
        char got[256];
        int rc = sb_form_parse(c->in, strlen(c->in), 0, 0, &f, &why);

        if (c->want) {
            if (rc != 0)
                print_error("form \"%s\": refused (%s)\n", c->in, why);
            assert_int_equal(rc, 0);
            form_render(&f, got, sizeof(got));
            if (strcmp(got, c->want) != 0)
                print_error("form \"%s\": %s, want %s\n", c->in, got, c->want);
            assert_string_equal(got, c->want);
        } else {
            if (rc == 0)
                print_error("form \"%s\": accepted\n", c->in);
            assert_int_equal(rc, -1);
            assert_non_null(why);
            assert_string_equal(why, c->why);
            assert_int_equal(f.n, 0);
            assert_null(f.mem);
        }
        sb_form_free(&f);
    }
}

static void test_form_binary_and_get(void **state)
{
    /* Kannel's UTF-16BE text, percent-encoded: "Жa" = 04 16 00 61 */
    static const char body[] = "coding=2&text=%04%16%00a&text=second&x";
    struct sb_form f;
    const char *v;
    size_t len = 99;

    (void)state;
    assert_int_equal(sb_form_parse(body, strlen(body), 0, 0, &f, NULL), 0);
    assert_int_equal(f.n, 4);
    v = sb_form_get(&f, "text", &len);
    assert_non_null(v);
    assert_int_equal(len, 4);
    assert_memory_equal(v,
                        "\x04\x16\x00"
                        "a",
                        4);
    assert_int_equal(v[4], '\0');
    assert_string_equal(sb_form_get(&f, "coding", NULL), "2");
    assert_string_equal(sb_form_get(&f, "x", &len), "");
    assert_int_equal(len, 0);
    assert_null(sb_form_get(&f, "missing", &len));
    assert_null(sb_form_get(&f, "Text", NULL));
    assert_null(sb_form_get(&f, NULL, NULL));
    assert_null(sb_form_get(NULL, "text", NULL));
    sb_form_free(&f);
    assert_int_equal(f.n, 0);
    sb_form_free(&f); /* twice is fine */
    sb_form_free(NULL);

    /* the length is what counts: an embedded NUL in the data is data */
    assert_int_equal(sb_form_parse("a=1\0b=2", 7, 0, 0, &f, NULL), 0);
    assert_int_equal(f.n, 1);
    assert_int_equal(f.value_lens[0], 5);
    assert_memory_equal(f.values[0], "1\0b=2", 5);
    sb_form_free(&f);
    assert_int_equal(sb_form_parse(NULL, 0, 0, 0, &f, NULL), 0);
    assert_int_equal(f.n, 0);
    assert_int_equal(sb_form_parse(NULL, 3, 0, 0, &f, NULL), -1);
}

static void test_form_limits(void **state)
{
    struct sb_form f;
    const char *why = NULL;
    char *big = malloc(SB_FORM_MAX_BYTES + 2);
    size_t o = 0;

    (void)state;
    assert_int_equal(sb_form_parse("a=1&b=2&c=3", 11, 3, 0, &f, &why), 0);
    assert_int_equal(f.n, 3);
    sb_form_free(&f);
    assert_int_equal(sb_form_parse("a=1&b=2&c=3", 11, 2, 0, &f, &why), -1);
    assert_string_equal(why, "too many form fields");
    /* empty pairs do not count */
    assert_int_equal(sb_form_parse("a=1&&&&b=2", 10, 2, 0, &f, &why), 0);
    sb_form_free(&f);
    assert_int_equal(sb_form_parse("a=1&b=2&c=3", 11, 0, 11, &f, &why), 0);
    sb_form_free(&f);
    assert_int_equal(sb_form_parse("a=1&b=2&c=3", 11, 0, 10, &f, &why), -1);
    assert_string_equal(why, "form too large");

    /* the defaults: SB_FORM_MAX_FIELDS fields, SB_FORM_MAX_BYTES bytes */
    assert_non_null(big);
    for (int i = 0; i < SB_FORM_MAX_FIELDS; i++)
        o += (size_t)sprintf(big + o, "f%d=%d&", i, i);
    assert_int_equal(sb_form_parse(big, o, 0, 0, &f, &why), 0);
    assert_int_equal(f.n, SB_FORM_MAX_FIELDS);
    assert_string_equal(f.names[SB_FORM_MAX_FIELDS - 1], "f255");
    sb_form_free(&f);
    o += (size_t)sprintf(big + o, "one=more");
    assert_int_equal(sb_form_parse(big, o, 0, 0, &f, &why), -1);
    assert_string_equal(why, "too many form fields");

    memset(big, 'a', SB_FORM_MAX_BYTES + 1);
    big[0] = 'k';
    big[1] = '=';
    assert_int_equal(sb_form_parse(big, SB_FORM_MAX_BYTES, 0, 0, &f, &why), 0);
    assert_int_equal(f.value_lens[0], SB_FORM_MAX_BYTES - 2);
    sb_form_free(&f);
    assert_int_equal(sb_form_parse(big, SB_FORM_MAX_BYTES + 1, 0, 0, &f, &why),
                     -1);
    assert_string_equal(why, "form too large");
    free(big);
}

/* The webhook's path: parse the body, verify with its fields. */
static void test_form_then_verify(void **state)
{
    static const char body[] =
        "To=%2B18005551212&Caller=%2B14158675309&CallSid=CA1234567890ABCDE"
        "&Digits=1234&From=%2B14158675309";
    struct sb_form f;

    (void)state;
    assert_int_equal(sb_form_parse(body, strlen(body), 0, 0, &f, NULL), 0);
    assert_int_equal(f.n, 5);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, (const char *const *)f.names,
                                      (const char *const *)f.values, f.n, SIG),
                     1);
    assert_int_equal(sb_twilio_verify(TOKEN, URL, (const char *const *)f.names,
                                      (const char *const *)f.values, f.n - 1,
                                      SIG),
                     0);
    sb_form_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha1_fips),
        cmocka_unit_test(test_sha1_padding),
        cmocka_unit_test(test_hmac_rfc2202),
        cmocka_unit_test(test_twilio_vectors),
        cmocka_unit_test(test_twilio_forged),
        cmocka_unit_test(test_twilio_rules),
        cmocka_unit_test(test_twilio_http_port),
        cmocka_unit_test(test_url_alt),
        cmocka_unit_test(test_form_table),
        cmocka_unit_test(test_form_binary_and_get),
        cmocka_unit_test(test_form_limits),
        cmocka_unit_test(test_form_then_verify),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
