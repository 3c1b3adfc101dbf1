/* notify_int.h - what notify.c (the dispatcher) and notify_req.c (requests
 * and validation) share. Not for other modules: they use notify.h. */
#ifndef SB_NOTIFY_INT_H
#define SB_NOTIFY_INT_H

#include "notify.h"
#include "template.h"

struct sb_notify_conf {
    int enabled;
    char *templates;
    char *group;
    char *consumer;
    char **channels;          /* default order */
    char **urgent_opt_out;    /* channels where urgent ignores an opt-out */
    char *default_locale;
    char *default_timezone;
    char *quiet_hours;        /* "HH:MM-HH:MM" or "" */
    long long batch;
    long long max_inflight;
    long long max_attempts;
    long long max_age;        /* ms */
    long long backoff_min;    /* ms */
    long long backoff_max;    /* ms */
    long long supersede_window;
    long long report_deadline;
    long long claim_idle;
    long long claim_interval;
    long long max_deliveries;
    long long idempotency_window;
    long long retention;
    long long stats_interval;
    long long poll_interval;
    int trim;
};

/* Shared state (one dispatcher per process). */
struct sb_notify_shared {
    struct sb_redis *cmd;          /* the dispatcher's: "notify" */
    struct sb_redis *api;          /* requests (submit, status, DLQ):
                                      the main connection, the one
                                      /readyz vouches for */
    char *prefix;
    char *default_country;
    struct sb_tpl_set *tpl;        /* current templates */
    const struct sb_notify_conf *c; /* the running config's section */
};

extern struct sb_notify_shared sb_ntf;

/* Numbers as Redis argument text. */
#define SB_NTF_NUM 24

#endif
