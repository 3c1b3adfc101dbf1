/* test_template.c - the template language, the loader and the shipped set.
 *
 * Table-driven: escaping (HTML, text, raw), every formatter with ru and en
 * rules, money rounding and grouping, dates converted to Moscow and New
 * York time on both sides of DST, locale fallback, sb_tpl_check (missing
 * paths, `default` making them optional), parse errors with their line,
 * loading a temporary directory (a broken file fails the whole load, odd
 * files are ignored), UTF-8 validity of every output, and every shipped
 * template in config/templates rendered in both locales.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "template.h"
#include "tz.h"
#include "util.h"

#define NB "\xc2\xa0" /* no-break space */

static char OUT[8192];
static char ERR[512];

static json_t *ctx_of(const char *s)
{
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);

    if (!j)
        fail_msg("bad test JSON: %s: %s", s, je.text);
    return j;
}

/* Render one template text; 0 with the text in OUT, or -1 with the reason
 * in ERR (a parse error starts with "line"). */
static int render(const char *tpl, const char *ctx, const char *locale,
                  const char *tz, int html)
{
    struct sb_tpl *t;
    struct sb_tpl_env env = {locale, tz};
    struct sb_rendered r;
    json_t *c = ctx_of(ctx);
    int rc;

    OUT[0] = ERR[0] = '\0';
    t = sb_tpl_parse(tpl, strlen(tpl), html, ERR, sizeof(ERR));
    if (!t) {
        json_decref(c);
        assert_true(ERR[0] != '\0');
        return -1;
    }
    rc = sb_tpl_render(t, c, &env, &r, ERR, sizeof(ERR));
    if (rc == 0) {
        assert_non_null(r.text);
        assert_null(r.subject);
        assert_null(r.html);
        assert_true(sb_utf8_valid(r.text, strlen(r.text)));
        snprintf(OUT, sizeof(OUT), "%s", r.text);
        sb_rendered_free(&r);
    } else {
        assert_null(r.text);
        assert_true(ERR[0] != '\0');
    }
    sb_tpl_destroy(t);
    json_decref(c);
    return rc;
}

static void expect(const char *tpl, const char *ctx, const char *locale,
                   const char *tz, int html, const char *want)
{
    if (render(tpl, ctx, locale, tz, html) != 0)
        fail_msg("%s: unexpected error: %s", tpl, ERR);
    if (strcmp(OUT, want) != 0)
        fail_msg("%s (%s, %s): got \"%s\", want \"%s\"", tpl,
                 locale ? locale : "-", tz ? tz : "-", OUT, want);
}

static void expect_err(const char *tpl, const char *ctx, const char *want)
{
    if (render(tpl, ctx, "en", NULL, 0) == 0)
        fail_msg("%s: rendered \"%s\", want an error with \"%s\"", tpl, OUT,
                 want);
    if (!strstr(ERR, want))
        fail_msg("%s: error \"%s\" lacks \"%s\"", tpl, ERR, want);
}

/* ---- escaping ------------------------------------------------------------ */

static void test_escaping(void **state)
{
    static const char *ctx =
        "{\"data\": {\"s\": \"<a href='x'>Tom & \\\"Jerry\\\"</a>\"}}";

    (void)state;
    expect("[{{ data.s }}]", ctx, "en", NULL, 1,
           "[&lt;a href=&#39;x&#39;&gt;Tom &amp; &quot;Jerry&quot;"
           "&lt;/a&gt;]");
    expect("[{{ data.s }}]", ctx, "en", NULL, 0,
           "[<a href='x'>Tom & \"Jerry\"</a>]");
    expect("[{{ data.s | raw }}]", ctx, "en", NULL, 1,
           "[<a href='x'>Tom & \"Jerry\"</a>]");
    expect("[{{ data.s | upper | raw }}]", ctx, "en", NULL, 1,
           "[<A HREF='X'>TOM & \"JERRY\"</A>]");
    /* the template's own text is never escaped */
    expect("<b>{{ data.s | lower }}</b> & more", ctx, "en", NULL, 1,
           "<b>&lt;a href=&#39;x&#39;&gt;tom &amp; &quot;jerry&quot;"
           "&lt;/a&gt;</b> & more");
    /* a default's text is a substitution too */
    expect("{{ data.none | default:\"<none>\" }}", ctx, "en", NULL, 1,
           "&lt;none&gt;");
    expect("{{ data.none | default:\"<none>\" | raw }}", ctx, "en", NULL, 1,
           "<none>");
    /* literal {{ and stray braces */
    expect("{{{{ data.s }} } }} {", ctx, "en", NULL, 0,
           "{{ data.s }} } }} {");
    expect("a{{{{b{{{{", "{}", "en", NULL, 0, "a{{b{{");
    /* a trailing newline is dropped, only one */
    expect("line\n", "{}", "en", NULL, 0, "line");
    expect("line\n\n", "{}", "en", NULL, 0, "line\n");
    expect("line\r\n", "{}", "en", NULL, 0, "line");
    expect("", "{}", "en", NULL, 0, "");
}

/* ---- plain values, paths, upper/lower, default --------------------------- */

static void test_values(void **state)
{
    static const char *ctx =
        "{\"data\": {\"i\": 42, \"neg\": -7, \"r\": 0.1, \"r3\": 2.5e-7,"
        " \"big\": 1e300, \"whole\": 3.0, \"t\": true, \"f\": false,"
        " \"s\": \"ok\", \"e\": \"\", \"n\": null, \"o\": {\"k\": \"v\"},"
        " \"a\": [{\"name\": \"first\"}, {\"name\": \"second\"}],"
        " \"ru\": \"Привет, Ёлка! ёжик\", \"mix\": \"Straße ÀÉÎ Ωμέγα\"},"
        " \"customer\": {\"name\": \"Анна\"}}";

    (void)state;
    expect("{{data.i}} {{ data.neg }} {{ data.r }} {{ data.r3 }}", ctx, "en",
           NULL, 0, "42 -7 0.1 2.5e-07");
    expect("{{ data.big }} {{ data.whole }} {{ data.t }} {{ data.f }}", ctx,
           "en", NULL, 0, "1e+300 3 true false");
    expect("{{ data.a.1.name }}/{{ data.a.0.name }}", ctx, "en", NULL, 0,
           "second/first");
    expect("{{ data.o.k }}", ctx, "en", NULL, 0, "v");
    expect("{{ data.e }}|", ctx, "en", NULL, 0, "|");
    expect("{{ data.ru | upper }}", ctx, "en", NULL, 0,
           "ПРИВЕТ, ЁЛКА! ЁЖИК");
    expect("{{ data.ru | lower }}", ctx, "en", NULL, 0,
           "привет, ёлка! ёжик");
    expect("{{ data.mix | upper }}", ctx, "en", NULL, 0,
           "STRAßE ÀÉÎ ΩΜέΓΑ");
    expect("{{ data.mix | lower }}", ctx, "en", NULL, 0, "straße àéî ωμέγα");
    expect("{{ data.i | upper }}", ctx, "en", NULL, 0, "42");
    expect("{{ customer.name | default:\"клиент\" }}", ctx, "en", NULL, 0,
           "Анна");
    expect("{{ customer.nick | default:\"клиент\" }}", ctx, "en", NULL, 0,
           "клиент");
    expect("{{ data.n | default:\"x\" }}{{ data.e | default:\"y\" }}", ctx,
           "en", NULL, 0, "xy");
    expect("{{ data.s | default:\"x\" }}", ctx, "en", NULL, 0, "ok");
    expect("{{ data.none | default:\"say \\\"hi\\\" \\\\ }}\" }}", ctx,
           "en", NULL, 0, "say \"hi\" \\ }}");
    expect("{{ data.none | upper | default:\"-\" | upper }}", ctx, "en",
           NULL, 0, "-");
    expect("{{ data.none | default:\"abc\" | upper }}", ctx, "en", NULL, 0,
           "ABC");
    /* missing, null and objects */
    expect_err("{{ data.none }}", ctx, "missing variable data.none");
    expect_err("{{ data.n }}", ctx, "missing variable data.n");
    expect_err("x\n{{ data.a.5.name }}", ctx, "line 2: missing variable "
               "data.a.5.name");
    expect_err("{{ data.s.deeper }}", ctx, "missing variable");
    expect_err("{{ data.o }}", ctx, "data.o is an object");
    expect_err("{{ data.a }}", ctx, "data.a is an array");
    expect_err("{{ data.o | upper }}", ctx, "cannot be upper-cased");
    expect_err("{{ data.o | default:\"x\" }}", ctx, "is an object");
}

/* ---- dates --------------------------------------------------------------- */

static void test_dates(void **state)
{
    static const char *ctx =
        "{\"data\": {\"z\": \"2026-12-01T11:05:00Z\","
        " \"off\": \"2026-12-01T14:05:00+03:00\","
        " \"off2\": \"2026-12-01T06:05:30.123-0500\","
        " \"local\": \"2026-12-01T14:05\","
        " \"day\": \"2026-12-01\", \"ms\": 1796123100000,"
        " \"msr\": 1796123100000.0,"
        " \"summer\": \"2026-07-01T12:00:00Z\","
        " \"winter\": \"2026-01-15T12:00:00Z\","
        " \"late\": \"2026-12-31T23:30:00Z\","
        " \"future\": \"2045-07-04T16:00:00Z\","
        " \"bad\": \"2026-13-01\", \"feb\": \"2026-02-29\","
        " \"leap\": \"2028-02-29\", \"text\": \"tomorrow\", \"o\": {}}}";
    static const char *const ru[12] = {
        "января", "февраля", "марта", "апреля", "мая", "июня", "июля",
        "августа", "сентября", "октября", "ноября", "декабря",
    };
    static const char *const en[12] = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
        "Oct", "Nov", "Dec",
    };

    (void)state;
    expect("{{ data.z | date }}", ctx, "en", NULL, 0, "1 Dec 2026");
    expect("{{ data.z | date }}", ctx, "ru", NULL, 0, "1 декабря 2026");
    expect("{{ data.z | time }}", ctx, "ru", NULL, 0, "11:05");
    expect("{{ data.z | datetime }}", ctx, "en", NULL, 0,
           "1 Dec 2026, 11:05");
    expect("{{ data.z | datetime }}", ctx, "ru-RU", "Europe/Moscow", 0,
           "1 декабря 2026, 14:05");
    expect("{{ data.off | time }}", ctx, "en", "UTC", 0, "11:05");
    expect("{{ data.off | time }}", ctx, "en", "Europe/Moscow", 0, "14:05");
    expect("{{ data.off2 | time }}", ctx, "en", "Europe/Moscow", 0,
           "14:05");
    expect("{{ data.ms | datetime }}", ctx, "ru", "Europe/Moscow", 0,
           "1 декабря 2026, 14:05");
    expect("{{ data.msr | datetime }}", ctx, "en", "America/New_York", 0,
           "1 Dec 2026, 06:05");
    /* New York both sides of DST, and after 2037 */
    expect("{{ data.summer | time }}", ctx, "en", "America/New_York", 0,
           "08:00");
    expect("{{ data.winter | time }}", ctx, "en", "America/New_York", 0,
           "07:00");
    expect("{{ data.future | datetime }}", ctx, "en", "America/New_York", 0,
           "4 Jul 2045, 12:00");
    /* the date moves with the zone */
    expect("{{ data.late | date }}", ctx, "ru", "Europe/Moscow", 0,
           "1 января 2027");
    expect("{{ data.late | date }}", ctx, "en", "America/New_York", 0,
           "31 Dec 2026");
    /* unknown or refused zone: UTC */
    expect("{{ data.z | time }}", ctx, "en", "Mars/Olympus", 0, "11:05");
    expect("{{ data.z | time }}", ctx, "en", "../etc/passwd", 0, "11:05");
    /* date-only and offset-less values are shown as written */
    expect("{{ data.day | date }}", ctx, "en", "America/New_York", 0,
           "1 Dec 2026");
    expect("{{ data.day | datetime }}", ctx, "ru", "Pacific/Auckland", 0,
           "1 декабря 2026");
    expect("{{ data.local | datetime }}", ctx, "en", "America/New_York", 0,
           "1 Dec 2026, 14:05");
    expect("{{ data.leap | date }}", ctx, "en", NULL, 0, "29 Feb 2028");
    /* every month name */
    for (int m = 1; m <= 12; m++) {
        char c[128], want[64];

        snprintf(c, sizeof(c), "{\"d\": \"2026-%02d-15\"}", m);
        snprintf(want, sizeof(want), "15 %s 2026", ru[m - 1]);
        expect("{{ d | date }}", c, "ru", NULL, 0, want);
        snprintf(want, sizeof(want), "15 %s 2026", en[m - 1]);
        expect("{{ d | date }}", c, "en", NULL, 0, want);
        expect("{{ d | date }}", c, "de", NULL, 0, want);
    }
    /* errors */
    expect_err("{{ data.day | time }}", ctx, "without a time of day");
    expect_err("{{ data.bad | date }}", ctx, "data.bad: date needs");
    expect_err("{{ data.feb | date }}", ctx, "date needs");
    expect_err("{{ data.text | datetime }}", ctx, "datetime needs");
    expect_err("{{ data.o | time }}", ctx, "time needs");
    expect_err("{{ data.none | date }}", ctx, "missing variable data.none");
    expect("{{ data.none | date | default:\"soon\" }}", ctx, "en", NULL, 0,
           "soon");
}

/* ---- money --------------------------------------------------------------- */

static void test_money(void **state)
{
    static const struct {
        const char *amount; /* JSON */
        const char *cur;
        const char *locale;
        const char *want;
    } cases[] = {
        {"1234.5", "RUB", "ru", "1" NB "234,50" NB "₽"},
        {"1234.5", "RUB", "en", "1,234.50 RUB"},
        {"1234.5", "USD", "en", "$1,234.50"},
        {"1234.5", "USD", "ru", "1" NB "234,50" NB "$"},
        {"1234.5", "EUR", "en", "€1,234.50"},
        {"\"1234.5\"", "GBP", "en", "£1,234.50"},
        {"0.30000000000000004", "USD", "en", "$0.30"},
        {"\"1.005\"", "USD", "en", "$1.01"},
        {"1.005", "USD", "en", "$1.01"},
        {"\"2.675\"", "RUB", "ru", "2,68" NB "₽"},
        {"\"-0.004\"", "USD", "en", "$0.00"},
        {"\"-0.005\"", "USD", "en", "-$0.01"},
        {"\"999.995\"", "USD", "en", "$1,000.00"},
        {"\"-1234567.995\"", "RUB", "ru",
         "-1" NB "234" NB "568,00" NB "₽"},
        {"0", "RUB", "ru", "0,00" NB "₽"},
        {"7", "USD", "en", "$7.00"},
        {"100", "USD", "en", "$100.00"},
        {"1000", "USD", "en", "$1,000.00"},
        {"123456789", "RUB", "en", "123,456,789.00 RUB"},
        {"1234567", "JPY", "en", "1,234,567 JPY"},
        {"\"1234.5\"", "JPY", "en", "1,235 JPY"},
        {"\"12.3456\"", "KWD", "ru", "12,346" NB "KWD"},
        {"\"0012.50\"", "USD", "en", "$12.50"},
        {"\".5\"", "USD", "en", "$0.50"},
        {"\"+3.\"", "USD", "en", "$3.00"},
        {"\"1.5e3\"", "USD", "en", "$1,500.00"},
        {"\"15E-1\"", "USD", "en", "$1.50"},
        {"1e21", "USD", "en", "$1,000,000,000,000,000,000,000.00"},
        {"\"123456789012345678901234567890\"", "USD", "en",
         "$123,456,789,012,345,678,901,234,567,890.00"},
        {"1234.5", "rub", "ru", "1" NB "234,50" NB "₽"},
        {"50000", "KZT", "ru", "50" NB "000,00" NB "₸"},
        {"50000", "KZT", "en", "50,000.00 KZT"},
    };
    static const char *const bad[] = {
        "\"abc\"", "true", "[]", "{}", "\"1 000\"", "\"1,5\"", "\"\"",
        "\"-\"", "\".\"", "\"1e\"", "\"1.2.3\"", "\" 1\"",
        "\"1234567890123456789012345678901\"", "1e40",
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        char *ctx = sb_asprintf("{\"data\": {\"amount\": %s,"
                                " \"currency\": \"%s\"}}",
                                cases[i].amount, cases[i].cur);
        expect("{{ data.amount | money:data.currency }}", ctx,
               cases[i].locale, NULL, 0, cases[i].want);
        free(ctx);
    }
    for (size_t i = 0; i < SB_ARRAY_LEN(bad); i++) {
        char *ctx = sb_asprintf("{\"data\": {\"amount\": %s,"
                                " \"currency\": \"USD\"}}", bad[i]);
        expect_err("{{ data.amount | money:data.currency }}", ctx,
                   "money needs a number or a decimal string");
        free(ctx);
    }
    expect_err("{{ data.amount | money:data.currency }}",
               "{\"data\": {\"amount\": 1, \"currency\": \"RUBL\"}}",
               "data.currency: a currency is a three-letter code");
    expect_err("{{ data.amount | money:data.currency }}",
               "{\"data\": {\"amount\": 1, \"currency\": 643}}",
               "three-letter code");
    expect_err("{{ data.amount | money:data.currency }}",
               "{\"data\": {\"amount\": 1}}",
               "missing variable data.currency");
    expect_err("{{ data.amount | money:data.currency }}",
               "{\"data\": {\"currency\": \"RUB\"}}",
               "missing variable data.amount");
    expect("{{ data.amount | money:data.currency | default:\"—\" }}",
           "{\"data\": {\"amount\": 1}}", "en", NULL, 0, "—");
    /* money's result is a string: it can be upper-cased or escaped */
    expect("{{ data.amount | money:data.currency | lower }}",
           "{\"data\": {\"amount\": 1, \"currency\": \"USD\"}}", "en", NULL,
           1, "$1.00");
}

/* ---- parse errors -------------------------------------------------------- */

static void test_parse_errors(void **state)
{
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"Hello {{ name", "line 1: unclosed {{"},
        {"a\nb\nc {{ name }\n}}", "line 3: unclosed {{"},
        {"a\n\n{{ name | nope }}", "line 3: unknown formatter 'nope'"},
        {"{{ }}", "line 1: empty {{ }}"},
        {"{{ 1abc }}", "line 1: a variable name cannot start with '1'"},
        {"{{ a..b }}", "empty part in a variable name"},
        {"{{ a. }}", "empty part in a variable name"},
        {"{{ a b }}", "line 1: unexpected 'b' in {{ }}"},
        {"{{ a | }}", "a formatter name is missing"},
        {"{{ a | Upper }}", "unexpected 'U' after '|'"},
        {"{{ a | upper:x }}", "formatter 'upper' takes no argument"},
        {"{{ a | date:\"x\" }}", "formatter 'date' takes no argument"},
        {"{{ a | money }}", "'money' needs the currency's variable"},
        {"{{ a | money:\"RUB\" }}", "a variable name cannot start with"},
        {"{{ a | default }}", "'default' needs a quoted text"},
        {"{{ a | default:x }}", "'default' needs a quoted text"},
        {"{{ a | default:\"x }}", "line 1: unclosed {{"},
        {"{{ a | upper | lower | upper | lower | upper | lower | upper | "
         "lower | upper }}", "more than 8 formatters"},
        {"{{ a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q }}", "more than 16 parts"},
        {"ok\n\xd0\x41", "line 2: invalid UTF-8"},
        {"\xc0\xaf", "line 1: invalid UTF-8"},
        {"{{ a | verylongformattername }}", "unknown formatter"},
        {"{{ a }} {{ b | raw:1 }}", "takes no argument"},
    };

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        if (render(cases[i].text, "{}", "en", NULL, 0) == 0)
            fail_msg("%s: parsed", cases[i].text);
        if (strncmp(ERR, "line ", 5) != 0 || !strstr(ERR, cases[i].want))
            fail_msg("%s: error \"%s\", want \"%s\"", cases[i].text, ERR,
                     cases[i].want);
    }
    {
        /* a NUL byte */
        char e[128];
        struct sb_tpl *t = sb_tpl_parse("a\n\0b", 4, 0, e, sizeof(e));

        assert_null(t);
        assert_string_equal(e, "line 2: NUL byte");
    }
    {
        /* NULL text with len 0 is an empty template */
        struct sb_tpl *t = sb_tpl_parse(NULL, 0, 0, NULL, 0);

        assert_non_null(t);
        sb_tpl_destroy(t);
    }
}

/* ---- output: UTF-8, size, subject ---------------------------------------- */

static void test_output(void **state)
{
    struct sb_tpl *t;
    struct sb_rendered r;
    json_t *ctx = json_object(), *data = json_object();
    char e[256];
    struct sb_tpl_env env = {"en", NULL};

    (void)state;
    /* a value built without UTF-8 checking comes out repaired */
    json_object_set_new(ctx, "data", data);
    json_object_set_new(data, "bad", json_stringn_nocheck("a\xff\xd0z", 4));
    {
        const char *src = "[{{ data.bad }}] [{{ data.bad | upper }}]";

        t = sb_tpl_parse(src, strlen(src), 0, e, sizeof(e));
    }
    assert_non_null(t);
    assert_int_equal(sb_tpl_render(t, ctx, &env, &r, e, sizeof(e)), 0);
    assert_true(sb_utf8_valid(r.text, strlen(r.text)));
    assert_string_equal(r.text, "[a\xef\xbf\xbd\xef\xbf\xbdz] "
                                "[A\xef\xbf\xbd\xef\xbf\xbdZ]");
    sb_rendered_free(&r);
    assert_null(r.text);
    sb_tpl_destroy(t);

    /* the context must be an object; a NULL template is refused */
    t = sb_tpl_parse("x", 1, 0, e, sizeof(e));
    {
        json_t *arr = json_array();

        assert_int_equal(sb_tpl_render(t, arr, NULL, &r, e, sizeof(e)), -1);
        assert_null(r.text);
        json_decref(arr);
    }
    assert_int_equal(sb_tpl_render(NULL, ctx, NULL, &r, e, sizeof(e)), -1);
    /* env NULL: en, UTC */
    assert_int_equal(sb_tpl_render(t, ctx, NULL, &r, e, sizeof(e)), 0);
    assert_string_equal(r.text, "x");
    sb_rendered_free(&r);
    sb_tpl_destroy(t);
    sb_rendered_free(NULL);
    sb_tpl_destroy(NULL);
    json_decref(ctx);
}

static void test_output_cap(void **state)
{
    json_t *ctx = json_object();
    char *big = sb_malloc(40001), e[256];
    struct sb_buf b;
    struct sb_tpl *t;
    struct sb_rendered r;

    (void)state;
    memset(big, 'x', 40000);
    big[40000] = '\0';
    json_object_set_new(ctx, "big", json_string(big));
    free(big);
    sb_buf_init(&b, 0);
    for (int i = 0; i < 30; i++)
        sb_buf_appends(&b, "{{ big }}");
    t = sb_tpl_parse(b.data, b.len, 0, e, sizeof(e));
    assert_non_null(t);
    assert_int_equal(sb_tpl_render(t, ctx, NULL, &r, e, sizeof(e)), -1);
    assert_non_null(strstr(e, "output longer than"));
    assert_null(r.text);
    sb_tpl_destroy(t);
    sb_buf_free(&b);
    json_decref(ctx);
}

/* ---- loading a directory ------------------------------------------------- */

/* Temporary directories, removed by the group teardown even when a test
 * fails half-way. */
static char *TMPDIRS[64];
static size_t NTMPDIRS;

static void rm_rf(const char *dir)
{
    char *cmd = sb_asprintf("rm -rf '%s'", dir);

    assert_int_equal(system(cmd), 0);
    free(cmd);
}

static char *mkdir_tmp(void)
{
    char tmpl[] = "/tmp/sb-tpl-XXXXXX";
    char *d = mkdtemp(tmpl);

    assert_non_null(d);
    assert_true(NTMPDIRS < SB_ARRAY_LEN(TMPDIRS));
    TMPDIRS[NTMPDIRS++] = sb_strdup(d);
    return sb_strdup(d);
}

static void put(const char *root, const char *rel, const char *text)
{
    char *path = sb_asprintf("%s/%s", root, rel);
    char *slash = strrchr(path, '/');
    FILE *f;

    *slash = '\0';
    mkdir(path, 0700); /* one level is enough here */
    *slash = '/';
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(path);
}

static void fill_good(const char *d)
{
    put(d, "order.shipped/email.en",
        "Subject: Order {{ data.order }} shipped\n\n"
        "Hello {{ customer.name | default:\"customer\" }},\n"
        "tracking: {{ data.tracking_url }}\n");
    put(d, "order.shipped/email.en.html",
        "<p>Hello {{ customer.name | default:\"customer\" }}</p>\n"
        "<a href=\"{{ data.tracking_url }}\">track</a>\n");
    put(d, "order.shipped/email.ru",
        "Subject: Заказ {{ data.order }} отправлен\r\n\r\n"
        "Трек: {{ data.tracking_url }}\r\n");
    put(d, "order.shipped/sms.en", "Order {{ data.order }} shipped\n");
    put(d, "order.shipped/sms.en-GB", "Order {{ data.order }} dispatched\n");
    put(d, "order.shipped/sms.ru", "Заказ {{ data.order }} отправлен\n");
    put(d, "order.shipped/chat.ru",
        "{{ data.amount | money:data.currency }}\n");
    put(d, "order.shipped/README", "not a template {{\n");
    put(d, "order.shipped/sms.en~", "backup {{\n");
    put(d, "order.shipped/sms.EN", "bad locale {{\n");
    put(d, "order.shipped/sms.en-gb", "bad locale {{\n");
    put(d, "order.shipped/sms.ru.html", "html only for email {{\n");
    put(d, "order.shipped/fax.ru", "no such channel {{\n");
    put(d, "order.shipped/webhook", "no locale {{\n");
    put(d, "service.opened/webhook.en", "Ticket {{ data.ticket }}");
    put(d, "README.md", "the templates {{\n");
    put(d, ".git/sms.en", "hidden {{\n");
    put(d, "Order/sms.en", "upper-case event {{\n");
    put(d, "empty.event/notes.txt", "nothing here\n");
}

static void test_load(void **state)
{
    char *d = mkdir_tmp(), err[512];
    struct sb_tpl_set *set;
    const struct sb_tpl *t;
    const char *used;
    struct sb_rendered r;
    json_t *ctx;

    (void)state;
    fill_good(d);
    set = sb_tpl_load(d, err, sizeof(err));
    if (!set)
        fail_msg("load: %s", err);
    assert_int_equal(sb_tpl_count(set), 7);
    assert_true(sb_tpl_has_event(set, "order.shipped"));
    assert_true(sb_tpl_has_event(set, "service.opened"));
    assert_false(sb_tpl_has_event(set, "empty.event"));
    assert_false(sb_tpl_has_event(set, "Order"));
    assert_false(sb_tpl_has_event(set, ".git"));
    assert_false(sb_tpl_has_event(set, "order.paid"));
    assert_true(sb_tpl_has_channel(set, "order.shipped", "email"));
    assert_true(sb_tpl_has_channel(set, "order.shipped", "chat"));
    assert_false(sb_tpl_has_channel(set, "order.shipped", "webhook"));
    assert_false(sb_tpl_has_channel(set, "order.shipped", "fax"));
    assert_true(sb_tpl_has_channel(set, "service.opened", "webhook"));

    /* locale fallback */
    t = sb_tpl_find(set, "order.shipped", "sms", "en-GB", "ru", &used);
    assert_non_null(t);
    assert_string_equal(used, "en-GB");
    t = sb_tpl_find(set, "order.shipped", "sms", "en-US", "ru", &used);
    assert_string_equal(used, "en");
    t = sb_tpl_find(set, "order.shipped", "sms", "de-AT", "ru-RU", &used);
    assert_string_equal(used, "ru");
    t = sb_tpl_find(set, "order.shipped", "sms", NULL, "en", &used);
    assert_string_equal(used, "en");
    t = sb_tpl_find(set, "order.shipped", "email", "de", "en-GB", &used);
    assert_string_equal(used, "en");
    t = sb_tpl_find(set, "order.shipped", "chat", "en", "ru", &used);
    assert_string_equal(used, "ru");
    t = sb_tpl_find(set, "order.shipped", "chat", "en", "de", &used);
    assert_null(t);
    assert_null(used);
    assert_null(sb_tpl_find(set, "order.shipped", "chat", NULL, NULL, NULL));
    assert_null(sb_tpl_find(set, "order.shipped", "webhook", "en", "en",
                            &used));
    assert_null(sb_tpl_find(set, "order.paid", "sms", "en", "en", &used));
    assert_null(sb_tpl_find(NULL, "order.paid", "sms", "en", "en", &used));

    /* an e-mail: subject, text, html */
    ctx = ctx_of("{\"data\": {\"order\": \"A-1\", \"tracking_url\":"
                 " \"https://t.example/?a=1&b=2\"},"
                 " \"customer\": {\"name\": \"Tom <3\"}}");
    t = sb_tpl_find(set, "order.shipped", "email", "en", NULL, &used);
    assert_int_equal(sb_tpl_render(t, ctx, NULL, &r, err, sizeof(err)), 0);
    assert_string_equal(r.subject, "Order A-1 shipped");
    assert_string_equal(r.text, "Hello Tom <3,\n"
                                "tracking: https://t.example/?a=1&b=2");
    assert_string_equal(r.html, "<p>Hello Tom &lt;3</p>\n"
                                "<a href=\"https://t.example/?a=1&amp;b=2\">"
                                "track</a>");
    sb_rendered_free(&r);
    /* CRLF files; no html sibling */
    t = sb_tpl_find(set, "order.shipped", "email", "ru", NULL, &used);
    assert_int_equal(sb_tpl_render(t, ctx, NULL, &r, err, sizeof(err)), 0);
    assert_string_equal(r.subject, "Заказ A-1 отправлен");
    assert_string_equal(r.text, "Трек: https://t.example/?a=1&b=2");
    assert_null(r.html);
    sb_rendered_free(&r);
    /* a subject cannot be split by a value */
    json_object_set_new(json_object_get(ctx, "data"), "order",
                        json_string("A-1\r\nBcc: x@example.com\t"));
    t = sb_tpl_find(set, "order.shipped", "email", "en", NULL, &used);
    assert_int_equal(sb_tpl_render(t, ctx, NULL, &r, err, sizeof(err)), 0);
    assert_string_equal(r.subject, "Order A-1  Bcc: x@example.com  shipped");
    sb_rendered_free(&r);
    /* sms: no subject */
    t = sb_tpl_find(set, "order.shipped", "sms", "en", NULL, &used);
    assert_int_equal(sb_tpl_render(t, ctx, NULL, &r, err, sizeof(err)), 0);
    assert_null(r.subject);
    assert_null(r.html);
    assert_non_null(r.text);
    sb_rendered_free(&r);
    /* a render error names the part and line */
    t = sb_tpl_find(set, "order.shipped", "email", "en", NULL, &used);
    json_object_del(json_object_get(ctx, "data"), "tracking_url");
    assert_int_equal(sb_tpl_render(t, ctx, NULL, &r, err, sizeof(err)), -1);
    assert_string_equal(err, "text line 4: missing variable "
                             "data.tracking_url");
    assert_null(r.subject);
    assert_null(r.text);
    json_decref(ctx);

    sb_tpl_free(set);
    rm_rf(d);
    free(d);
}

static void test_check(void **state)
{
    char *d = mkdir_tmp(), err[512], miss[64];
    struct sb_tpl_set *set;
    json_t *ctx;

    (void)state;
    fill_good(d);
    set = sb_tpl_load(d, err, sizeof(err));
    assert_non_null(set);
    ctx = ctx_of("{\"data\": {\"order\": \"A-1\", \"tracking_url\": \"u\","
                 " \"amount\": 5, \"currency\": \"RUB\"}}");
    /* customer.name has a default: not needed */
    assert_int_equal(sb_tpl_check(set, "order.shipped", ctx, miss,
                                  sizeof(miss)), 0);
    json_object_del(json_object_get(ctx, "data"), "tracking_url");
    assert_int_equal(sb_tpl_check(set, "order.shipped", ctx, miss,
                                  sizeof(miss)), -1);
    assert_string_equal(miss, "data.tracking_url");
    json_object_set_new(json_object_get(ctx, "data"), "tracking_url",
                        json_null());
    assert_int_equal(sb_tpl_check(set, "order.shipped", ctx, miss,
                                  sizeof(miss)), -1);
    assert_string_equal(miss, "data.tracking_url");
    json_object_set_new(json_object_get(ctx, "data"), "tracking_url",
                        json_string("u"));
    /* money's currency path is needed too */
    json_object_del(json_object_get(ctx, "data"), "currency");
    assert_int_equal(sb_tpl_check(set, "order.shipped", ctx, miss,
                                  sizeof(miss)), -1);
    assert_string_equal(miss, "data.currency");
    /* other events and unknown ones */
    assert_int_equal(sb_tpl_check(set, "service.opened", ctx, miss,
                                  sizeof(miss)), -1);
    assert_string_equal(miss, "data.ticket");
    assert_int_equal(sb_tpl_check(set, "no.such.event", ctx, miss,
                                  sizeof(miss)), 0);
    json_decref(ctx);
    sb_tpl_free(set);
    rm_rf(d);
    free(d);

    /* default and array paths, on a parsed template's set */
    d = mkdir_tmp();
    put(d, "ev/sms.en", "{{ data.items.0.name }} "
                        "{{ data.x | upper | default:\"-\" }} "
                        "{{ data.p | money:data.c | default:\"?\" }}");
    set = sb_tpl_load(d, err, sizeof(err));
    assert_non_null(set);
    ctx = ctx_of("{\"data\": {\"items\": []}}");
    assert_int_equal(sb_tpl_check(set, "ev", ctx, miss, sizeof(miss)), -1);
    assert_string_equal(miss, "data.items.0.name");
    json_decref(ctx);
    ctx = ctx_of("{\"data\": {\"items\": [{\"name\": \"n\"}]}}");
    assert_int_equal(sb_tpl_check(set, "ev", ctx, miss, sizeof(miss)), 0);
    json_decref(ctx);
    sb_tpl_free(set);
    rm_rf(d);
    free(d);
}

static void test_load_errors(void **state)
{
    static const struct {
        const char *file, *text, *want;
    } cases[] = {
        {"ev/sms.ru", "ok\n{{ data.x | nope }}\n",
         "/ev/sms.ru:2: unknown formatter 'nope'"},
        {"ev/email.en", "Hello\n\nbody\n",
         "/ev/email.en:1: an e-mail template starts with a \"Subject: "},
        {"ev/email.en", "Subject: x\nbody\n",
         "/ev/email.en:2: a blank line must follow the Subject line"},
        {"ev/email.en", "Subject:   \n\nbody\n",
         "/ev/email.en:1: the subject is empty"},
        {"ev/email.en", "Subject: {{ x\n\nbody\n",
         "/ev/email.en:1: unclosed {{"},
        {"ev/email.en", "Subject: x\n\nline 3\nline {{ 4\n",
         "/ev/email.en:4: unclosed {{"},
        {"ev/email.en", "Subject: x", "/ev/email.en:1: the e-mail has no "
                                      "body"},
        {"ev/email.en.html", "<p>{{ x }}</p>",
         "/ev/email.en.html: there is no email.en beside it"},
        {"ev/email.en.html", "<p>\n\n{{ x | date:1 }}</p>",
         "/ev/email.en.html:3: formatter 'date' takes no argument"},
        {"ev/chat.en", "\xff", "/ev/chat.en:1: invalid UTF-8"},
    };
    char err[512];

    (void)state;
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        char *d = mkdir_tmp();
        struct sb_tpl_set *set;

        /* good files beside the broken one: nothing is kept */
        fill_good(d);
        put(d, cases[i].file, cases[i].text);
        err[0] = '\0';
        set = sb_tpl_load(d, err, sizeof(err));
        if (set)
            fail_msg("%s loaded", cases[i].file);
        if (strncmp(err, d, strlen(d)) != 0 || !strstr(err, cases[i].want))
            fail_msg("%s: error \"%s\", want \"%s\"", cases[i].file, err,
                     cases[i].want);
        rm_rf(d);
        free(d);
    }
    {
        /* a file over 64 KiB */
        char *d = mkdir_tmp();
        char *big = sb_malloc(SB_TPL_FILE_MAX + 2);

        memset(big, 'a', SB_TPL_FILE_MAX + 1);
        big[SB_TPL_FILE_MAX + 1] = '\0';
        put(d, "ev/sms.en", big);
        assert_null(sb_tpl_load(d, err, sizeof(err)));
        assert_non_null(strstr(err, "sms.en: larger than 64 KiB"));
        /* exactly 64 KiB is fine */
        big[SB_TPL_FILE_MAX] = '\0';
        put(d, "ev/sms.en", big);
        {
            struct sb_tpl_set *set = sb_tpl_load(d, err, sizeof(err));

            assert_non_null(set);
            assert_int_equal(sb_tpl_count(set), 1);
            sb_tpl_free(set);
        }
        free(big);
        rm_rf(d);
        free(d);
    }
    {
        /* missing and empty directories give empty sets */
        char *d = mkdir_tmp();
        char *missing = sb_asprintf("%s/none", d);
        struct sb_tpl_set *set = sb_tpl_load(missing, err, sizeof(err));

        assert_non_null(set);
        assert_int_equal(sb_tpl_count(set), 0);
        assert_false(sb_tpl_has_event(set, "order.shipped"));
        sb_tpl_free(set);
        set = sb_tpl_load(d, err, sizeof(err));
        assert_non_null(set);
        assert_int_equal(sb_tpl_count(set), 0);
        sb_tpl_free(set);
        /* a file where the directory should be is an error */
        put(d, "ev/sms.en", "x");
        free(missing);
        missing = sb_asprintf("%s/ev/sms.en", d);
        assert_null(sb_tpl_load(missing, err, sizeof(err)));
        free(missing);
        rm_rf(d);
        free(d);
        sb_tpl_free(NULL);
    }
}

/* ---- the shipped templates ----------------------------------------------- */

static const char *shipped_dir(void)
{
    static char path[512];
    struct stat st;
    const char *src = __FILE__; /* tests/unit/test_template.c */
    const char *cut = strstr(src, "tests/unit/");

    if (stat("config/templates", &st) == 0)
        return "config/templates";
    if (cut) {
        snprintf(path, sizeof(path), "%.*sconfig/templates",
                 (int)(cut - src), src);
        if (stat(path, &st) == 0)
            return path;
    }
    fail_msg("config/templates not found (run from the repository root)");
    return NULL;
}

static const char *const EVENTS[] = {
    "order.created", "order.invoiced", "order.paid", "order.shipped",
    "order.delivered", "service.opened", "service.updated",
    "service.resolved", "commissioning.scheduled",
    "commissioning.step_done",
};

static const char *const SAMPLE =
    "{\"event\": \"order.shipped\", \"ref\": \"ERP-77\","
    " \"notification\": {\"id\": \"nt_123\"},"
    " \"customer\": {\"id\": \"c_1\", \"name\": \"Иван <Петров>\"},"
    " \"data\": {\"order\": \"A-1001\", \"amount\": \"1234.5\","
    " \"currency\": \"RUB\", \"tracking_url\":"
    " \"https://track.example/A-1001?x=1&y=2\", \"carrier\": \"СДЭК\","
    " \"due_date\": \"2026-12-01\", \"ticket\": \"SR-42\","
    " \"status\": \"в работе\", \"engineer\": \"Пётр Сидоров\","
    " \"date\": \"2026-12-01T11:05:00Z\", \"step\": \"Монтаж\","
    " \"site\": \"Москва, ул. Ленина, 1\"}}";

static void test_shipped(void **state)
{
    static const char *const channels[] = {"email", "sms", "chat",
                                           "webhook"};
    static const char *const locales[] = {"ru", "en"};
    char err[512];
    struct sb_tpl_set *set = sb_tpl_load(shipped_dir(), err, sizeof(err));
    json_t *ctx = ctx_of(SAMPLE), *bare;
    size_t rendered = 0;

    (void)state;
    if (!set)
        fail_msg("shipped templates: %s", err);
    assert_int_equal(sb_tpl_count(set), SB_ARRAY_LEN(EVENTS) * 8);
    for (size_t e = 0; e < SB_ARRAY_LEN(EVENTS); e++) {
        char miss[64];

        assert_true(sb_tpl_has_event(set, EVENTS[e]));
        if (sb_tpl_check(set, EVENTS[e], ctx, miss, sizeof(miss)) != 0)
            fail_msg("%s needs %s", EVENTS[e], miss);
        for (size_t c = 0; c < SB_ARRAY_LEN(channels); c++) {
            for (size_t l = 0; l < SB_ARRAY_LEN(locales); l++) {
                struct sb_tpl_env env = {locales[l], "Europe/Moscow"};
                const char *used;
                const struct sb_tpl *t =
                    sb_tpl_find(set, EVENTS[e], channels[c], locales[l],
                                "en", &used);
                struct sb_rendered r;
                int email = strcmp(channels[c], "email") == 0;

                if (!t)
                    fail_msg("%s/%s.%s missing", EVENTS[e], channels[c],
                             locales[l]);
                assert_string_equal(used, locales[l]);
                if (sb_tpl_render(t, ctx, &env, &r, err, sizeof(err)) != 0)
                    fail_msg("%s/%s.%s: %s", EVENTS[e], channels[c],
                             locales[l], err);
                assert_true(sb_utf8_valid(r.text, strlen(r.text)));
                assert_null(strstr(r.text, "{{"));
                assert_null(strstr(r.text, "}}"));
                assert_true(strlen(r.text) > 10);
                assert_int_equal(r.subject != NULL, email);
                assert_int_equal(r.html != NULL, email);
                if (email) {
                    assert_true(sb_utf8_valid(r.subject, strlen(r.subject)));
                    assert_null(strchr(r.subject, '\n'));
                    assert_true(sb_utf8_valid(r.html, strlen(r.html)));
                    assert_null(strstr(r.html, "{{"));
                    /* the customer's name is escaped in HTML only */
                    assert_non_null(strstr(r.html, "Иван &lt;Петров&gt;"));
                    assert_null(strstr(r.html, "<Петров>"));
                    assert_non_null(strstr(r.text, "Иван <Петров>"));
                }
                if (strcmp(channels[c], "sms") == 0) {
                    /* two SMS parts at most: 134 UCS-2 characters, 306
                     * GSM ones; a long tracking URL may add to it */
                    size_t cps = 0;

                    for (const char *p = r.text; *p; p++)
                        cps += ((unsigned char)*p & 0xc0) != 0x80;
                    if (cps > (l == 0 ? 134u : 306u))
                        fail_msg("%s/sms.%s: %zu characters", EVENTS[e],
                                 locales[l], cps);
                }
                sb_rendered_free(&r);
                rendered++;
            }
        }
    }
    assert_int_equal(rendered, 80);

    /* a few outputs */
    {
        struct sb_tpl_env ru = {"ru", "Europe/Moscow"};
        struct sb_tpl_env en = {"en", "America/New_York"};
        struct sb_rendered r;
        const struct sb_tpl *t;

        t = sb_tpl_find(set, "order.shipped", "sms", "ru", "en", NULL);
        assert_int_equal(sb_tpl_render(t, ctx, &ru, &r, err, sizeof(err)),
                         0);
        assert_string_equal(r.text, "Заказ № A-1001 отправлен (СДЭК). "
                            "Отследить: https://track.example/A-1001?x=1&y=2");
        sb_rendered_free(&r);

        t = sb_tpl_find(set, "order.invoiced", "email", "ru-RU", "en", NULL);
        assert_int_equal(sb_tpl_render(t, ctx, &ru, &r, err, sizeof(err)),
                         0);
        assert_string_equal(r.subject, "Счёт по заказу № A-1001");
        assert_non_null(strstr(r.text, "Здравствуйте, Иван <Петров>!"));
        assert_non_null(strstr(r.text, "1" NB "234,50" NB "₽"));
        assert_non_null(strstr(r.text, "до 1 декабря 2026."));
        assert_non_null(
            strstr(r.html, "<title>Счёт по заказу № A-1001</title>"));
        sb_rendered_free(&r);

        t = sb_tpl_find(set, "order.shipped", "email", "en", "ru", NULL);
        assert_int_equal(sb_tpl_render(t, ctx, &en, &r, err, sizeof(err)),
                         0);
        assert_non_null(strstr(
            r.html, "href=\"https://track.example/A-1001?x=1&amp;y=2\""));
        assert_non_null(strstr(
            r.text, "Track your delivery: https://track.example/A-1001?x=1"
                    "&y=2"));
        sb_rendered_free(&r);

        t = sb_tpl_find(set, "commissioning.scheduled", "chat", "en", "ru",
                        NULL);
        assert_int_equal(sb_tpl_render(t, ctx, &en, &r, err, sizeof(err)),
                         0);
        assert_non_null(strstr(r.text, "scheduled for 1 Dec 2026, 06:05"));
        sb_rendered_free(&r);

        t = sb_tpl_find(set, "commissioning.scheduled", "chat", "ru", "en",
                        NULL);
        assert_int_equal(sb_tpl_render(t, ctx, &ru, &r, err, sizeof(err)),
                         0);
        assert_non_null(strstr(r.text, "назначены на 1 декабря 2026, 14:05"));
        sb_rendered_free(&r);
    }

    /* with only the required fields (no customer name, no engineer) */
    bare = ctx_of("{\"data\": {\"order\": \"A-1\", \"amount\": 10,"
                  " \"currency\": \"USD\", \"tracking_url\": \"u\","
                  " \"carrier\": \"DHL\", \"due_date\": \"2026-01-31\","
                  " \"ticket\": \"T\", \"status\": \"open\","
                  " \"date\": 1796123100000, \"step\": \"s\","
                  " \"site\": \"x\"}}");
    for (size_t e = 0; e < SB_ARRAY_LEN(EVENTS); e++) {
        char miss[64];

        assert_int_equal(sb_tpl_check(set, EVENTS[e], bare, miss,
                                      sizeof(miss)), 0);
    }
    {
        struct sb_rendered r;
        const struct sb_tpl *t =
            sb_tpl_find(set, "service.updated", "email", "en", NULL, NULL);

        assert_int_equal(sb_tpl_render(t, bare, NULL, &r, err, sizeof(err)),
                         0);
        assert_non_null(strstr(r.text, "Dear customer,"));
        assert_non_null(strstr(r.text, "to be assigned shortly"));
        sb_rendered_free(&r);
    }
    /* and without data.order every order event says so */
    json_object_del(json_object_get(bare, "data"), "order");
    {
        char miss[64];

        assert_int_equal(sb_tpl_check(set, "order.shipped", bare, miss,
                                      sizeof(miss)), -1);
        assert_string_equal(miss, "data.order");
    }
    json_decref(bare);
    json_decref(ctx);
    sb_tpl_free(set);
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < NTMPDIRS; i++) {
        char *cmd = sb_asprintf("rm -rf '%s'", TMPDIRS[i]);

        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", TMPDIRS[i]);
        free(cmd);
        free(TMPDIRS[i]);
    }
    NTMPDIRS = 0;
    sb_tz_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_money),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_output),
        cmocka_unit_test(test_output_cap),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_shipped),
    };

    return cmocka_run_group_tests(tests, NULL, teardown);
}
