/* fuzz_template.c - libFuzzer target for the template parser and renderer.
 *
 * The first byte picks the mode (bit 0: HTML escaping, bit 1: ru rules,
 * bit 2: Moscow time), the rest is one template text for sb_tpl_parse().
 * Invariants that abort(): a refusal carries "line N: reason"; an accepted
 * template renders against a fixed context to valid UTF-8 or fails with a
 * reason; a text without "{{" renders to itself (less one trailing
 * newline); parsing the same text twice gives the same output.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "template.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *CTX;

static json_t *context(void)
{
    json_error_t je;

    if (!CTX)
        CTX = json_loads(
            "{\"event\": \"order.shipped\", \"ref\": \"r-1\","
            " \"notification\": {\"id\": \"nt_1\"},"
            " \"customer\": {\"id\": \"c1\", \"name\": \"Иван <b>&'\\\"\"},"
            " \"data\": {\"order\": \"A-1\", \"amount\": 1234.5,"
            " \"price\": \"-0.005\", \"currency\": \"RUB\", \"cur\": \"usd\","
            " \"bad\": \"XX\", \"date\": \"2026-12-01T11:05:00Z\","
            " \"day\": \"2026-12-01\", \"ms\": 1796123100000,"
            " \"n\": null, \"e\": \"\", \"t\": true, \"f\": 2.5e-7,"
            " \"items\": [{\"name\": \"ёлка\"}, 7], \"o\": {\"k\": \"v\"},"
            " \"big\": 1e300}}",
            0, &je);
    if (!CTX)
        abort();
    return CTX;
}

/* Render text; returns a new string (the output, or the error when
 * *failed is set), or NULL when the text does not parse. */
static char *run(const char *text, size_t len, int html,
                 const struct sb_tpl_env *env, int *parsed, int *failed)
{
    char err[256] = "";
    struct sb_tpl *t = sb_tpl_parse(text, len, html, err, sizeof(err));
    struct sb_rendered r;
    char *out;

    *parsed = t != NULL;
    *failed = 0;
    if (!t) {
        if (strncmp(err, "line ", 5) != 0 || !strstr(err, ": "))
            abort();
        return NULL;
    }
    if (sb_tpl_render(t, context(), env, &r, err, sizeof(err)) < 0) {
        if (!err[0] || r.text || r.subject || r.html)
            abort();
        out = sb_strdup(err);
        *failed = 1;
    } else {
        if (!r.text || r.subject || r.html ||
            !sb_utf8_valid(r.text, strlen(r.text)))
            abort();
        out = sb_strdup(r.text);
        sb_rendered_free(&r);
    }
    sb_tpl_destroy(t);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sb_tpl_env env;
    const char *text;
    char *a, *b;
    int html, p1, p2, f1, f2;

    if (size == 0)
        return 0;
    html = data[0] & 1;
    env.locale = (data[0] & 2) ? "ru" : "en";
    env.timezone = (data[0] & 4) ? "Europe/Moscow" : NULL;
    text = (const char *)data + 1;
    size--;
    a = run(text, size, html, &env, &p1, &f1);
    b = run(text, size, html, &env, &p2, &f2);
    if (p1 != p2 || f1 != f2 || (a && (!b || strcmp(a, b) != 0)))
        abort();
    if (a && !memmem(text, size, "{{", 2)) {
        size_t n = size;

        if (n && text[n - 1] == '\n') {
            n--;
            if (n && text[n - 1] == '\r')
                n--;
        }
        if (f1 || strlen(a) != n || memcmp(a, text, n) != 0)
            abort();
    }
    free(a);
    free(b);
    return 0;
}
