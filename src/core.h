/* core.h - the [core] config section and the table of every section. */
#ifndef SB_CORE_H
#define SB_CORE_H

#include "config.h"

struct sb_core_conf {
    int log_level;             /* index into sb_core_log_levels */
    long long drain_timeout;   /* ms */
    char *default_country;     /* ISO 3166 alpha-2 for phone numbers */
    long long worker_queue;    /* bounded worker pool */
    char *instance;            /* this instance's name (consumer name) */
    long long dedupe_window;   /* ms a source id stays known */
};

extern const struct sb_conf_section sb_core_conf_section;

/* syslog level for each log_level choice */
int sb_core_log_level(const struct sb_core_conf *c);

/* Every section the daemon understands (the core's and each channel
 * driver's), NULL-terminated; static. */
const struct sb_conf_section *const *sb_core_sections(void);

#endif
