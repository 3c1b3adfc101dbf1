/* fuzz_notify.c - libFuzzer target for a notification stream entry.
 *
 * A business system XADDs any field names and values it likes to
 * <prefix>notify; sb_notify_from_fields() is the first code to see them.
 * The input is split at NUL bytes into name, value, name, value, ... (at
 * most 32 pairs) and validated against the shipped templates
 * (config/templates, or $SB_TEMPLATES). Invariants that abort(): a refusal
 * has a reason; an accepted entry has an event, a recipient, a priority of
 * normal or urgent, data that is a JSON object and channels that are empty
 * or a JSON array.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "notify_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void load_templates(void)
{
    const char *dir = getenv("SB_TEMPLATES");
    char err[256];

    if (sb_ntf.tpl)
        return;
    sb_ntf.tpl = sb_tpl_load(dir ? dir : "config/templates", err,
                             sizeof(err));
    if (!sb_ntf.tpl)
        abort();
    sb_ntf.default_country = "RU";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *part[64];
    size_t len[64], n = 0, start = 0;
    struct sb_ntf_in in;
    struct sb_json_err err;
    json_t *d;

    load_templates();
    for (size_t i = 0; i <= size && n < 64; i++) {
        if (i == size || data[i] == '\0') {
            part[n] = (const char *)data + start;
            len[n] = i - start;
            n++;
            start = i + 1;
        }
    }
    n &= ~(size_t)1;
    {
        const char *names[32], *vals[32];
        size_t nl[32], vl[32];
        for (size_t k = 0; k < n / 2; k++) {
            names[k] = part[2 * k];
            nl[k] = len[2 * k];
            vals[k] = part[2 * k + 1];
            vl[k] = len[2 * k + 1];
        }
        memset(&err, 0, sizeof(err));
        if (sb_notify_from_fields(names, nl, vals, vl, n / 2, &in, &err) <
            0) {
            if (!err.error[0])
                abort();
            return 0;
        }
    }
    if (!in.event[0] || (!in.customer[0] && !in.email[0] && !in.phone[0]) ||
        (strcmp(in.priority, "normal") && strcmp(in.priority, "urgent")))
        abort();
    d = json_loads(in.data, 0, NULL);
    if (!json_is_object(d))
        abort();
    json_decref(d);
    if (in.channels[0]) {
        d = json_loads(in.channels, 0, NULL);
        if (!json_is_array(d))
            abort();
        json_decref(d);
    }
    sb_ntf_in_free(&in);
    return 0;
}
