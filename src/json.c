/* json.c - strict JSON request bodies and the API's error shape.
 *
 * Every request body the API accepts goes through sb_json_parse_body():
 * jansson decodes it with duplicate keys refused, and we add what jansson
 * leaves to the caller (NUL bytes, the object-only top level, a nesting
 * limit far below jansson's compiled-in 2048). The member helpers then read
 * one field each with a type check and bounds, and report the first
 * problem in struct sb_json_err, which sb_json_error_body() turns into the
 * {"error": ..., "field": ...} answer. Error texts can carry bytes from the
 * request (a key name, jansson's "near '...'"), so they are cleaned when
 * stored and escaped again, UTF-8 checked, when written out.
 */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Copy s into dst (size dstlen) keeping printable ASCII only: anything
 * else becomes '?'. Used for text that may come from the request. */
static void clean_copy(char *dst, size_t dstlen, const char *s)
{
    size_t i = 0;

    if (dstlen == 0)
        return;
    for (; s && s[i] && i + 1 < dstlen; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    dst[i] = '\0';
}

int sb_json_fail(struct sb_json_err *err, const char *field, const char *fmt,
                 ...)
{
    char tmp[sizeof(err->error)];
    va_list ap;

    if (!err)
        return -1;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    clean_copy(err->error, sizeof(err->error), tmp);
    clean_copy(err->field, sizeof(err->field), field ? field : "");
    return -1;
}

/* Depth of nested containers, counting the top level as 1; stops looking
 * once it passes limit, so the recursion is bounded by limit too. */
static int json_depth_over(json_t *j, int depth, int limit)
{
    if (!json_is_object(j) && !json_is_array(j))
        return 0;
    if (depth > limit)
        return 1;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            if (json_depth_over(v, depth + 1, limit))
                return 1;
        }
    } else {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            if (json_depth_over(v, depth + 1, limit))
                return 1;
        }
    }
    return 0;
}

json_t *sb_json_parse_body(const char *body, size_t len,
                           struct sb_json_err *err)
{
    json_error_t jerr;
    json_t *j;

    if (!body) {
        body = "";
        len = 0;
    }
    if (memchr(body, '\0', len)) {
        sb_json_fail(err, NULL, "NUL byte in body");
        return NULL;
    }
    j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        sb_json_fail(err, NULL, "invalid JSON: %s at line %d column %d",
                     jerr.text, jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        sb_json_fail(err, NULL, "body must be a JSON object");
        return NULL;
    }
    if (json_depth_over(j, 1, SB_JSON_MAX_DEPTH)) {
        json_decref(j);
        sb_json_fail(err, NULL, "nesting too deep");
        return NULL;
    }
    return j;
}

/* The member, or NULL (0 returned) when absent and optional; -1 when it is
 * absent and required or obj is not an object. */
static int member(json_t *obj, const char *key, int required, json_t **v,
                  struct sb_json_err *err)
{
    *v = NULL;
    if (!json_is_object(obj))
        return sb_json_fail(err, key, "expected an object");
    *v = json_object_get(obj, key);
    if (!*v && required)
        return sb_json_fail(err, key, "missing required field");
    return 0;
}


/* 1 when s has a control character: C0 (except \t \r \n when allow_ctl),
 * DEL or C1. Also catches a NUL inside the string. */
static int has_control(const char *s, size_t n, int allow_ctl)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = sb_utf8_seq(p + i, n - i, &cp);

        if (k == 0)
            return 1; /* cannot happen for jansson strings */
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
            if (!(allow_ctl && (cp == '\t' || cp == '\r' || cp == '\n')))
                return 1;
        }
        i += k;
    }
    return 0;
}

int sb_json_get_str(json_t *obj, const char *key, int required, size_t maxlen,
                    int allow_ctl, const char **out, struct sb_json_err *err)
{
    json_t *v;
    size_t n;

    if (member(obj, key, required, &v, err) < 0)
        return -1;
    if (!v)
        return 0;
    if (!json_is_string(v))
        return sb_json_fail(err, key, "must be a string");
    n = json_string_length(v);
    if (n == 0)
        return sb_json_fail(err, key, "must not be empty");
    if (maxlen && n > maxlen)
        return sb_json_fail(err, key, "too long (at most %zu bytes)", maxlen);
    if (has_control(json_string_value(v), n, allow_ctl))
        return sb_json_fail(err, key, "must not contain control characters");
    *out = json_string_value(v);
    return 0;
}

int sb_json_get_int(json_t *obj, const char *key, int required, long long min,
                    long long max, long long *out, struct sb_json_err *err)
{
    json_t *v;
    long long x;

    if (member(obj, key, required, &v, err) < 0)
        return -1;
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return sb_json_fail(err, key, "must be an integer");
    x = (long long)json_integer_value(v);
    if (x < min || x > max)
        return sb_json_fail(err, key, "out of range (%lld..%lld)", min, max);
    *out = x;
    return 0;
}

int sb_json_get_bool(json_t *obj, const char *key, int required, int *out,
                     struct sb_json_err *err)
{
    json_t *v;

    if (member(obj, key, required, &v, err) < 0)
        return -1;
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return sb_json_fail(err, key, "must be true or false");
    *out = json_is_true(v);
    return 0;
}

int sb_json_get_enum(json_t *obj, const char *key, int required,
                     const char *const *choices, const char **out,
                     struct sb_json_err *err)
{
    char list[sizeof(err->error)];
    size_t used = 0;
    json_t *v;
    const char *s;

    if (member(obj, key, required, &v, err) < 0)
        return -1;
    if (!v)
        return 0;
    if (json_is_string(v)) {
        s = json_string_value(v);
        for (size_t i = 0; choices && choices[i]; i++) {
            if (strlen(choices[i]) == json_string_length(v) &&
                strcmp(choices[i], s) == 0) {
                *out = choices[i];
                return 0;
            }
        }
    }
    list[0] = '\0';
    for (size_t i = 0; choices && choices[i]; i++) {
        int k = snprintf(list + used, sizeof(list) - used, "%s%s",
                         i ? ", " : "", choices[i]);
        if (k < 0 || (size_t)k >= sizeof(list) - used)
            break;
        used += (size_t)k;
    }
    return sb_json_fail(err, key, "must be one of: %s", list);
}

int sb_json_get_obj(json_t *obj, const char *key, int required, json_t **out,
                    struct sb_json_err *err)
{
    json_t *v;

    if (member(obj, key, required, &v, err) < 0)
        return -1;
    if (!v) {
        *out = NULL;
        return 0;
    }
    if (!json_is_object(v))
        return sb_json_fail(err, key, "must be an object");
    *out = v;
    return 0;
}

int sb_json_only(json_t *obj, const char *const *allowed,
                 struct sb_json_err *err)
{
    const char *k;
    json_t *v;

    if (!json_is_object(obj))
        return sb_json_fail(err, NULL, "expected an object");
    json_object_foreach(obj, k, v)
    {
        int ok = 0;

        for (size_t i = 0; allowed && allowed[i]; i++) {
            if (strcmp(allowed[i], k) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok)
            return sb_json_fail(err, k, "unknown field");
    }
    return 0;
}

/* Append s as the inside of a JSON string: quotes, backslashes and control
 * characters escaped, invalid UTF-8 replaced by U+FFFD, so the result is
 * valid JSON whatever s holds. */
static void escape_into(struct sb_buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);

    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = sb_utf8_seq(p + i, n - i, &cp);

        if (k == 0) {
            sb_buf_appends(b, "\\ufffd");
            i++;
            continue;
        }
        switch (cp) {
        case '"':
            sb_buf_appends(b, "\\\"");
            break;
        case '\\':
            sb_buf_appends(b, "\\\\");
            break;
        case '\n':
            sb_buf_appends(b, "\\n");
            break;
        case '\r':
            sb_buf_appends(b, "\\r");
            break;
        case '\t':
            sb_buf_appends(b, "\\t");
            break;
        default:
            if (cp < 0x20 || cp == 0x7f)
                sb_buf_printf(b, "\\u%04x", cp);
            else
                sb_buf_append(b, p + i, k);
        }
        i += k;
    }
}

void sb_json_error_body(struct sb_buf *out, const char *error,
                        const char *field)
{
    struct sb_buf tmp;

    sb_buf_init(&tmp, 0);
    sb_buf_appends(&tmp, "{\"error\":\"");
    escape_into(&tmp, error && *error ? error : "error");
    sb_buf_appends(&tmp, "\"");
    if (field && *field) {
        sb_buf_appends(&tmp, ",\"field\":\"");
        escape_into(&tmp, field);
        sb_buf_appends(&tmp, "\"");
    }
    sb_buf_appends(&tmp, "}");
    /* All or nothing against out's cap; the short form always fits a
     * buffer that is meant for error bodies. */
    if (sb_buf_append(out, tmp.data, tmp.len) < 0)
        sb_buf_appends(out, "{\"error\":\"error\"}");
    sb_buf_free(&tmp);
}

static int dump_cb(const char *buf, size_t size, void *data)
{
    return sb_buf_append(data, buf, size);
}

int sb_json_dump_buf(const json_t *j, struct sb_buf *out)
{
    size_t start = out->len;

    if (!j || json_dump_callback(j, dump_cb, out,
                                 JSON_COMPACT | JSON_ENCODE_ANY) != 0) {
        out->len = start;
        if (out->data)
            out->data[start] = '\0';
        return -1;
    }
    return 0;
}
