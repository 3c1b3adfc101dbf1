/* fuzz_smstext.c - libFuzzer target for SMS text and webhook form bodies.
 *
 * The first byte picks what the rest feeds: sb_sms_split() (with the byte
 * choosing max_parts), sb_sms_to_utf16be() and back, sb_sms_decode() (the
 * byte choosing coding and charset), or sb_form_parse() (the parser the SMS
 * webhooks put in front of all of these). Invariants that abort(): a
 * refusal has a reason; parts are contiguous, cover the text, lie on
 * character boundaries and within the coding's limit; GSM-7 is chosen
 * exactly when every character is in the alphabet; UTF-16 round-trips
 * (less a leading byte-order mark, which the decoder drops); decoded text
 * is valid UTF-8 without NUL; form fields are non-empty, NUL-free names
 * whose values are NUL-terminated at their length.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smsauth.h"
#include "smstext.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const charsets[] = {
    NULL,    "",           "UTF-8",  "UTF-16BE",     "UTF-16LE", "UTF-16",
    "UCS-2", "ISO-8859-1", "latin1", "windows-1251", "cp1251",   "koi8-r",
};

static void check_split(const char *s, size_t n, size_t max_parts)
{
    static struct sb_sms_part parts[SB_SMS_MAX_PARTS];
    struct sb_sms_info info;
    const char *why = NULL;
    size_t off = 0, sum = 0, limit, shown;
    int rc, valid, gsm = 1;

    rc = sb_sms_split(s, n, max_parts, &info, parts, &why);
    valid = sb_utf8_valid(s, n) && !memchr(s, '\0', n);
    if (rc < 0 && (!why || !*why))
        abort();
    if (!valid) {
        if (rc == 0)
            abort();
        return;
    }
    if (rc < 0 && info.parts <= (max_parts ? max_parts : SB_SMS_MAX_PARTS))
        abort(); /* a valid text is refused only for its length */
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = sb_utf8_seq(s + i, n - i, &cp);

        gsm &= sb_sms_gsm7_char(cp, NULL);
        i += k;
    }
    if ((info.coding == SB_SMS_GSM7) != gsm)
        abort();
    if (info.coding == SB_SMS_GSM7)
        limit = info.parts == 1 ? SB_SMS_GSM7_SINGLE : SB_SMS_GSM7_PART;
    else
        limit = info.parts == 1 ? SB_SMS_UCS2_SINGLE : SB_SMS_UCS2_PART;
    shown = info.parts;
    if (rc < 0)
        shown = max_parts ? max_parts : SB_SMS_MAX_PARTS;
    for (size_t i = 0; i < shown; i++) {
        if (parts[i].off != off || parts[i].units > limit ||
            parts[i].off + parts[i].len > n)
            abort();
        if (parts[i].len && !sb_utf8_valid(s + off, parts[i].len))
            abort();
        off += parts[i].len;
        sum += parts[i].units;
    }
    if (rc == 0 && (off != n || sum != info.units))
        abort();
}

static void check_utf16(const char *s, size_t n)
{
    char *u16 = NULL, *back = NULL;
    size_t un = 0, bn = 0, skip = 0;
    const char *why = NULL;

    if (sb_sms_to_utf16be(s, n, &u16, &un, &why) < 0) {
        if (!why || (sb_utf8_valid(s, n) && !memchr(s, '\0', n)))
            abort();
        return;
    }
    if (un % 2 || sb_sms_decode(2, "UTF-16BE", u16, un, &back, &bn, &why))
        abort();
    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
        skip = 3;
    if (bn != n - skip || memcmp(back, s + skip, bn) != 0)
        abort();
    free(u16);
    free(back);
}

static void check_decode(int coding, const char *charset, const char *s,
                         size_t n)
{
    char *out = NULL;
    size_t on = 0;
    const char *why = NULL;

    if (sb_sms_decode(coding, charset, s, n, &out, &on, &why) < 0) {
        if (!why || !*why || out)
            abort();
        return;
    }
    if (strlen(out) != on || !sb_utf8_valid(out, on))
        abort();
    free(out);
}

static void check_form(const char *s, size_t n, size_t max_fields)
{
    struct sb_form f;
    const char *why = NULL;

    if (sb_form_parse(s, n, max_fields, 0, &f, &why) < 0) {
        if (!why || !*why || f.n || f.mem)
            abort();
        return;
    }
    if (f.n > (max_fields ? max_fields : SB_FORM_MAX_FIELDS))
        abort();
    for (size_t i = 0; i < f.n; i++) {
        if (!f.names[i][0] || f.values[i][f.value_lens[i]] != '\0')
            abort();
        if (sb_form_get(&f, f.names[i], NULL) == NULL)
            abort();
    }
    sb_form_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s;
    unsigned sel;

    if (size == 0)
        return 0;
    sel = data[0];
    s = (const char *)data + 1;
    size--;
    switch (sel % 4) {
    case 0:
        check_split(s, size, (sel >> 2) % 8); /* 0 (default) .. 7 */
        break;
    case 1:
        check_utf16(s, size);
        break;
    case 2:
        check_decode((int)((sel >> 2) % 4) - 1,
                     charsets[(sel >> 4) % SB_ARRAY_LEN(charsets)], s, size);
        break;
    default:
        check_form(s, size, (sel >> 2) % 8);
        break;
    }
    return 0;
}
