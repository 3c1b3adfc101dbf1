/* smsauth.h - Twilio webhook signatures and form-encoded bodies.
 *
 * Twilio signs each webhook with X-Twilio-Signature: base64 of HMAC-SHA1,
 * keyed with the account's auth token, over the full URL it called (query
 * string included) followed by every POST parameter as name + value, no
 * delimiters, sorted by name and, for a repeated name, by value (byte
 * order). The URL must come from our configuration, never from the Host
 * header. Twilio's libraries accept the URL with the scheme's default port
 * (:443 for https, :80 for http) added or removed; so does
 * sb_twilio_verify(). A JSON-bodied webhook signs the URL alone (n = 0),
 * whose query then carries bodySHA256 (see sb_sha256_hex() in crypto.h).
 *
 * libsodium has no SHA-1, so SHA-1 (FIPS 180-4) and HMAC (RFC 2104) are
 * implemented here; they serve this signature only (SHA-1 is not for new
 * designs).
 *
 * The application/x-www-form-urlencoded parser serves the Twilio and Kannel
 * webhooks (bodies and query strings): '&'-separated name=value pairs,
 * '+' is a space, %XX a byte; an invalid escape is refused; the number of
 * fields and the size are bounded. Values may hold any byte, NUL included
 * (Kannel's UTF-16BE text), hence their lengths.
 */
#ifndef SB_SMSAUTH_H
#define SB_SMSAUTH_H

#include <stddef.h>

#define SB_SHA1_LEN 20
#define SB_TWILIO_SIG_LEN 28          /* base64 of 20 bytes */
#define SB_FORM_MAX_FIELDS 256        /* default bound on fields */
#define SB_FORM_MAX_BYTES (64 * 1024) /* default bound on the encoded size */

/* SHA-1 of data, and HMAC-SHA1 of data keyed with key (any length). */
void sb_sha1(const void *data, size_t len, unsigned char out[SB_SHA1_LEN]);
void sb_hmac_sha1(const void *key, size_t keylen, const void *data, size_t len,
                  unsigned char out[SB_SHA1_LEN]);

/* The signature Twilio computes for url and the n parameters
 * names[i] = values[i] (all borrowed C strings; n may be 0 and the arrays
 * then NULL): writes SB_TWILIO_SIG_LEN characters and a NUL to out.
 * Returns 0, or -1 when token or url is NULL or a name or value is. */
int sb_twilio_signature(const char *token, const char *url,
                        const char *const *names, const char *const *values,
                        size_t n, char out[SB_TWILIO_SIG_LEN + 1]);

/* 1 when header (the X-Twilio-Signature value; may be NULL) is the
 * signature of url, or of url with its default port added or removed, and
 * the parameters; 0 otherwise (missing, malformed, forged). The comparison
 * is constant time. */
int sb_twilio_verify(const char *token, const char *url,
                     const char *const *names, const char *const *values,
                     size_t n, const char *header);

/* Write url with its default port toggled into out: "https://h/x" gives
 * "https://h:443/x" and back ("http" and ":80" likewise). Returns 0, or -1
 * when url is not http(s), has another port, or out (outlen bytes, not
 * overlapping url) is too small. */
int sb_twilio_url_alt(const char *url, char *out, size_t outlen);

/* A parsed form: fields in their order of appearance, repeated names kept.
 * names[i] and values[i] are NUL-terminated (a value may also hold NULs:
 * value_lens[i] is its length). All memory belongs to the form. */
struct sb_form {
    size_t n;
    char **names;
    char **values;
    size_t *value_lens;
    char *mem; /* the decoded bytes the pointers point into */
};

/* Parse len bytes of application/x-www-form-urlencoded data (a body or a
 * query string without its '?'). Empty pairs ("a=1&&b=2", a trailing '&')
 * are skipped; a pair without '=' has an empty value. Refused: a '%' not
 * followed by two hex digits, an empty name, a NUL in a name, more than
 * max_fields fields, more than max_bytes bytes (0 for either: the
 * SB_FORM_MAX_ defaults). Returns 0 with *form filled (free it with
 * sb_form_free()), or -1 with a static reason in *why (may be NULL) and
 * *form empty. */
int sb_form_parse(const char *data, size_t len, size_t max_fields,
                  size_t max_bytes, struct sb_form *form, const char **why);

/* The first value of field `name` (borrowed from form) and its length
 * through len (may be NULL), or NULL when there is none. */
const char *sb_form_get(const struct sb_form *form, const char *name,
                        size_t *len);

/* Free the form's memory and empty it; NULL and empty forms are fine. */
void sb_form_free(struct sb_form *form);

#endif
