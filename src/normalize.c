/* normalize.c - e-mail addresses and phone numbers made comparable.
 *
 * Customers are found again by their identities, so the same mailbox or
 * subscriber must always produce the same string. Addresses are checked
 * against the RFC 5321 limits and a deliberately narrow grammar (dot-atom
 * local part, LDH domain) and lower-cased; anything outside it is refused
 * with a short static reason rather than guessed at. Phone numbers are
 * reduced to E.164: two tables drive that, the ITU list of assigned country
 * calling codes (to check an international number) and a per-country table
 * of dialling rules (calling code, trunk prefix, international prefix,
 * national significant number lengths) for numbers written the national
 * way. Both functions are pure and allocation-free so the fuzz targets and
 * the HTTP handlers can call them on anything.
 */
#include "normalize.h"

#include <string.h>

#define PHONE_INPUT_MAX 64 /* bytes of raw input we look at */
#define PHONE_MIN_DIGITS 8
#define PHONE_MAX_DIGITS 15

static void set_why(const char **why, const char *reason)
{
    if (why)
        *why = reason;
}

/* ---- e-mail ---------------------------------------------------------- */

#define EMAIL_LOCAL_MAX 64
#define EMAIL_DOMAIN_MAX 255
#define EMAIL_LABEL_MAX 63

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int to_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

/* RFC 5322 atext: the characters of a dot-atom apart from the dots. */
static int is_atext(int c)
{
    return is_alpha(c) || is_digit(c) ||
           (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Characters that mean the input is more than one bare address: say which
 * construct was refused, which helps whoever typed it. */
static const char *email_construct(int c)
{
    switch (c) {
    case '"':
        return "quoted local part not allowed";
    case '<':
    case '>':
        return "display name or angle brackets not allowed";
    case '(':
    case ')':
        return "comments not allowed";
    case ',':
    case ';':
        return "several addresses not allowed";
    case '[':
    case ']':
        return "address literal not allowed";
    case ' ':
        return "space in address";
    case '\\':
        return "backslash in address";
    default:
        return NULL;
    }
}

/* The characters email_construct() knows, most telling first. */
static const char email_constructs[] = "\"<>(),;[] \\";

static int email_local_ok(const char *p, size_t n, const char **why)
{
    if (n == 0) {
        set_why(why, "empty local part");
        return -1;
    }
    if (n > EMAIL_LOCAL_MAX) {
        set_why(why, "local part too long");
        return -1;
    }
    if (p[0] == '.') {
        set_why(why, "local part starts with a dot");
        return -1;
    }
    if (p[n - 1] == '.') {
        set_why(why, "local part ends with a dot");
        return -1;
    }
    /* Legal in RFC 5322, but a leading dash turns an address into an option
     * for any command-line tool it might reach. */
    if (p[0] == '-') {
        set_why(why, "local part starts with a dash");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '.') {
            if (p[i + 1] == '.') {
                set_why(why, "consecutive dots in local part");
                return -1;
            }
        } else if (!is_atext((unsigned char)p[i])) {
            set_why(why, "invalid character in local part");
            return -1;
        }
    }
    return 0;
}

static int email_domain_ok(const char *p, size_t n, const char **why)
{
    size_t labels = 0, start = 0;
    int tld_numeric = 1;

    if (n == 0) {
        set_why(why, "empty domain");
        return -1;
    }
    if (n > EMAIL_DOMAIN_MAX) {
        set_why(why, "domain too long");
        return -1;
    }
    for (size_t i = 0; i <= n; i++) {
        size_t len;

        if (i < n && p[i] != '.') {
            int c = (unsigned char)p[i];
            if (!is_alpha(c) && !is_digit(c) && c != '-') {
                set_why(why, "invalid character in domain");
                return -1;
            }
            continue;
        }
        len = i - start;
        if (len == 0) {
            set_why(why, "empty domain label");
            return -1;
        }
        if (len > EMAIL_LABEL_MAX) {
            set_why(why, "domain label too long");
            return -1;
        }
        if (p[start] == '-' || p[i - 1] == '-') {
            set_why(why, "domain label starts or ends with a dash");
            return -1;
        }
        tld_numeric = 1;
        for (size_t k = start; k < i; k++)
            if (!is_digit((unsigned char)p[k]))
                tld_numeric = 0;
        labels++;
        start = i + 1;
    }
    if (labels < 2) {
        set_why(why, "domain must have a dot");
        return -1;
    }
    if (tld_numeric) {
        set_why(why, "numeric top-level domain");
        return -1;
    }
    return 0;
}

int sb_email_normalize(const char *in, char *out, size_t outlen,
                       const char **why)
{
    const char *at = NULL;
    size_t n;

    if (!in || !out) {
        set_why(why, "no address");
        return -1;
    }
    /* One pass for the bytes that can never appear, so the reason names
     * the real problem rather than the first grammar rule it trips. */
    n = strnlen(in, SB_EMAIL_MAX + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 0x80) {
            set_why(why, "non-ASCII address");
            return -1;
        }
        if (c < 0x20 || c == 0x7f) {
            set_why(why, "control character in address");
            return -1;
        }
    }
    if (n == 0) {
        set_why(why, "empty address");
        return -1;
    }
    if (n > SB_EMAIL_MAX) {
        set_why(why, "address too long");
        return -1;
    }
    /* The most telling construct first: "John <j@x.org>" is a display
     * name even though its first odd character is a space. */
    for (const char *c = email_constructs; *c; c++) {
        if (memchr(in, *c, n)) {
            set_why(why, email_construct(*c));
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '@') {
            if (at) {
                set_why(why, "more than one @");
                return -1;
            }
            at = in + i;
        }
    }
    if (!at) {
        set_why(why, "missing @");
        return -1;
    }
    if (email_local_ok(in, (size_t)(at - in), why) < 0)
        return -1;
    if (email_domain_ok(at + 1, n - (size_t)(at - in) - 1, why) < 0)
        return -1;
    if (outlen < n + 1) {
        set_why(why, "output buffer too small");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (char)to_lower((unsigned char)in[i]);
    out[n] = '\0';
    return 0;
}

/* ---- phone numbers --------------------------------------------------- */

/* Country calling codes assigned by the ITU (E.164 and its annex), as
 * strings. The set is prefix-free, which is what lets the first match of a
 * 1-, 2- or 3-digit prefix decide. Spare and reserved codes are absent. */
/* clang-format off */
static const char *const cc_table[] = {
    /* zone 1 (NANP) and 7 */
    "1", "7",
    /* zone 2 */
    "20", "27", "211", "212", "213", "216", "218", "220", "221", "222",
    "223", "224", "225", "226", "227", "228", "229", "230", "231", "232",
    "233", "234", "235", "236", "237", "238", "239", "240", "241", "242",
    "243", "244", "245", "246", "247", "248", "249", "250", "251", "252",
    "253", "254", "255", "256", "257", "258", "260", "261", "262", "263",
    "264", "265", "266", "267", "268", "269", "290", "291", "297", "298",
    "299",
    /* zones 3 and 4 */
    "30", "31", "32", "33", "34", "36", "39", "350", "351", "352", "353",
    "354", "355", "356", "357", "358", "359", "370", "371", "372", "373",
    "374", "375", "376", "377", "378", "379", "380", "381", "382", "383",
    "385", "386", "387", "389", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "420", "421", "423",
    /* zone 5 */
    "51", "52", "53", "54", "55", "56", "57", "58", "500", "501", "502",
    "503", "504", "505", "506", "507", "508", "509", "590", "591", "592",
    "593", "594", "595", "596", "597", "598", "599",
    /* zone 6 */
    "60", "61", "62", "63", "64", "65", "66", "670", "672", "673", "674",
    "675", "676", "677", "678", "679", "680", "681", "682", "683", "685",
    "686", "687", "688", "689", "690", "691", "692",
    /* zone 8 (with global services 800, 808, 870, 881-883, 888) */
    "81", "82", "84", "86", "800", "808", "850", "852", "853", "855", "856",
    "870", "880", "881", "882", "883", "886", "888",
    /* zone 9 (979: international premium rate) */
    "90", "91", "92", "93", "94", "95", "98", "960", "961", "962", "963",
    "964", "965", "966", "967", "968", "970", "971", "972", "973", "974",
    "975", "976", "977", "979", "992", "993", "994", "995", "996", "998",
};
/* clang-format on */

/* How a country writes numbers for its own subscribers. trunk is the
 * prefix dialled before a national number ("" when the country has none:
 * a leading 0 is then part of the number, as in Italy); intl is the
 * international prefix besides the universal "00". nsn_min/nsn_max bound
 * the national significant number (what follows the calling code). */
struct phone_rule {
    const char *iso2;
    const char *cc;
    const char *trunk;
    const char *intl;
    unsigned char nsn_min;
    unsigned char nsn_max;
};

static const struct phone_rule rules[] = {
    {"RU", "7", "8", "810", 10, 10},  {"KZ", "7", "8", "810", 10, 10},
    {"BY", "375", "80", "810", 9, 9}, {"UA", "380", "0", "00", 9, 9},
    {"US", "1", "1", "011", 10, 10},  {"CA", "1", "1", "011", 10, 10},
    {"GB", "44", "0", "00", 7, 10},   {"DE", "49", "0", "00", 6, 13},
    {"FR", "33", "0", "00", 9, 9},    {"IT", "39", "", "00", 6, 11},
    {"ES", "34", "", "00", 9, 9},     {"NL", "31", "0", "00", 9, 9},
    {"PL", "48", "", "00", 9, 9},     {"TR", "90", "0", "00", 10, 10},
    {"CN", "86", "0", "00", 8, 11},   {"IN", "91", "0", "00", 10, 10},
    {"JP", "81", "0", "010", 9, 10},  {"AT", "43", "0", "00", 4, 13},
    {"AU", "61", "0", "0011", 9, 9},  {"BE", "32", "0", "00", 8, 9},
    {"BR", "55", "0", "00", 10, 11},  {"CH", "41", "0", "00", 9, 9},
    {"CZ", "420", "", "00", 9, 9},    {"DK", "45", "", "00", 8, 8},
    {"EE", "372", "", "00", 7, 8},    {"FI", "358", "0", "00", 5, 12},
    {"IE", "353", "0", "00", 7, 9},   {"IL", "972", "0", "00", 8, 9},
    {"LV", "371", "", "00", 8, 8},    {"MX", "52", "", "00", 10, 10},
    {"NO", "47", "", "00", 8, 8},     {"PT", "351", "", "00", 9, 9},
    {"SE", "46", "0", "00", 7, 13},   {"AE", "971", "0", "00", 8, 9},
    {"AM", "374", "0", "00", 8, 8},   {"AZ", "994", "0", "00", 9, 9},
    {"GE", "995", "0", "00", 9, 9},   {"KG", "996", "0", "00", 9, 9},
    {"MD", "373", "0", "00", 8, 8},
};

static const struct phone_rule *rule_by_iso(const char *iso2)
{
    if (!iso2)
        return NULL;
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (strcmp(rules[i].iso2, iso2) == 0)
            return &rules[i];
    return NULL;
}

int sb_phone_country_known(const char *iso2)
{
    return rule_by_iso(iso2) != NULL;
}

static int has_prefix(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return k <= n && memcmp(s, prefix, k) == 0;
}

/* Length of the calling code that starts digits, 0 when none does. */
static size_t cc_match(const char *digits, size_t n)
{
    for (size_t i = 0; i < sizeof(cc_table) / sizeof(cc_table[0]); i++) {
        size_t k = strlen(cc_table[i]);
        if (k < n && memcmp(digits, cc_table[i], k) == 0)
            return k;
    }
    return 0;
}

/* Whether an NSN of length nsn is valid for calling code cc: when we have
 * rules for that code it must fit one of them; otherwise any length that
 * keeps the whole number within E.164 will do. */
static int nsn_fits(const char *cc, size_t cclen, size_t nsn)
{
    int known = 0;

    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
        if (strlen(rules[i].cc) != cclen || memcmp(rules[i].cc, cc, cclen) != 0)
            continue;
        known = 1;
        if (nsn >= rules[i].nsn_min && nsn <= rules[i].nsn_max)
            return 1;
    }
    return !known;
}

/* Whether the countries of calling code cc use the trunk prefix "0". */
static int cc_trunk0(const char *cc, size_t cclen)
{
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (strlen(rules[i].cc) == cclen &&
            memcmp(rules[i].cc, cc, cclen) == 0 &&
            strcmp(rules[i].trunk, "0") == 0)
            return 1;
    return 0;
}

static int phone_emit(const char *cc, size_t cclen, const char *nsn,
                      size_t nsnlen, char *out, size_t outlen, const char **why)
{
    size_t total = cclen + nsnlen;

    if (total < PHONE_MIN_DIGITS) {
        set_why(why, "too few digits");
        return -1;
    }
    if (total > PHONE_MAX_DIGITS) {
        set_why(why, "too many digits");
        return -1;
    }
    if (outlen < total + 2) {
        set_why(why, "output buffer too small");
        return -1;
    }
    out[0] = '+';
    memcpy(out + 1, cc, cclen);
    memcpy(out + 1 + cclen, nsn, nsnlen);
    out[1 + total] = '\0';
    return 0;
}

static int phone_international(const char *d, size_t n, char *out,
                               size_t outlen, const char **why)
{
    size_t cclen, nsnlen;
    const char *nsn;

    if (n == 0) {
        set_why(why, "no digits");
        return -1;
    }
    if (n < PHONE_MIN_DIGITS) {
        set_why(why, "too few digits");
        return -1;
    }
    /* one more than E.164 allows, for a trunk 0 written after the code */
    if (n > PHONE_MAX_DIGITS + 1) {
        set_why(why, "too many digits");
        return -1;
    }
    cclen = cc_match(d, n);
    if (cclen == 0) {
        set_why(why, "unknown country code");
        return -1;
    }
    nsn = d + cclen;
    nsnlen = n - cclen;
    /* "+44 (0)20 7946 0958": the national trunk written after the country
     * code. Where trunk 0 is the rule no national number starts with 0, so
     * it can only be that (and only once); elsewhere (Italy) a leading 0 is
     * part of the number and stays. */
    if (cc_trunk0(d, cclen) && nsn[0] == '0') {
        nsn++;
        nsnlen--;
        if (nsnlen == 0 || nsn[0] == '0') {
            set_why(why, "wrong number length for the country");
            return -1;
        }
    }
    if (!nsn_fits(d, cclen, nsnlen)) {
        set_why(why, n > PHONE_MAX_DIGITS ? "too many digits"
                                          : "wrong number length for the "
                                            "country");
        return -1;
    }
    return phone_emit(d, cclen, nsn, nsnlen, out, outlen, why);
}

/* Whether nsn[0..n) can be a national significant number under r: the
 * length fits, and where the trunk prefix is "0" it does not start with 0
 * (that 0 would be the trunk, and "+CC 0..." reads as such). */
static int nsn_ok(const struct phone_rule *r, const char *nsn, size_t n)
{
    if (n < r->nsn_min || n > r->nsn_max)
        return 0;
    return !(strcmp(r->trunk, "0") == 0 && nsn[0] == '0');
}

static int phone_national(const struct phone_rule *r, const char *d, size_t n,
                          char *out, size_t outlen, const char **why)
{
    size_t tl = strlen(r->trunk), cl = strlen(r->cc);

    /* trunk + NSN ("8 916 ...", "020 7946 ...") */
    if (tl && has_prefix(d, n, r->trunk) && nsn_ok(r, d + tl, n - tl))
        return phone_emit(r->cc, cl, d + tl, n - tl, out, outlen, why);
    /* the NSN alone ("916 123 45 67") */
    if (nsn_ok(r, d, n))
        return phone_emit(r->cc, cl, d, n, out, outlen, why);
    /* the calling code without "+" ("7 916 123 45 67") */
    if (has_prefix(d, n, r->cc) && nsn_ok(r, d + cl, n - cl))
        return phone_emit(r->cc, cl, d + cl, n - cl, out, outlen, why);
    if (n + cl < PHONE_MIN_DIGITS)
        set_why(why, "too few digits");
    else
        set_why(why, "wrong number length for the country");
    return -1;
}

static int ascii_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (to_lower((unsigned char)*s) != *prefix)
            return 0;
    return 1;
}

int sb_phone_normalize(const char *in, const char *default_country, char *out,
                       size_t outlen, const char **why)
{
    char d[PHONE_INPUT_MAX + 1];
    size_t n = 0, len;
    int plus = 0;
    const struct phone_rule *r = NULL;

    if (!in || !out) {
        set_why(why, "no number");
        return -1;
    }
    len = strnlen(in, PHONE_INPUT_MAX + 1);
    if (len > PHONE_INPUT_MAX) {
        set_why(why, "input too long");
        return -1;
    }
    if (default_country) {
        r = rule_by_iso(default_country);
        if (!r) {
            set_why(why, "unknown default country");
            return -1;
        }
    }
    if (ascii_prefix_ci(in, "tel:")) {
        set_why(why, "tel: URI not supported");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];

        if (is_digit(c)) {
            d[n++] = (char)c;
        } else if (c == '+') {
            if (plus) {
                set_why(why, "more than one +");
                return -1;
            }
            if (n > 0) {
                set_why(why, "+ not at the start");
                return -1;
            }
            plus = 1;
        } else if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')') {
            continue;
        } else if (c >= 0x80) {
            set_why(why, "non-ASCII character in number");
            return -1;
        } else if (c < 0x20 || c == 0x7f) {
            set_why(why, "control character in number");
            return -1;
        } else if (n > 0 && (c == 'x' || c == 'X' ||
                             (c == ';' && ascii_prefix_ci(in + i, ";ext=")) ||
                             ((c == 'e' || c == 'E') &&
                              ascii_prefix_ci(in + i, "ext")))) {
            set_why(why, "extensions not supported");
            return -1;
        } else if (is_alpha(c)) {
            set_why(why, "letters in number");
            return -1;
        } else {
            set_why(why, "invalid character in number");
            return -1;
        }
    }
    if (n == 0) {
        set_why(why, "no digits");
        return -1;
    }
    if (plus)
        return phone_international(d, n, out, outlen, why);
    if (has_prefix(d, n, "00"))
        return phone_international(d + 2, n - 2, out, outlen, why);
    if (r && strcmp(r->intl, "00") != 0 && has_prefix(d, n, r->intl)) {
        size_t k = strlen(r->intl);
        return phone_international(d + k, n - k, out, outlen, why);
    }
    if (!r) {
        set_why(why, "no country code (need + or a default country)");
        return -1;
    }
    return phone_national(r, d, n, out, outlen, why);
}
