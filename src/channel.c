/* channel.c - the table of compiled-in channel drivers.
 *
 * The core knows a driver only by its one exported ops symbol
 * (`sb_chan_<name>`, defined in channels/<name>/<name>.c) and finds it by the
 * name a config section gives, through the NULL-terminated table below.
 * Adding a driver means adding its extern declaration and one row here;
 * no driver header is ever included (channel.h, rule 6).
 */
#include "channel.h"

#include <string.h>

extern const struct sb_channel_ops sb_chan_file;

const struct sb_channel_ops *const sb_channel_drivers[] = {
    &sb_chan_file,
    NULL,
};

/* Returns the driver called name (borrowed, static), or NULL when no
 * compiled-in driver has that name. */
const struct sb_channel_ops *sb_channel_find_driver(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; sb_channel_drivers[i]; i++)
        if (strcmp(sb_channel_drivers[i]->name, name) == 0)
            return sb_channel_drivers[i];
    return NULL;
}
