/* json.h - strict JSON request bodies and the API's error shape.
 *
 * Request bodies are decoded with json_loadb() and JSON_REJECT_DUPLICATES
 * (never JSON_DECODE_ANY): the top level must be an object, invalid UTF-8,
 * lone surrogates and \u0000 are rejected (jansson's defaults), nesting is
 * limited to SB_JSON_MAX_DEPTH, and a body with a NUL byte is refused before
 * decoding.
 *
 * Field helpers read one member with a type check and bounds, and on failure
 * fill struct sb_json_err so the API can answer
 * {"error": "...", "field": "..."} with 400.
 */
#ifndef SB_JSON_H
#define SB_JSON_H

#include <stddef.h>
#include <jansson.h>

#include "util.h"

#define SB_JSON_MAX_DEPTH 32

struct sb_json_err {
    char error[160]; /* human-readable reason */
    char field[64];  /* the offending member, "" when not about one */
};

/* Decode a request body. Returns a new reference to an object, or NULL with
 * err filled ("invalid JSON: <jansson's text> at line L column C", "body
 * must be a JSON object", "nesting too deep", "NUL byte in body"). */
json_t *sb_json_parse_body(const char *body, size_t len,
                           struct sb_json_err *err);

/* Members. `required` 1 makes absence an error; when absent and optional,
 * *out is left untouched and 0 is returned. Strings must be valid UTF-8
 * (jansson guarantees it) with 0 < length <= maxlen bytes (maxlen 0: no
 * limit) and no control characters except \t \r \n when allow_ctl is 1.
 * Returns 0 or -1 (err filled with field set). *out is borrowed from obj. */
int sb_json_get_str(json_t *obj, const char *key, int required, size_t maxlen,
                    int allow_ctl, const char **out, struct sb_json_err *err);
int sb_json_get_int(json_t *obj, const char *key, int required, long long min,
                    long long max, long long *out, struct sb_json_err *err);
int sb_json_get_bool(json_t *obj, const char *key, int required, int *out,
                     struct sb_json_err *err);
/* Value must be one of choices (NULL-terminated). */
int sb_json_get_enum(json_t *obj, const char *key, int required,
                     const char *const *choices, const char **out,
                     struct sb_json_err *err);
/* Object member (borrowed) or NULL when absent and optional. */
int sb_json_get_obj(json_t *obj, const char *key, int required, json_t **out,
                    struct sb_json_err *err);

/* Reject members not in allowed (NULL-terminated): "unknown field". */
int sb_json_only(json_t *obj, const char *const *allowed,
                 struct sb_json_err *err);

/* Fill err (printf-like reason) and return -1. */
int sb_json_fail(struct sb_json_err *err, const char *field, const char *fmt,
                 ...) __attribute__((format(printf, 3, 4)));

/* Append {"error": "...", "field": "..."} (field omitted when empty) to out,
 * properly escaped. */
void sb_json_error_body(struct sb_buf *out, const char *error,
                        const char *field);

/* Serialise compactly into out (appends). 0 or -1 when out's cap is hit. */
int sb_json_dump_buf(const json_t *j, struct sb_buf *out);

#endif
