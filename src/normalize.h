/* normalize.h - identities from the outside world made comparable.
 *
 * E-mail addresses are validated (RFC 5321 limits: local part 64, domain 255,
 * whole address 254 octets; dot-atom local part, LDH domain labels of at
 * most 63, at least two labels) and case-folded. Quoted local parts, comments,
 * several addresses, display names, control characters and non-ASCII are
 * refused (IDN domains must come as xn-- A-labels).
 *
 * Phone numbers become E.164 ("+" and 8..15 digits, the country calling code
 * valid): spaces, dashes, dots and parentheses are dropped; "+" or the
 * international prefix "00" (and Russia's "810") start an international
 * number; otherwise the number is national for the default country (ISO
 * 3166 alpha-2, e.g. "RU", "US", "GB", "DE") and its trunk prefix ("8" in
 * Russia, "0" in most of Europe, "1" in NANP) is dropped. Letters, full-width
 * digits, control characters, several "+" and over-long input are refused.
 */
#ifndef SB_NORMALIZE_H
#define SB_NORMALIZE_H

#include <stddef.h>

#define SB_EMAIL_MAX 254
#define SB_PHONE_MAX 16 /* "+" and 15 digits */

/* Returns 0 and writes the normalised address (NUL-terminated) to out
 * (outlen >= SB_EMAIL_MAX + 1), or -1 with a short reason in *why (static
 * string). in is a NUL-terminated string. */
int sb_email_normalize(const char *in, char *out, size_t outlen,
                       const char **why);

/* Same for phone numbers; default_country may be NULL (then only
 * international input is accepted). outlen >= SB_PHONE_MAX + 1. */
int sb_phone_normalize(const char *in, const char *default_country,
                       char *out, size_t outlen, const char **why);

/* 1 when the country code (ISO alpha-2, upper case) is known. */
int sb_phone_country_known(const char *iso2);

#endif
