/* core.c - the [core] config section and the daemon's table of sections.
 *
 * Adding a module means adding its section table here; config.c does the
 * rest (parsing, checks, --dump-config, the example config).
 */
#include "core.h"

#include <string.h>
#include <syslog.h>

#include "auth.h"
#include "channel.h"
#include "console.h"
#include "http.h"
#include "normalize.h"
#include "redis.h"
#include "notify.h"
#include "outbound.h"
#include "router.h"

static const char *const levels[] = {"err", "warning", "notice", "info",
                                     "debug", NULL};
static const int level_values[] = {LOG_ERR, LOG_WARNING, LOG_NOTICE,
                                   LOG_INFO, LOG_DEBUG};

static int core_check(void *c, char *err, size_t errlen)
{
    struct sb_core_conf *cc = c;

    if (cc->default_country && *cc->default_country &&
        !sb_phone_country_known(cc->default_country)) {
        snprintf(err, errlen,
                 "default_country \"%s\" is not a known ISO 3166 code",
                 cc->default_country);
        return -1;
    }
    return 0;
}

static const struct sb_conf_key core_keys[] = {
    {"log_level", SB_CONF_ENUM, offsetof(struct sb_core_conf, log_level),
     "info", 0, 0, levels, SB_CONF_RELOAD,
     "least severe level logged: err, warning, notice, info, debug"},
    {"drain_timeout", SB_CONF_DURATION,
     offsetof(struct sb_core_conf, drain_timeout), "10s", 0, 600000, NULL, 0,
     "on SIGTERM, how long in-flight work may take before we exit anyway"},
    {"default_country", SB_CONF_STR,
     offsetof(struct sb_core_conf, default_country), "RU", 0, 2, NULL,
     SB_CONF_RELOAD,
     "country of phone numbers written without +: ISO code, e.g. RU, US"},
    {"worker_queue", SB_CONF_INT, offsetof(struct sb_core_conf, worker_queue),
     "64", 1, 10000, NULL, 0,
     "blocking jobs (password hashing, MIME parsing) queued at most"},
    {"instance", SB_CONF_STR, offsetof(struct sb_core_conf, instance), "", 0,
     64, NULL, 0, "name of this instance (default: host name and pid)"},
    {"dedupe_window", SB_CONF_DURATION,
     offsetof(struct sb_core_conf, dedupe_window), "30d", 60000,
     86400000LL * 3650, NULL, SB_CONF_RELOAD,
     "how long a contact's source id (Message-ID, provider id) is "
     "remembered, so a re-delivery is ingested once"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_core_conf_section = {
    "core", 0, sizeof(struct sb_core_conf), core_keys,
    "Process-wide settings.", core_check,
};

int sb_core_log_level(const struct sb_core_conf *c)
{
    if (c->log_level < 0 || c->log_level >= (int)(sizeof(level_values) /
                                                  sizeof(level_values[0])))
        return LOG_INFO;
    return level_values[c->log_level];
}

static const struct sb_conf_section *const core_sections[] = {
    &sb_core_conf_section,
    &sb_http_conf_section,
    &sb_listener_conf_section,
    &sb_redis_conf_section,
    &sb_auth_conf_section,
    &sb_apikey_conf_section,
    &sb_user_conf_section,
    &sb_routing_conf_section,
    &sb_queue_conf_section,
    &sb_agent_conf_section,
    &sb_rule_conf_section,
    &sb_channels_conf_section,
    &sb_console_conf_section,
    &sb_notify_conf_section,
    &sb_throttle_conf_section,
};

const struct sb_conf_section *const *sb_core_sections(void)
{
    /* The core's own tables, then each compiled-in driver's. */
    static const struct sb_conf_section *all[32];

    if (!all[0]) {
        size_t n = 0;
        for (size_t i = 0; i < sizeof(core_sections) / sizeof(*core_sections);
             i++)
            all[n++] = core_sections[i];
        for (size_t i = 0; sb_channel_drivers[i] && n + 1 < 32; i++) {
            const struct sb_channel_ops *ops = sb_channel_drivers[i];
            if (ops->conf)
                all[n++] = ops->conf;
            for (size_t k = 0; ops->more_conf && ops->more_conf[k] &&
                               n + 1 < 32;
                 k++)
                all[n++] = ops->more_conf[k];
        }
        all[n] = NULL;
    }
    return all;
}
