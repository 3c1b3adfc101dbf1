/* test_normalize.c - e-mail and phone normalisation, table-driven.
 *
 * Each table row is an input, a default country for phones, and either the
 * expected normalised string or NULL with a fragment of the expected
 * reason. Limits (64/65 local part, 254/255 address, 63/64 label, 64/65
 * bytes of phone input) are built in code so the boundary is exact. Every
 * accepted phone number is also checked against ^\+[1-9][0-9]{7,14}$.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "normalize.h"

struct email_case {
    const char *in;
    const char *want; /* NULL: refused */
    const char *why;  /* fragment of the reason when refused */
};

static const struct email_case email_cases[] = {
    {"User@Example.COM", "user@example.com", NULL},
    {"a@b.co", "a@b.co", NULL},
    {"First.Last@Sub.Example.ORG", "first.last@sub.example.org", NULL},
    {"x+tag@example.com", "x+tag@example.com", NULL},
    {"o'brien@example.ie", "o'brien@example.ie", NULL},
    {"a!#$%&'*+/=?^_`{|}~-@example.com", "a!#$%&'*+/=?^_`{|}~-@example.com",
     NULL},
    {"user@xn--80ak6aa92e.com", "user@xn--80ak6aa92e.com", NULL},
    {"user@my-host.example.com", "user@my-host.example.com", NULL},
    {"123@example.com", "123@example.com", NULL},
    {"a@123.example.com", "a@123.example.com", NULL},
    {"a.b.c@e.x", "a.b.c@e.x", NULL},
    {"", NULL, "empty"},
    {"plainaddress", NULL, "missing @"},
    {"a@b@example.com", NULL, "more than one @"},
    {"@example.com", NULL, "empty local part"},
    {"a@", NULL, "empty domain"},
    {".a@example.com", NULL, "starts with a dot"},
    {"a.@example.com", NULL, "ends with a dot"},
    {"a..b@example.com", NULL, "consecutive dots"},
    {"\"john doe\"@example.com", NULL, "quoted"},
    {"\"john\"@example.com", NULL, "quoted"},
    {"John <john@example.com>", NULL, "display name"},
    {"<john@example.com>", NULL, "display name"},
    {"john@example.com (John)", NULL, "comments"},
    {"a@example.com, b@example.com", NULL, "several"},
    {"a@example.com;b@example.com", NULL, "several"},
    {"a@[192.168.0.1]", NULL, "literal"},
    {"a b@example.com", NULL, "space"},
    {" a@example.com", NULL, "space"},
    {"a@example.com ", NULL, "space"},
    {"a\\b@example.com", NULL, "backslash"},
    {"a\tb@example.com", NULL, "control"},
    {"a@example.com\t", NULL, "control"},
    {"a\x01@example.com", NULL, "control"},
    {"a\x7f@example.com", NULL, "control"},
    {"a@exa_mple.com", NULL, "invalid character in domain"},
    {"a@exa!mple.com", NULL, "invalid character in domain"},
    {"a:b@example.com", NULL, "invalid character in local part"},
    {"a@example", NULL, "domain must have a dot"},
    {"a@localhost", NULL, "domain must have a dot"},
    {"a@.example.com", NULL, "empty domain label"},
    {"a@example.com.", NULL, "empty domain label"},
    {"a@example..com", NULL, "empty domain label"},
    {"a@-example.com", NULL, "dash"},
    {"a@example-.com", NULL, "dash"},
    {"-a@example.com", NULL, "dash"},
    {"a@1.2.3.4", NULL, "numeric"},
    {"\xd0\xbf\xd0\xbe\xd1\x87\xd1\x82\xd0\xb0@example.com", NULL, "non-ASCII"},
    {"user@\xd0\xbf\xd1\x80\xd0\xb8\xd0\xbc\xd0\xb5\xd1\x80.ru", NULL,
     "non-ASCII"},
    {"us\xc3\xa9r@example.com", NULL, "non-ASCII"},
    {"user@example.com\xef\xbc\x8e", NULL, "non-ASCII"},
};

static void test_email_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(email_cases) / sizeof(email_cases[0]); i++) {
        const struct email_case *c = &email_cases[i];
        char out[SB_EMAIL_MAX + 1];
        const char *why = NULL;
        int rc = sb_email_normalize(c->in, out, sizeof(out), &why);

        if (c->want) {
            if (rc != 0)
                print_error("case %zu \"%s\": refused (%s)\n", i, c->in,
                            why ? why : "?");
            assert_int_equal(rc, 0);
            assert_string_equal(out, c->want);
            /* the result is a fixed point */
            {
                char again[SB_EMAIL_MAX + 1];
                assert_int_equal(
                    sb_email_normalize(out, again, sizeof(again), &why), 0);
                assert_string_equal(again, out);
            }
        } else {
            if (rc == 0)
                print_error("case %zu \"%s\": accepted as %s\n", i, c->in, out);
            assert_int_equal(rc, -1);
            assert_non_null(why);
            if (!strstr(why, c->why))
                print_error("case %zu \"%s\": reason \"%s\", want \"%s\"\n", i,
                            c->in, why, c->why);
            assert_non_null(strstr(why, c->why));
        }
    }
}

/* n copies of ch, NUL-terminated. */
static void fill(char *p, size_t n, char ch)
{
    memset(p, ch, n);
    p[n] = '\0';
}

static int email_try(const char *in, const char **why)
{
    char out[SB_EMAIL_MAX + 1];
    int rc = sb_email_normalize(in, out, sizeof(out), why);

    if (rc == 0)
        assert_int_equal(strlen(out), strlen(in));
    return rc;
}

static void test_email_limits(void **state)
{
    char local[80], in[400], label[80], small[8];
    const char *why = NULL;
    size_t n;

    (void)state;
    /* local part: 64 accepted, 65 refused */
    fill(local, 64, 'a');
    snprintf(in, sizeof(in), "%s@example.com", local);
    assert_int_equal(email_try(in, &why), 0);
    fill(local, 65, 'a');
    snprintf(in, sizeof(in), "%s@example.com", local);
    assert_int_equal(email_try(in, &why), -1);
    assert_string_equal(why, "local part too long");

    /* label: 63 accepted, 64 refused */
    fill(label, 63, 'b');
    snprintf(in, sizeof(in), "a@%s.com", label);
    assert_int_equal(email_try(in, &why), 0);
    fill(label, 64, 'b');
    snprintf(in, sizeof(in), "a@%s.com", label);
    assert_int_equal(email_try(in, &why), -1);
    assert_string_equal(why, "domain label too long");

    /* whole address: 254 accepted, 255 refused: a 64-byte local part and
     * a domain of two 63-byte labels, one of k bytes and "com". */
    for (size_t total = 250; total <= 256; total++) {
        char l3[64];
        size_t k = total - 65 - 132; /* 63 + 1 + 63 + 1 + k + 4 */

        fill(local, 64, 'c');
        fill(label, 63, 'd');
        fill(l3, k, 'e');
        snprintf(in, sizeof(in), "%s@%s.%s.%s.com", local, label, label, l3);
        n = strlen(in);
        assert_int_equal(n, total);
        if (total <= SB_EMAIL_MAX) {
            if (email_try(in, &why) != 0)
                print_error("total %zu refused: %s\n", total, why);
            assert_int_equal(email_try(in, &why), 0);
        } else {
            assert_int_equal(email_try(in, &why), -1);
            assert_string_equal(why, "address too long");
        }
    }

    /* far over the limit: still a clean refusal */
    memset(in, 'e', sizeof(in) - 1);
    in[sizeof(in) - 1] = '\0';
    assert_int_equal(email_try(in, &why), -1);

    /* output buffer too small */
    assert_int_equal(
        sb_email_normalize("a@example.com", small, sizeof(small), &why), -1);
    /* why may be NULL */
    assert_int_equal(sb_email_normalize("bad", in, sizeof(in), NULL), -1);
    assert_int_equal(sb_email_normalize("ok@example.com", in, sizeof(in), NULL),
                     0);
    assert_int_equal(sb_email_normalize(NULL, in, sizeof(in), &why), -1);
}

struct phone_case {
    const char *in;
    const char *country;
    const char *want; /* NULL: refused */
    const char *why;  /* fragment of the reason when refused, or NULL */
};

static const struct phone_case phone_cases[] = {
    /* Russia: one subscriber, many spellings */
    {"8 (916) 123-45-67", "RU", "+79161234567", NULL},
    {"+7 916 123 45 67", "RU", "+79161234567", NULL},
    {"+7 916 123 45 67", NULL, "+79161234567", NULL},
    {"+7 916 123 45 67", "US", "+79161234567", NULL},
    {"89161234567", "RU", "+79161234567", NULL},
    {"9161234567", "RU", "+79161234567", NULL},
    {"79161234567", "RU", "+79161234567", NULL},
    {"007 916 1234567", "RU", "+79161234567", NULL},
    {"007 916 1234567", NULL, "+79161234567", NULL},
    {"810 7 916 123 45 67", "RU", "+79161234567", NULL},
    {"8 10 44 20 7946 0958", "RU", "+442079460958", NULL},
    {"+7(916)123-45-67", NULL, "+79161234567", NULL},
    {"8.916.123.45.67", "RU", "+79161234567", NULL},
    {"  +7 916 123 45 67  ", NULL, "+79161234567", NULL},
    {"(+7) 916 123 45 67", NULL, "+79161234567", NULL},
    {"8 (812) 123-45-67", "RU", "+78121234567", NULL},
    {"8121234567", "RU", "+78121234567", NULL},
    {"9161234567", NULL, NULL, "country"},
    {"89161234567", NULL, NULL, "country"},
    {"8 916 123 45", "RU", NULL, "length"},
    /* ten digits starting with 8 are a national number (8xx codes) */
    {"8 916 123 45 6", "RU", "+78916123456", NULL},
    {"8 916 123 45 678", "RU", NULL, NULL},
    {"+7 916 123 45 678", NULL, NULL, "length"},
    {"+7 916 123 45 6", NULL, NULL, "length"},
    /* neighbours */
    {"8 701 123 45 67", "KZ", "+77011234567", NULL},
    {"8 029 123-45-67", "BY", "+375291234567", NULL},
    {"+375 29 123 45 67", NULL, "+375291234567", NULL},
    {"050 123 45 67", "UA", "+380501234567", NULL},
    {"+380 50 123 45 67", NULL, "+380501234567", NULL},
    /* NANP */
    {"(415) 867-5309", "US", "+14158675309", NULL},
    {"1-415-867-5309", "US", "+14158675309", NULL},
    {"415.867.5309", "US", "+14158675309", NULL},
    {"+1 415 867 5309", NULL, "+14158675309", NULL},
    {"+1 (800) 555-1212", NULL, "+18005551212", NULL},
    {"011 44 20 7946 0958", "US", "+442079460958", NULL},
    {"613-555-0123", "CA", "+16135550123", NULL},
    {"+1 415 867 530", NULL, NULL, "length"},
    {"867-5309", "US", NULL, NULL},
    /* Europe */
    {"020 7946 0958", "GB", "+442079460958", NULL},
    {"+44 20 7946 0958", NULL, "+442079460958", NULL},
    {"+44 (0)20 7946 0958", NULL, "+442079460958", NULL},
    {"00 44 20 7946 0958", "DE", "+442079460958", NULL},
    {"07700 900123", "GB", "+447700900123", NULL},
    {"030 12345678", "DE", "+493012345678", NULL},
    {"0151 23456789", "DE", "+4915123456789", NULL},
    {"+49 (0)30 12345678", NULL, "+493012345678", NULL},
    {"012345", "DE", NULL, "length"},
    {"+44 00 20 7946 0958", NULL, NULL, NULL},
    {"00-5500-55(5(7550 50", "ES", NULL, NULL}, /* fuzz: +55 00... */
    {"+55 0 555 755 050", NULL, NULL, "length"},
    {"+49 0 12345", NULL, NULL, "length"},
    {"01 23 45 67 89", "FR", "+33123456789", NULL},
    {"06 12 34 56 78", "FR", "+33612345678", NULL},
    {"06 1234 5678", "IT", "+390612345678", NULL},
    {"+39 06 1234 5678", NULL, "+390612345678", NULL},
    {"333 123 4567", "IT", "+393331234567", NULL},
    {"612 34 56 78", "ES", "+34612345678", NULL},
    {"06 12345678", "NL", "+31612345678", NULL},
    {"512 345 678", "PL", "+48512345678", NULL},
    {"0532 123 45 67", "TR", "+905321234567", NULL},
    /* Asia */
    {"138 1234 5678", "CN", "+8613812345678", NULL},
    {"010 1234 5678", "CN", "+861012345678", NULL},
    {"098765 43210", "IN", "+919876543210", NULL},
    {"090-1234-5678", "JP", "+819012345678", NULL},
    {"03-1234-5678", "JP", "+81312345678", NULL},
    {"010 44 20 7946 0958", "JP", "+442079460958", NULL},
    {"+852 2123 4567", NULL, "+85221234567", NULL},
    {"+971 50 123 4567", NULL, "+971501234567", NULL},
    {"+86 138 1234 5678", NULL, "+8613812345678", NULL},
    /* garbage */
    {"abc", "RU", NULL, "letters"},
    {"", "RU", NULL, "no digits"},
    {"+", NULL, NULL, "no digits"},
    {"+ - ( )", NULL, NULL, "no digits"},
    {"++79161234567", NULL, NULL, "more than one +"},
    {"+7 916 123+45-67", NULL, NULL, "more than one +"},
    {"7+9161234567", "RU", NULL, "+ not at the start"},
    {"8 916 123 45 67+", "RU", NULL, "+ not at the start"},
    {"+7 916 12", NULL, NULL, "too few"},
    {"+1234567890123456", NULL, NULL, "too many"},
    {"+7 9161234567 12345", NULL, NULL, "too many"},
    {"1234567890123456", "RU", NULL, NULL},
    {"\xef\xbc\x8b\xef\xbc\x97 \xef\xbc\x99\xef\xbc\x91\xef\xbc\x96", NULL,
     NULL, "non-ASCII"},
    {"+7 916 123 45 6\xef\xbc\x97", NULL, NULL, "non-ASCII"},
    {"+7\xc2\xa0"
     "916 123 45 67",
     NULL, NULL, "non-ASCII"},
    {"tel:+79161234567", NULL, NULL, "tel:"},
    {"TEL:+79161234567", "RU", NULL, "tel:"},
    {"+7 916 123 45 67 x123", NULL, NULL, "extension"},
    {"+7 916 123 45 67x123", NULL, NULL, "extension"},
    {"+7 916 123 45 67;ext=123", NULL, NULL, "extension"},
    {"+7 916 123 45 67 ext. 12", NULL, NULL, "extension"},
    {"+7 916 123 45 67 EXT 12", NULL, NULL, "extension"},
    {"1-800-FLOWERS", "US", NULL, "letters"},
    {"+7\t916 123 45 67", NULL, NULL, "control"},
    {"+7 916 123 45 67\n", NULL, NULL, "control"},
    {"+7 916 123 45 67\r", NULL, NULL, "control"},
    {"+7/916/1234567", NULL, NULL, "invalid character"},
    {"+7 916 123 45 67#", NULL, NULL, "invalid character"},
    {"+7,916,1234567", NULL, NULL, "invalid character"},
    {"+0 123 456 789", NULL, NULL, "unknown country code"},
    {"+28 123 456 789", NULL, NULL, "unknown country code"},
    {"+999 123 456 789", NULL, NULL, "unknown country code"},
    {"00 0 123 456 789", NULL, NULL, "unknown country code"},
    {"+7 916 123 45 67", "XX", NULL, "default country"},
    {"+7 916 123 45 67", "ru", NULL, "default country"},
    {"9161234567", "", NULL, "default country"},
};

/* ^\+[1-9][0-9]{7,14}$ */
static int e164_shape(const char *s)
{
    size_t n = strlen(s);

    if (n < 9 || n > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static void test_phone_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(phone_cases) / sizeof(phone_cases[0]); i++) {
        const struct phone_case *c = &phone_cases[i];
        char out[SB_PHONE_MAX + 1];
        const char *why = NULL;
        int rc = sb_phone_normalize(c->in, c->country, out, sizeof(out), &why);

        if (c->want) {
            if (rc != 0)
                print_error("case %zu \"%s\" (%s): refused (%s)\n", i, c->in,
                            c->country ? c->country : "-", why ? why : "?");
            assert_int_equal(rc, 0);
            if (strcmp(out, c->want) != 0)
                print_error("case %zu \"%s\": got %s\n", i, c->in, out);
            assert_string_equal(out, c->want);
            assert_true(e164_shape(out));
            /* the result is a fixed point, with or without a country */
            {
                char again[SB_PHONE_MAX + 1];
                assert_int_equal(
                    sb_phone_normalize(out, NULL, again, sizeof(again), &why),
                    0);
                assert_string_equal(again, out);
                assert_int_equal(sb_phone_normalize(out, c->country, again,
                                                    sizeof(again), &why),
                                 0);
                assert_string_equal(again, out);
            }
        } else {
            if (rc == 0)
                print_error("case %zu \"%s\" (%s): accepted as %s\n", i, c->in,
                            c->country ? c->country : "-", out);
            assert_int_equal(rc, -1);
            assert_non_null(why);
            assert_true(why[0] != '\0');
            if (c->why && !strstr(why, c->why))
                print_error("case %zu \"%s\": reason \"%s\", want \"%s\"\n", i,
                            c->in, why, c->why);
            if (c->why)
                assert_non_null(strstr(why, c->why));
        }
    }
}

static void test_phone_limits(void **state)
{
    char in[128], out[SB_PHONE_MAX + 1], small[12];
    const char *why = NULL;
    int n;

    (void)state;
    /* 64 bytes of input accepted, 65 refused */
    n = snprintf(in, sizeof(in), "%-64s", "+7 916 123 45 67");
    assert_int_equal(n, 64);
    assert_int_equal(sb_phone_normalize(in, NULL, out, sizeof(out), &why), 0);
    assert_string_equal(out, "+79161234567");
    n = snprintf(in, sizeof(in), "%-65s", "+7 916 123 45 67");
    assert_int_equal(n, 65);
    assert_int_equal(sb_phone_normalize(in, NULL, out, sizeof(out), &why), -1);
    assert_string_equal(why, "input too long");

    /* 15 digits accepted, 16 refused; 8 accepted, 7 refused */
    assert_int_equal(
        sb_phone_normalize("+882 123456789012", NULL, out, sizeof(out), &why),
        0);
    assert_string_equal(out, "+882123456789012");
    assert_int_equal(
        sb_phone_normalize("+882 1234567890123", NULL, out, sizeof(out), &why),
        -1);
    assert_int_equal(
        sb_phone_normalize("+852 21234", NULL, out, sizeof(out), &why), 0);
    assert_string_equal(out, "+85221234");
    assert_int_equal(
        sb_phone_normalize("+852 2123", NULL, out, sizeof(out), &why), -1);

    /* output buffer too small, NULL arguments, NULL why */
    assert_int_equal(
        sb_phone_normalize("+79161234567", NULL, small, sizeof(small), &why),
        -1);
    assert_int_equal(sb_phone_normalize(NULL, "RU", out, sizeof(out), &why),
                     -1);
    assert_int_equal(sb_phone_normalize("abc", "RU", out, sizeof(out), NULL),
                     -1);
    assert_int_equal(
        sb_phone_normalize("89161234567", "RU", out, sizeof(out), NULL), 0);
}

static void test_phone_country_codes(void **state)
{
    /* assigned codes of every zone and length (none with own rules) */
    static const char *const assigned[] = {
        "20",  "27",  "211", "290", "299", "30",  "350", "379",
        "389", "423", "500", "599", "670", "692", "800", "808",
        "850", "870", "883", "888", "960", "979", "998", "51",
        "66",  "98",  "93",  "262", "381", "992", "886", "993",
    };
    /* spare, withdrawn or reserved codes */
    static const char *const spare[] = {
        "0",   "210", "214", "259", "28",  "292", "384", "388",
        "425", "671", "684", "693", "801", "807", "83",  "854",
        "871", "884", "89",  "969", "978", "990", "997", "999",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(assigned) / sizeof(assigned[0]); i++) {
        char in[32], want[32], out[SB_PHONE_MAX + 1];
        const char *why = NULL;

        snprintf(in, sizeof(in), "+%s 23456789", assigned[i]);
        snprintf(want, sizeof(want), "+%s23456789", assigned[i]);
        if (sb_phone_normalize(in, NULL, out, sizeof(out), &why) != 0)
            print_error("+%s refused: %s\n", assigned[i], why);
        assert_int_equal(sb_phone_normalize(in, NULL, out, sizeof(out), &why),
                         0);
        assert_string_equal(out, want);
    }
    for (size_t i = 0; i < sizeof(spare) / sizeof(spare[0]); i++) {
        char in[32], out[SB_PHONE_MAX + 1];
        const char *why = NULL;

        snprintf(in, sizeof(in), "+%s 23456789", spare[i]);
        if (sb_phone_normalize(in, NULL, out, sizeof(out), &why) == 0)
            print_error("+%s accepted as %s\n", spare[i], out);
        assert_int_equal(sb_phone_normalize(in, NULL, out, sizeof(out), &why),
                         -1);
        assert_string_equal(why, "unknown country code");
    }
}

static void test_phone_country_known(void **state)
{
    static const char *const known[] = {
        "RU", "KZ", "BY", "UA", "US", "CA", "GB", "DE", "FR",
        "IT", "ES", "NL", "PL", "TR", "CN", "IN", "JP",
    };
    static const char *const unknown[] = {"XX", "ru", "", "RUS", "R", "ZZ"};

    (void)state;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        char out[SB_PHONE_MAX + 1];
        const char *why = NULL;

        assert_int_equal(sb_phone_country_known(known[i]), 1);
        /* an international number works with every default country */
        assert_int_equal(sb_phone_normalize("+44 20 7946 0958", known[i], out,
                                            sizeof(out), &why),
                         0);
        assert_string_equal(out, "+442079460958");
    }
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        assert_int_equal(sb_phone_country_known(unknown[i]), 0);
    assert_int_equal(sb_phone_country_known(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_table),
        cmocka_unit_test(test_email_limits),
        cmocka_unit_test(test_phone_table),
        cmocka_unit_test(test_phone_limits),
        cmocka_unit_test(test_phone_country_codes),
        cmocka_unit_test(test_phone_country_known),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
