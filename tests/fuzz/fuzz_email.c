/* fuzz_email.c - libFuzzer target for e-mail normalisation.
 *
 * The input (as a C string, up to 1 KiB) goes through sb_email_normalize().
 * Invariants that abort(): a refusal has a reason; an accepted address is
 * at most 254 bytes of lowercase printable ASCII with exactly one "@",
 * non-empty on both sides, and normalising it again gives it back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_address(const char *out)
{
    size_t n = strlen(out), ats = 0;
    const char *at = strchr(out, '@');

    if (n == 0 || n > SB_EMAIL_MAX || !at || at == out || !at[1])
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c <= 0x20 || c >= 0x7f || (c >= 'A' && c <= 'Z'))
            abort();
        if (c == '@')
            ats++;
    }
    if (ats != 1)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[1025], out[SB_EMAIL_MAX + 1], again[SB_EMAIL_MAX + 1];
    const char *why = NULL;

    if (size >= sizeof(in))
        size = sizeof(in) - 1;
    memcpy(in, data, size);
    in[size] = '\0';
    if (sb_email_normalize(in, out, sizeof(out), &why) < 0) {
        if (!why || !*why)
            abort();
        return 0;
    }
    check_address(out);
    if (sb_email_normalize(out, again, sizeof(again), &why) < 0 ||
        strcmp(out, again) != 0)
        abort();
    return 0;
}
