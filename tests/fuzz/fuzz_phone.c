/* fuzz_phone.c - libFuzzer target for phone normalisation.
 *
 * The first byte picks the default country (or none), the rest is the
 * number as a C string. Invariants that abort(): a refusal has a reason;
 * an accepted number matches ^\+[1-9][0-9]{7,14}$ and is a fixed point,
 * with no default country and with the one used.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const countries[] = {
    NULL, "RU", "KZ", "BY", "UA", "US", "CA", "GB", "DE", "FR", "IT",
    "ES", "NL", "PL", "TR", "CN", "IN", "JP", "AU", "CH", "XX",
};

static void check_e164(const char *s)
{
    size_t n = strlen(s);

    if (n < 9 || n > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9')
        abort();
    for (size_t i = 2; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[257], out[SB_PHONE_MAX + 1], again[SB_PHONE_MAX + 1];
    const char *why = NULL, *country;

    if (size == 0)
        return 0;
    country = countries[data[0] % (sizeof(countries) / sizeof(countries[0]))];
    data++;
    size--;
    if (size >= sizeof(in))
        size = sizeof(in) - 1;
    memcpy(in, data, size);
    in[size] = '\0';
    if (sb_phone_normalize(in, country, out, sizeof(out), &why) < 0) {
        if (!why || !*why)
            abort();
        return 0;
    }
    check_e164(out);
    if (sb_phone_normalize(out, NULL, again, sizeof(again), &why) < 0 ||
        strcmp(out, again) != 0)
        abort();
    if (sb_phone_normalize(out, country, again, sizeof(again), &why) < 0 ||
        strcmp(out, again) != 0)
        abort();
    return 0;
}
