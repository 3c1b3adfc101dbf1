/* fuzz_imap.c - libFuzzer target for the IMAP poller's response parsers.
 *
 * The input is what an IMAP server said on the control connection (the
 * header stream curl hands us): em_parse_fetch() and em_parse_status()
 * must never read outside it, whatever it holds. Invariants that abort():
 * every item's body lies wholly inside the input; the item count never
 * exceeds the room given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../channels/email/email_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct em_fetch_item items[16];
    const char *buf = (const char *)data;
    unsigned long v, next;
    int n = em_parse_fetch(buf, size, items, 16);

    if (n > 16)
        abort();
    for (int i = 0; i < n; i++)
        if (items[i].body &&
            (items[i].body < buf ||
             items[i].body + items[i].body_len > buf + size))
            abort();
    (void)em_parse_status(buf, size, &v, &next);
    return 0;
}
