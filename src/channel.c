/* channel.c - the table of compiled-in channel drivers.
 *
 * The core knows a driver only by its one exported ops symbol
 * (`sb_chan_<name>`, defined in channels/<name>/<name>.c) and finds it by the
 * name a config section gives, through the NULL-terminated table below.
 * Adding a driver means adding its extern declaration and one row here;
 * no driver header is ever included (channel.h, rule 6).
 */
#include "channel.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

extern const struct sb_channel_ops sb_chan_email;
extern const struct sb_channel_ops sb_chan_file;
extern const struct sb_channel_ops sb_chan_sms;
extern const struct sb_channel_ops sb_chan_webchat;
extern const struct sb_channel_ops sb_chan_webhook;

const struct sb_channel_ops *const sb_channel_drivers[] = {
    &sb_chan_email,
    &sb_chan_file,
    &sb_chan_sms,
    &sb_chan_webchat,
    &sb_chan_webhook,
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

/* ---- the running channels ---------------------------------------------- */

static struct sb_channel *running[16];
static size_t nrunning;

int sb_channels_start(uv_loop_t *loop, const struct sb_config *conf)
{
    for (size_t i = 0; sb_channel_drivers[i]; i++) {
        const struct sb_channel_ops *ops = sb_channel_drivers[i];
        struct sb_channel *ch;

        if (!ops->conf || !sb_config_present(conf, ops->conf->name))
            continue;
        if (nrunning == sizeof(running) / sizeof(running[0]))
            return -1;
        ch = sb_calloc(1, sizeof(*ch));
        ch->ops = ops;
        ch->name = sb_strdup(ops->name);
        ch->config = conf;
        if (ops->start(ch, loop, sb_config_get(conf, ops->conf->name)) < 0) {
            SB_ERR("core.channel", "driver failed to start driver=%s",
                   ops->name);
            ch->config = NULL;
            free(ch->name);
            free(ch);
            return -1;
        }
        SB_NOTICE("core.channel", "started driver=%s", ops->name);
        ch->config = NULL;
        running[nrunning++] = ch;
    }
    return 0;
}

void sb_channels_reload(const struct sb_config *conf)
{
    for (size_t i = 0; i < nrunning; i++) {
        const struct sb_channel_ops *ops = running[i]->ops;
        int rc;
        if (!ops->reload || !ops->conf)
            continue;
        running[i]->config = conf;
        rc = ops->reload(running[i], sb_config_get(conf, ops->conf->name));
        running[i]->config = NULL;
        if (rc < 0)
            SB_WARN("core.channel", "driver kept its old settings driver=%s",
                    ops->name);
    }
}

struct sb_channel *sb_channel_get(const char *name)
{
    for (size_t i = 0; i < nrunning; i++)
        if (strcmp(running[i]->name, name) == 0)
            return running[i];
    return NULL;
}

void sb_channels_stop(void)
{
    for (size_t i = 0; i < nrunning; i++) {
        running[i]->ops->stop(running[i]);
        free(running[i]->name);
        free(running[i]);
    }
    nrunning = 0;
}
