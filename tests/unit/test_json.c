/* test_json.c - strict request bodies, member helpers, the error body.
 *
 * Table-driven: bodies with their exact length (some hold NUL bytes) and
 * the expected outcome, one table per member helper over one fixture
 * object, and error-body texts that must come back unchanged through a
 * real JSON decoder. The corpus test replays JSONTestSuite from
 * $SB_CORPORA/json (default ../shared/corpora next to the repository):
 * every n_ file rejected, every y_ file accepted except a fixed list
 * (and top-level arrays, refused for their shape only: jansson itself
 * must decode them to an array), i_ files either way, and whatever is
 * accepted must serialise to valid UTF-8. Each file is also replayed
 * wrapped as {"v": ...}. Without the corpus the test is skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "util.h"

/* ---- helpers --------------------------------------------------------- */


/* n levels of {"a": ...} around {} ; n >= 1 */
static char *nested_objects(int n)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    for (int i = 1; i < n; i++)
        sb_buf_appends(&b, "{\"a\":");
    sb_buf_appends(&b, "{}");
    for (int i = 1; i < n; i++)
        sb_buf_appends(&b, "}");
    return sb_buf_steal(&b, NULL);
}

/* {"a": [[...[]...]]} with n levels in all (the object counts as one) */
static char *nested_arrays(int n)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    sb_buf_appends(&b, "{\"a\":");
    for (int i = 1; i < n; i++)
        sb_buf_appends(&b, "[");
    for (int i = 1; i < n; i++)
        sb_buf_appends(&b, "]");
    sb_buf_appends(&b, "}");
    return sb_buf_steal(&b, NULL);
}

/* ---- sb_json_parse_body ---------------------------------------------- */

#define B(s) s, sizeof(s) - 1

struct parse_case {
    const char *body;
    size_t len;
    const char *err; /* NULL: accepted; else a fragment of err.error */
};

static const struct parse_case parse_cases[] = {
    {B("{}"), NULL},
    {B("{\"a\":1}"), NULL},
    {B(" \t\r\n{\"a\":1} \n"), NULL},
    {B("{\"a\":[1,2,{\"b\":null}],\"c\":\"x\"}"), NULL},
    {B("{\"a\":\"\\ud83d\\ude00\"}"), NULL},
    {B("{\"a\":\"\xd0\xbf\xd1\x80\xd0\xb8\"}"), NULL},
    {B("{\"a\":\"\\u00e9\",\"b\":1.5e3,\"c\":-0}"), NULL},
    /* duplicate keys */
    {B("{\"a\":1,\"a\":2}"), "invalid JSON"},
    {B("{\"a\":1,\"a\":1}"), "invalid JSON"},
    {B("{\"o\":{\"k\":1,\"k\":2}}"), "invalid JSON"},
    /* top level must be an object */
    {B("[]"), "body must be a JSON object"},
    {B("[1,2]"), "body must be a JSON object"},
    {B("1"), "invalid JSON"},
    {B("\"s\""), "invalid JSON"},
    {B("null"), "invalid JSON"},
    {B("true"), "invalid JSON"},
    /* NUL bytes */
    {B("{\"a\":1}\0"), "NUL byte in body"},
    {B("\0{}"), "NUL byte in body"},
    {B("{\"a\":\"x\0y\"}"), "NUL byte in body"},
    {B("{\"a\":\"\\u0000\"}"), "invalid JSON"},
    {B("{\"\\u0000\":1}"), "invalid JSON"},
    /* bad UTF-8 and surrogates */
    {B("{\"a\":\"\xff\"}"), "invalid JSON"},
    {B("{\"a\":\"\xc0\xaf\"}"), "invalid JSON"},
    {B("{\"a\":\"\xed\xa0\x80\"}"), "invalid JSON"},
    {B("{\"a\":\"\\ud800\"}"), "invalid JSON"},
    {B("{\"a\":\"\\udc00\"}"), "invalid JSON"},
    {B("{\"a\":\"\\ud800x\"}"), "invalid JSON"},
    {B("{\"\xff\":1}"), "invalid JSON"},
    /* syntax */
    {B(""), "invalid JSON"},
    {B("   "), "invalid JSON"},
    {B("{"), "invalid JSON"},
    {B("{\"a\":1} x"), "invalid JSON"},
    {B("{\"a\":1}{}"), "invalid JSON"},
    {B("{'a':1}"), "invalid JSON"},
    {B("{\"a\":NaN}"), "invalid JSON"},
    {B("{\"a\":01}"), "invalid JSON"},
    {B("{\"a\":1,}"), "invalid JSON"},
    {B("{\"a\":\"\t\"}"), "invalid JSON"},
    {B("{\"a\":99999999999999999999}"), "invalid JSON"},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        struct sb_json_err err;
        json_t *j;

        memset(&err, 'X', sizeof(err));
        j = sb_json_parse_body(c->body, c->len, &err);
        if (!c->err) {
            if (!j)
                print_error("case %zu: rejected: %s\n", i, err.error);
            assert_non_null(j);
            assert_true(json_is_object(j));
            json_decref(j);
            continue;
        }
        if (j)
            print_error("case %zu: accepted\n", i);
        assert_null(j);
        if (!strstr(err.error, c->err))
            print_error("case %zu: error \"%s\", want \"%s\"\n", i, err.error,
                        c->err);
        assert_non_null(strstr(err.error, c->err));
        assert_string_equal(err.field, "");
        assert_true(strlen(err.error) < sizeof(err.error));
    }
}

static void test_parse_details(void **state)
{
    struct sb_json_err err;
    json_t *j;

    (void)state;
    /* the position is reported */
    j = sb_json_parse_body(B("{\n\"a\": tru}"), &err);
    assert_null(j);
    assert_non_null(strstr(err.error, "line 2"));
    assert_non_null(strstr(err.error, "column"));
    /* error text from jansson quoting bad bytes stays printable ASCII */
    j = sb_json_parse_body(B("{\"a\":\xff\xfe\x01\"}"), &err);
    assert_null(j);
    for (const char *p = err.error; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    /* NULL body with zero length is an empty body */
    assert_null(sb_json_parse_body(NULL, 0, &err));
    /* a NULL err is allowed */
    assert_null(sb_json_parse_body(B("[]"), NULL));
    j = sb_json_parse_body(B("{}"), NULL);
    assert_non_null(j);
    json_decref(j);
}

static void test_parse_depth(void **state)
{
    static const struct {
        char *(*make)(int);
        int depth;
        int ok;
    } cases[] = {
        {nested_objects, 1, 1},   {nested_objects, 2, 1},
        {nested_objects, 31, 1},  {nested_objects, 32, 1},
        {nested_objects, 33, 0},  {nested_objects, 34, 0},
        {nested_objects, 100, 0}, {nested_objects, 3000, 0},
        {nested_arrays, 2, 1},    {nested_arrays, 32, 1},
        {nested_arrays, 33, 0},   {nested_arrays, 5000, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *body = cases[i].make(cases[i].depth);
        struct sb_json_err err;
        json_t *j = sb_json_parse_body(body, strlen(body), &err);

        if (!!j != cases[i].ok)
            print_error("depth case %zu (%d): %s\n", i, cases[i].depth,
                        j ? "accepted" : err.error);
        assert_int_equal(!!j, cases[i].ok);
        if (!j && cases[i].depth <= 1000)
            assert_string_equal(err.error, "nesting too deep");
        json_decref(j);
        free(body);
    }
}

/* ---- member helpers --------------------------------------------------- */

static const char fixture[] =
    "{\"s\":\"hello\",\"e\":\"\",\"n\":5,\"r\":1.5,\"b\":true,\"f\":false,"
    "\"o\":{\"x\":1},\"arr\":[1],\"nul\":null,\"ctl\":\"a\\u0001b\","
    "\"tab\":\"a\\tb\\r\\n\",\"del\":\"a\\u007fb\",\"c1\":\"a\\u0085b\","
    "\"esc\":\"a\\u001bb\",\"utf\":\"\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5"
    "\xd1\x82\",\"big\":9223372036854775807,\"small\":-9223372036854775808,"
    "\"neg\":-5,\"mode\":\"sms\",\"zero\":0}";

static json_t *load_fixture(void)
{
    struct sb_json_err err;
    json_t *j = sb_json_parse_body(fixture, sizeof(fixture) - 1, &err);

    if (!j)
        print_error("fixture: %s\n", err.error);
    assert_non_null(j);
    return j;
}

/* A failure must name the field and say something. */
static void check_fail(int rc, const struct sb_json_err *err, const char *key,
                       const char *frag, size_t row)
{
    if (rc != -1 || strcmp(err->field, key) != 0 || !strstr(err->error, frag))
        print_error("row %zu key %s: rc %d field \"%s\" error \"%s\", "
                    "want \"%s\"\n",
                    row, key, rc, err->field, err->error, frag);
    assert_int_equal(rc, -1);
    assert_string_equal(err->field, key);
    assert_non_null(strstr(err->error, frag));
}

static void test_get_str(void **state)
{
    static const struct {
        const char *key;
        int required;
        size_t maxlen;
        int allow_ctl;
        const char *want; /* value, or NULL when out must stay untouched */
        const char *err;  /* NULL: rc 0 */
    } rows[] = {
        {"s", 1, 0, 0, "hello", NULL},
        {"s", 0, 0, 0, "hello", NULL},
        {"s", 1, 5, 0, "hello", NULL},
        {"s", 1, 4, 0, NULL, "too long"},
        {"s", 1, 1, 0, NULL, "too long"},
        {"e", 1, 0, 0, NULL, "empty"},
        {"e", 0, 0, 0, NULL, "empty"},
        {"n", 1, 0, 0, NULL, "must be a string"},
        {"b", 1, 0, 0, NULL, "must be a string"},
        {"o", 1, 0, 0, NULL, "must be a string"},
        {"arr", 0, 0, 0, NULL, "must be a string"},
        {"nul", 0, 0, 0, NULL, "must be a string"},
        {"missing", 1, 0, 0, NULL, "missing"},
        {"missing", 0, 0, 0, NULL, NULL},
        {"ctl", 1, 0, 0, NULL, "control"},
        {"ctl", 1, 0, 1, NULL, "control"},
        {"esc", 1, 0, 1, NULL, "control"},
        {"tab", 1, 0, 0, NULL, "control"},
        {"tab", 1, 0, 1, "a\tb\r\n", NULL},
        {"del", 1, 0, 1, NULL, "control"},
        {"c1", 1, 0, 1, NULL, "control"},
        {"utf", 1, 12, 0, "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82",
         NULL},
        {"utf", 1, 11, 0, NULL, "too long"},
    };
    json_t *j = load_fixture();

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        static const char sentinel[] = "untouched";
        const char *out = sentinel;
        struct sb_json_err err;
        int rc;

        memset(&err, 0, sizeof(err));
        rc = sb_json_get_str(j, rows[i].key, rows[i].required, rows[i].maxlen,
                             rows[i].allow_ctl, &out, &err);
        if (rows[i].err) {
            check_fail(rc, &err, rows[i].key, rows[i].err, i);
            assert_ptr_equal(out, sentinel);
        } else {
            assert_int_equal(rc, 0);
            if (rows[i].want)
                assert_string_equal(out, rows[i].want);
            else
                assert_ptr_equal(out, sentinel);
        }
    }
    json_decref(j);
}

static void test_get_int(void **state)
{
    static const struct {
        const char *key;
        int required;
        long long min, max;
        int has_want;
        long long want;
        const char *err;
    } rows[] = {
        {"n", 1, 0, 10, 1, 5, NULL},
        {"n", 1, 5, 5, 1, 5, NULL},
        {"n", 1, 6, 10, 0, 0, "out of range"},
        {"n", 1, 0, 4, 0, 0, "out of range"},
        {"neg", 1, -10, 10, 1, -5, NULL},
        {"neg", 1, 0, 10, 0, 0, "out of range"},
        {"zero", 1, 0, 0, 1, 0, NULL},
        {"big", 1, LLONG_MIN, LLONG_MAX, 1, LLONG_MAX, NULL},
        {"big", 1, 0, LLONG_MAX - 1, 0, 0, "out of range"},
        {"small", 1, LLONG_MIN, 0, 1, LLONG_MIN, NULL},
        {"r", 1, 0, 10, 0, 0, "must be an integer"},
        {"s", 1, 0, 10, 0, 0, "must be an integer"},
        {"b", 1, 0, 10, 0, 0, "must be an integer"},
        {"nul", 0, 0, 10, 0, 0, "must be an integer"},
        {"arr", 0, 0, 10, 0, 0, "must be an integer"},
        {"missing", 1, 0, 10, 0, 0, "missing"},
        {"missing", 0, 0, 10, 0, 0, NULL},
    };
    json_t *j = load_fixture();

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        long long out = 424242;
        struct sb_json_err err;
        int rc;

        memset(&err, 0, sizeof(err));
        rc = sb_json_get_int(j, rows[i].key, rows[i].required, rows[i].min,
                             rows[i].max, &out, &err);
        if (rows[i].err) {
            check_fail(rc, &err, rows[i].key, rows[i].err, i);
            assert_true(out == 424242);
        } else {
            assert_int_equal(rc, 0);
            assert_true(out == (rows[i].has_want ? rows[i].want : 424242));
        }
    }
    json_decref(j);
}

static void test_get_bool(void **state)
{
    static const struct {
        const char *key;
        int required;
        int want; /* -1: untouched */
        const char *err;
    } rows[] = {
        {"b", 1, 1, NULL},
        {"f", 1, 0, NULL},
        {"b", 0, 1, NULL},
        {"n", 1, -1, "true or false"},
        {"zero", 1, -1, "true or false"},
        {"s", 1, -1, "true or false"},
        {"nul", 0, -1, "true or false"},
        {"missing", 1, -1, "missing"},
        {"missing", 0, -1, NULL},
    };
    json_t *j = load_fixture();

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int out = -1;
        struct sb_json_err err;
        int rc;

        memset(&err, 0, sizeof(err));
        rc = sb_json_get_bool(j, rows[i].key, rows[i].required, &out, &err);
        if (rows[i].err)
            check_fail(rc, &err, rows[i].key, rows[i].err, i);
        else
            assert_int_equal(rc, 0);
        assert_int_equal(out, rows[i].want);
    }
    json_decref(j);
}

static void test_get_enum(void **state)
{
    static const char *const modes[] = {"email", "sms", "chat", NULL};
    static const char *const none[] = {NULL};
    json_t *j = load_fixture();
    struct sb_json_err err;
    const char *out = NULL;

    (void)state;
    assert_int_equal(sb_json_get_enum(j, "mode", 1, modes, &out, &err), 0);
    assert_ptr_equal(out, modes[1]); /* points into choices */
    out = NULL;
    check_fail(sb_json_get_enum(j, "s", 1, modes, &out, &err), &err, "s",
               "must be one of: email, sms, chat", 0);
    assert_null(out);
    check_fail(sb_json_get_enum(j, "n", 1, modes, &out, &err), &err, "n",
               "must be one of", 1);
    check_fail(sb_json_get_enum(j, "nul", 0, modes, &out, &err), &err, "nul",
               "must be one of", 2);
    check_fail(sb_json_get_enum(j, "mode", 1, none, &out, &err), &err, "mode",
               "must be one of", 3);
    check_fail(sb_json_get_enum(j, "missing", 1, modes, &out, &err), &err,
               "missing", "missing", 4);
    assert_int_equal(sb_json_get_enum(j, "missing", 0, modes, &out, &err), 0);
    assert_null(out);
    json_decref(j);
}

static void test_get_obj(void **state)
{
    json_t *j = load_fixture();
    struct sb_json_err err;
    json_t *out = NULL;
    long long x = 0;

    (void)state;
    assert_int_equal(sb_json_get_obj(j, "o", 1, &out, &err), 0);
    assert_non_null(out);
    assert_int_equal(sb_json_get_int(out, "x", 1, 0, 9, &x, &err), 0);
    assert_true(x == 1);
    check_fail(sb_json_get_obj(j, "s", 1, &out, &err), &err, "s",
               "must be an object", 0);
    check_fail(sb_json_get_obj(j, "arr", 1, &out, &err), &err, "arr",
               "must be an object", 1);
    check_fail(sb_json_get_obj(j, "nul", 0, &out, &err), &err, "nul",
               "must be an object", 2);
    check_fail(sb_json_get_obj(j, "missing", 1, &out, &err), &err, "missing",
               "missing", 3);
    out = j;
    assert_int_equal(sb_json_get_obj(j, "missing", 0, &out, &err), 0);
    assert_null(out);
    /* helpers refuse a non-object container instead of crashing */
    {
        json_t *arr = json_array();
        const char *s = NULL;
        assert_int_equal(sb_json_get_str(arr, "k", 0, 0, 0, &s, &err), -1);
        assert_int_equal(sb_json_get_str(NULL, "k", 0, 0, 0, &s, &err), -1);
        json_decref(arr);
    }
    json_decref(j);
}

static void test_only(void **state)
{
    static const char *const ab[] = {"a", "b", "c", NULL};
    static const char *const a[] = {"a", NULL};
    static const char *const none[] = {NULL};
    struct sb_json_err err;
    json_t *j, *bad, *empty;

    (void)state;
    j = sb_json_parse_body(B("{\"a\":1,\"b\":2}"), &err);
    assert_non_null(j);
    assert_int_equal(sb_json_only(j, ab, &err), 0);
    assert_int_equal(sb_json_only(j, a, &err), -1);
    assert_string_equal(err.field, "b");
    assert_string_equal(err.error, "unknown field");
    assert_int_equal(sb_json_only(j, none, &err), -1);
    assert_string_equal(err.field, "a");
    empty = sb_json_parse_body(B("{}"), &err);
    assert_int_equal(sb_json_only(empty, none, &err), 0);
    /* a hostile key is kept printable and bounded in err.field */
    bad = sb_json_parse_body(
        B("{\"a\":1,\"\\u00e9\\n\\\"x<script>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}"),
        &err);
    assert_non_null(bad);
    assert_int_equal(sb_json_only(bad, a, &err), -1);
    assert_true(strlen(err.field) < sizeof(err.field));
    assert_int_equal(strncmp(err.field, "??", 2), 0);
    for (const char *p = err.field; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    json_decref(bad);
    json_decref(empty);
    json_decref(j);
}

static void test_fail(void **state)
{
    struct sb_json_err err;
    char longtext[400];

    (void)state;
    assert_int_equal(sb_json_fail(&err, "to", "bad %s #%d", "thing", 7), -1);
    assert_string_equal(err.error, "bad thing #7");
    assert_string_equal(err.field, "to");
    assert_int_equal(sb_json_fail(&err, NULL, "x"), -1);
    assert_string_equal(err.field, "");
    memset(longtext, 'z', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';
    assert_int_equal(sb_json_fail(&err, longtext, "%s", longtext), -1);
    assert_int_equal(strlen(err.error), sizeof(err.error) - 1);
    assert_int_equal(strlen(err.field), sizeof(err.field) - 1);
    assert_int_equal(sb_json_fail(NULL, "f", "x"), -1);
}

/* ---- error body -------------------------------------------------------- */

static void test_error_body(void **state)
{
    static const struct {
        const char *error;
        const char *field;
        int exact; /* 1: must round-trip byte for byte */
    } rows[] = {
        {"bad request", "to", 1},
        {"bad request", "", 1},
        {"bad request", NULL, 1},
        {"say \"hi\"", "f\"q", 1},
        {"back\\slash \\u0000 \\", "a\\b", 1},
        {"line\nbreak\r\n", "x\ny", 1},
        {"tab\there", NULL, 1},
        {"ctl \x01\x02\x1f\x7f end", "\x1b[31m", 1},
        {"\xd0\xbe\xd1\x88\xd0\xb8\xd0\xb1\xd0\xba\xd0\xb0 \xe2\x82\xac "
         "\xf0\x9f\x98\x80",
         "\xd0\xbf", 1},
        {"</script><script>alert(1)</script>", "<", 1},
        {"bad utf8 \xff\xfe \xc3 \xed\xa0\x80 end", "\xc0\xaf", 0},
        {"truncated \xd0", NULL, 0},
        {"", "f", 0},
        {NULL, NULL, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct sb_buf out;
        json_error_t jerr;
        json_t *j, *e, *f;

        sb_buf_init(&out, 0);
        sb_buf_appends(&out, "prefix:");
        sb_json_error_body(&out, rows[i].error, rows[i].field);
        assert_int_equal(strncmp(out.data, "prefix:", 7), 0);
        assert_true(sb_utf8_valid(out.data, out.len));
        j = json_loadb(out.data + 7, out.len - 7, JSON_REJECT_DUPLICATES,
                       &jerr);
        if (!j)
            print_error("row %zu: %s: %s\n", i, out.data, jerr.text);
        assert_non_null(j);
        assert_true(json_is_object(j));
        e = json_object_get(j, "error");
        f = json_object_get(j, "field");
        assert_true(json_is_string(e));
        assert_true(json_string_length(e) > 0);
        if (rows[i].exact)
            assert_string_equal(json_string_value(e), rows[i].error);
        if (rows[i].field && *rows[i].field) {
            assert_true(json_is_string(f));
            if (rows[i].exact)
                assert_string_equal(json_string_value(f), rows[i].field);
            assert_int_equal(json_object_size(j), 2);
        } else {
            assert_null(f);
            assert_int_equal(json_object_size(j), 1);
        }
        json_decref(j);
        sb_buf_free(&out);
    }
}

static void test_error_body_from_err(void **state)
{
    struct sb_json_err err;
    struct sb_buf out;
    json_t *j;

    (void)state;
    /* the path the API takes: a parse failure straight into a body */
    assert_null(sb_json_parse_body(B("{\"a\":\"\xff\\\"\n}"), &err));
    sb_buf_init(&out, 0);
    sb_json_error_body(&out, err.error, err.field);
    j = json_loads(out.data, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        err.error);
    json_decref(j);
    /* a capped buffer gets the short form rather than a torn body */
    sb_buf_free(&out);
    sb_buf_init(&out, 24);
    sb_json_error_body(&out, "a very long error text that will not fit",
                       "field");
    j = json_loads(out.data, 0, NULL);
    assert_non_null(j);
    json_decref(j);
    sb_buf_free(&out);
}

static void test_dump_buf(void **state)
{
    struct sb_json_err err;
    struct sb_buf out;
    json_t *j, *s;

    (void)state;
    j = sb_json_parse_body(B("{ \"a\" : 1, \"b\" : [ true, null ], "
                             "\"c\" : \"\\u00e9\\n\" }"),
                           &err);
    assert_non_null(j);
    sb_buf_init(&out, 0);
    sb_buf_appends(&out, ">");
    assert_int_equal(sb_json_dump_buf(j, &out), 0);
    assert_string_equal(out.data,
                        ">{\"a\":1,\"b\":[true,null],\"c\":\"\xc3\xa9\\n\"}");
    sb_buf_free(&out);
    /* cap hit: -1 and out unchanged */
    sb_buf_init(&out, 10);
    sb_buf_appends(&out, "keep");
    assert_int_equal(sb_json_dump_buf(j, &out), -1);
    assert_int_equal(out.len, 4);
    assert_string_equal(out.data, "keep");
    sb_buf_free(&out);
    /* scalars serialise too */
    s = json_string("x\"y");
    sb_buf_init(&out, 0);
    assert_int_equal(sb_json_dump_buf(s, &out), 0);
    assert_string_equal(out.data, "\"x\\\"y\"");
    assert_int_equal(sb_json_dump_buf(NULL, &out), -1);
    assert_string_equal(out.data, "\"x\\\"y\"");
    sb_buf_free(&out);
    json_decref(s);
    json_decref(j);
}

/* ---- corpus replay ---------------------------------------------------- */

/* y_ files that are valid JSON but refused as request bodies: top-level
 * scalars, \u0000 in a string or key, duplicate keys. A jansson upgrade or
 * a change of flags shows up here. */
static const char *const y_rejected[] = {
    "y_string_space.json",          "y_structure_lonely_false.json",
    "y_structure_lonely_int.json",  "y_structure_lonely_negative_real.json",
    "y_structure_lonely_null.json", "y_structure_lonely_string.json",
    "y_structure_lonely_true.json", "y_structure_string_empty.json",
    "y_string_null_escape.json",    "y_object_escaped_null_in_key.json",
    "y_object_duplicated_key.json", "y_object_duplicated_key_and_value.json",
};

/* The corpus root: $SB_CORPORA, else ../shared/corpora beside the repo
 * root, found by walking up from the working directory to the directory
 * that holds src/json.h. Returns 0 and fills out, or -1. */
static int corpus_root(char *out, size_t outlen)
{
    const char *env = getenv("SB_CORPORA");
    char dir[PATH_MAX], probe[PATH_MAX + 32];
    struct stat st;

    if (env && *env) {
        snprintf(out, outlen, "%s", env);
        return 0;
    }
    if (!getcwd(dir, sizeof(dir)))
        return -1;
    for (int up = 0; up < 8; up++) {
        char *slash;

        int n = snprintf(probe, sizeof(probe), "%s/src/json.h", dir);
        if (n > 0 && (size_t)n < sizeof(probe) && stat(probe, &st) == 0) {
            int n = snprintf(out, outlen, "%s/../shared/corpora", dir);
            return n > 0 && (size_t)n < outlen ? 0 : -1;
        }
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
            break;
        *slash = '\0';
    }
    return -1;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read a whole file, at most 4 MiB. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct sb_buf b;
    char chunk[65536];
    size_t n;

    if (!f)
        return NULL;
    sb_buf_init(&b, 4u << 20);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (sb_buf_append(&b, chunk, n) < 0) {
            sb_buf_free(&b);
            fclose(f);
            return NULL;
        }
    }
    fclose(f);
    return sb_buf_steal(&b, len);
}

/* What was accepted must serialise to valid UTF-8 and decode again. */
static void check_accepted(const char *name, json_t *j)
{
    struct sb_json_err err;
    struct sb_buf out;
    json_t *again;

    sb_buf_init(&out, 0);
    assert_int_equal(sb_json_dump_buf(j, &out), 0);
    if (!sb_utf8_valid(out.data, out.len))
        print_error("corpus: %s: output not UTF-8\n", name);
    assert_true(sb_utf8_valid(out.data, out.len));
    again = sb_json_parse_body(out.data, out.len, &err);
    if (!again)
        print_error("corpus: %s: re-parse failed: %s\n", name, err.error);
    assert_non_null(again);
    assert_true(json_equal(j, again));
    json_decref(again);
    sb_buf_free(&out);
}

/* The document wrapped as {"v": <bytes>}: the object path for the many
 * files whose top level is an array or a scalar. Valid documents must
 * still be accepted unless they hold \u0000 or duplicate keys. Returns 1
 * when accepted. */
static int replay_wrapped(const char *name, const char *body, size_t len)
{
    static const char *const refused[] = {
        "y_string_null_escape.json",
        "y_object_escaped_null_in_key.json",
        "y_object_duplicated_key.json",
        "y_object_duplicated_key_and_value.json",
    };
    struct sb_json_err err;
    size_t n = len + 6;
    char *w = sb_malloc(n);
    int listed = 0;
    json_t *j;

    memcpy(w, "{\"v\":", 5);
    memcpy(w + 5, body, len);
    w[n - 1] = '}';
    j = sb_json_parse_body(w, n, &err);
    for (size_t k = 0; k < sizeof(refused) / sizeof(refused[0]); k++)
        if (strcmp(name, refused[k]) == 0)
            listed = 1;
    if (name[0] == 'y') {
        if ((j == NULL) != listed)
            print_error("corpus: wrapped %s: %s\n", name,
                        j ? "accepted" : err.error);
        assert_int_equal(j == NULL, listed);
    }
    if (j)
        check_accepted(name, j);
    json_decref(j);
    free(w);
    return j != NULL;
}

static void test_corpus(void **state)
{
    char root[PATH_MAX], dir[PATH_MAX + 8];
    char **names = NULL;
    size_t count = 0, alloc = 0;
    size_t y_ok = 0, y_rej = 0, y_array = 0, n_rej = 0, i_ok = 0, i_rej = 0;
    size_t y_listed_seen = 0, wrapped_ok = 0;
    struct dirent *de;
    DIR *d;

    (void)state;
    if (corpus_root(root, sizeof(root)) < 0) {
        printf("corpus: skipped (no ../shared/corpora)\n");
        skip();
    }
    if (snprintf(dir, sizeof(dir), "%s/json", root) >= (int)sizeof(dir))
        d = NULL;
    else
        d = opendir(dir);
    if (!d) {
        printf("corpus: skipped (no ../shared/corpora)\n");
        skip();
    }
    while ((de = readdir(d)) != NULL && count < 10000) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
            continue;
        if (count == alloc) {
            alloc = alloc ? alloc * 2 : 512;
            names = sb_realloc(names, alloc * sizeof(*names));
        }
        names[count++] = sb_strdup(de->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof(*names), name_cmp);

    for (size_t i = 0; i < count; i++) {
        char path[PATH_MAX + 300];
        const char *name = names[i];
        struct sb_json_err err;
        size_t len = 0;
        char *body;
        json_t *j;
        int listed = 0;

        if (snprintf(path, sizeof(path), "%s/%s", dir, name) >=
            (int)sizeof(path))
            fail_msg("corpus: path too long: %s", name);
        body = read_all(path, &len);
        if (!body)
            print_error("corpus: cannot read %s\n", name);
        assert_non_null(body);
        /* Decode from an exact-size heap copy so ASan sees any overread. */
        {
            char *exact = sb_malloc(len ? len : 1);
            memcpy(exact, body, len);
            free(body);
            body = exact;
        }
        j = sb_json_parse_body(body, len, &err);
        for (size_t k = 0; k < sizeof(y_rejected) / sizeof(y_rejected[0]); k++)
            if (strcmp(name, y_rejected[k]) == 0)
                listed = 1;

        if (j)
            check_accepted(name, j);

        if (name[0] == 'y') {
            if (listed) {
                y_listed_seen++;
                if (j)
                    print_error("corpus: %s accepted, expected 400\n", name);
                assert_null(j);
                y_rej++;
            } else if (j) {
                y_ok++;
            } else {
                /* Valid JSON refused only for its shape: a top-level
                 * array. Prove it is that and nothing else. */
                json_t *raw =
                    json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
                if (strcmp(err.error, "body must be a JSON object") != 0 ||
                    !json_is_array(raw))
                    print_error("corpus: %s rejected: %s\n", name, err.error);
                assert_string_equal(err.error, "body must be a JSON object");
                assert_true(json_is_array(raw));
                json_decref(raw);
                y_array++;
            }
        } else if (name[0] == 'n') {
            if (j)
                print_error("corpus: %s accepted\n", name);
            assert_null(j);
            n_rej++;
        } else if (name[0] == 'i') {
            if (j)
                i_ok++;
            else
                i_rej++;
        }
        json_decref(j);
        wrapped_ok += (size_t)replay_wrapped(name, body, len);
        free(body);
        free(names[i]);
    }
    free(names);
    printf("corpus: %zu files: y %zu accepted, %zu top-level arrays "
           "refused, %zu expected rejects; n %zu rejected; i %zu accepted, "
           "%zu rejected; wrapped in an object: %zu accepted\n",
           count, y_ok, y_array, y_rej, n_rej, i_ok, i_rej, wrapped_ok);
    assert_int_equal(y_listed_seen, sizeof(y_rejected) / sizeof(y_rejected[0]));
    assert_true(y_ok > 0);
    assert_true(n_rej > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_details),
        cmocka_unit_test(test_parse_depth),
        cmocka_unit_test(test_get_str),
        cmocka_unit_test(test_get_int),
        cmocka_unit_test(test_get_bool),
        cmocka_unit_test(test_get_enum),
        cmocka_unit_test(test_get_obj),
        cmocka_unit_test(test_only),
        cmocka_unit_test(test_fail),
        cmocka_unit_test(test_error_body),
        cmocka_unit_test(test_error_body_from_err),
        cmocka_unit_test(test_dump_buf),
        cmocka_unit_test(test_corpus),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
