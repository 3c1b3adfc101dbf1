/* fuzz_json.c - libFuzzer target for request-body decoding.
 *
 * Feeds raw bytes to sb_json_parse_body() exactly as the HTTP layer does,
 * then exercises what the API does next: the member helpers on every key,
 * sb_json_only(), serialisation, and the error body. Invariants that
 * abort(): an accepted body is an object that serialises to valid UTF-8
 * and decodes again to an equal value; a rejection carries a printable
 * reason; every error body is a JSON object.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void check_printable(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    if (n == cap)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            abort();
}

static void check_error_body(const struct sb_json_err *err)
{
    struct sb_buf b;
    json_t *j;

    check_printable(err->error, sizeof(err->error));
    check_printable(err->field, sizeof(err->field));
    sb_buf_init(&b, 0);
    sb_json_error_body(&b, err->error, err->field);
    j = json_loadb(b.data, b.len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(j) || !json_is_string(json_object_get(j, "error")))
        abort();
    json_decref(j);
    sb_buf_free(&b);
}

static void exercise_members(json_t *obj)
{
    static const char *const choices[] = {"email", "sms", "chat", NULL};
    static const char *const allowed[] = {"to", "channel", "text", NULL};
    struct sb_json_err err;
    const char *k;
    json_t *v;

    json_object_foreach(obj, k, v)
    {
        const char *s = NULL;
        long long n = 0;
        int b = 0;
        json_t *o = NULL;

        if (sb_json_get_str(obj, k, 1, 64, 0, &s, &err) < 0)
            check_error_body(&err);
        else if (!s || strlen(s) > 64)
            abort();
        if (sb_json_get_str(obj, k, 1, 0, 1, &s, &err) < 0)
            check_error_body(&err);
        if (sb_json_get_int(obj, k, 1, -1000, 1000, &n, &err) < 0)
            check_error_body(&err);
        else if (n < -1000 || n > 1000)
            abort();
        if (sb_json_get_bool(obj, k, 1, &b, &err) < 0)
            check_error_body(&err);
        if (sb_json_get_enum(obj, k, 1, choices, &s, &err) < 0)
            check_error_body(&err);
        if (sb_json_get_obj(obj, k, 1, &o, &err) < 0)
            check_error_body(&err);
        else if (!json_is_object(o))
            abort();
    }
    if (sb_json_only(obj, allowed, &err) < 0)
        check_error_body(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sb_json_err err;
    struct sb_buf out;
    json_t *j, *again;

    /* An exact-size copy so any overread is caught by ASan. */
    char *body = sb_malloc(size ? size : 1);
    memcpy(body, data, size);
    memset(&err, 0, sizeof(err));
    j = sb_json_parse_body(body, size, &err);
    free(body);
    if (!j) {
        if (err.error[0] == '\0')
            abort();
        check_error_body(&err);
        return 0;
    }
    if (!json_is_object(j))
        abort();
    sb_buf_init(&out, 0);
    if (sb_json_dump_buf(j, &out) < 0)
        abort();
    if (!sb_utf8_valid(out.data, out.len))
        abort();
    again = sb_json_parse_body(out.data, out.len, &err);
    if (!again || !json_equal(j, again))
        abort();
    json_decref(again);
    sb_buf_free(&out);
    exercise_members(j);
    json_decref(j);
    return 0;
}
