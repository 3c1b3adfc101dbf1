/* smsdlr.c - SMS delivery-report states: a monotone, pure state machine.
 *
 * The transitions are one [current][incoming] table, so every pair is
 * visible at a glance and the tests can walk all 49 of them. The provider
 * vocabularies map onto the states through small tables too. Nothing here
 * allocates, logs or looks at the clock: the caller passes the time.
 */
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "smsdlr.h"
#include "util.h"

#define N_ SB_DLR_NONE
#define Q_ SB_DLR_QUEUED
#define S_ SB_DLR_SENT
#define D_ SB_DLR_DELIVERED
#define U_ SB_DLR_UNDELIVERED
#define F_ SB_DLR_FAILED
#define K_ SB_DLR_UNKNOWN

/* next[current][incoming]: forward only; final states sticky; "unknown"
 * yields to a final report only. */
static const enum sb_dlr_state next_state[SB_DLR_NSTATES][SB_DLR_NSTATES] = {
    /*             none queued sent deliv undel failed unknown */
    [SB_DLR_NONE] = {N_, Q_, S_, D_, U_, F_, K_},
    [SB_DLR_QUEUED] = {Q_, Q_, S_, D_, U_, F_, K_},
    [SB_DLR_SENT] = {S_, S_, S_, D_, U_, F_, K_},
    [SB_DLR_DELIVERED] = {D_, D_, D_, D_, D_, D_, D_},
    [SB_DLR_UNDELIVERED] = {U_, U_, U_, U_, U_, U_, U_},
    [SB_DLR_FAILED] = {F_, F_, F_, F_, F_, F_, F_},
    [SB_DLR_UNKNOWN] = {K_, K_, K_, D_, U_, F_, K_},
};

#undef N_
#undef Q_
#undef S_
#undef D_
#undef U_
#undef F_
#undef K_

static const char *const state_names[SB_DLR_NSTATES] = {
    [SB_DLR_NONE] = "none",
    [SB_DLR_QUEUED] = "queued",
    [SB_DLR_SENT] = "sent",
    [SB_DLR_DELIVERED] = "delivered",
    [SB_DLR_UNDELIVERED] = "undelivered",
    [SB_DLR_FAILED] = "failed",
    [SB_DLR_UNKNOWN] = "unknown",
};

static const struct {
    long long value;
    enum sb_dlr_state state;
} kannel_map[] = {
    {1, SB_DLR_DELIVERED},   /* delivered to the phone */
    {2, SB_DLR_UNDELIVERED}, /* not delivered to the phone */
    {4, SB_DLR_SENT},        /* queued (buffered) on the SMSC */
    {8, SB_DLR_SENT},        /* delivered to the SMSC */
    {16, SB_DLR_FAILED},     /* not delivered to the SMSC: rejected */
};

static const struct {
    const char *status;
    enum sb_dlr_state state;
} twilio_map[] = {
    {"accepted", SB_DLR_QUEUED}, {"scheduled", SB_DLR_QUEUED},
    {"queued", SB_DLR_QUEUED},   {"sending", SB_DLR_QUEUED},
    {"sent", SB_DLR_SENT},       {"delivered", SB_DLR_DELIVERED},
    {"read", SB_DLR_DELIVERED},  {"undelivered", SB_DLR_UNDELIVERED},
    {"failed", SB_DLR_FAILED},   {"canceled", SB_DLR_FAILED},
};

static int in_range(enum sb_dlr_state s)
{
    return (unsigned)s < SB_DLR_NSTATES;
}

enum sb_dlr_state sb_dlr_next(enum sb_dlr_state current,
                              enum sb_dlr_state incoming)
{
    if (!in_range(current))
        current = SB_DLR_NONE;
    if (!in_range(incoming))
        incoming = SB_DLR_NONE;
    return next_state[current][incoming];
}

int sb_dlr_is_final(enum sb_dlr_state s)
{
    return s == SB_DLR_DELIVERED || s == SB_DLR_UNDELIVERED ||
           s == SB_DLR_FAILED;
}

enum sb_dlr_state sb_dlr_expire(enum sb_dlr_state current, int64_t sent_ms,
                                int64_t now_ms, int64_t timeout_ms)
{
    uint64_t age;

    if (now_ms < sent_ms)
        return current;
    age = (uint64_t)now_ms - (uint64_t)sent_ms; /* exact, no overflow */
    if (timeout_ms > 0 && age < (uint64_t)timeout_ms)
        return current;
    return sb_dlr_next(current, SB_DLR_UNKNOWN);
}

enum sb_dlr_state sb_dlr_from_kannel(const char *d)
{
    long long v;

    if (!d || sb_parse_ll(d, &v) < 0)
        return SB_DLR_NONE;
    for (size_t i = 0; i < SB_ARRAY_LEN(kannel_map); i++)
        if (kannel_map[i].value == v)
            return kannel_map[i].state;
    return SB_DLR_NONE;
}

enum sb_dlr_state sb_dlr_from_twilio(const char *status)
{
    if (!status)
        return SB_DLR_NONE;
    for (size_t i = 0; i < SB_ARRAY_LEN(twilio_map); i++)
        if (strcasecmp(twilio_map[i].status, status) == 0)
            return twilio_map[i].state;
    return SB_DLR_NONE;
}

const char *sb_dlr_name(enum sb_dlr_state s)
{
    return in_range(s) ? state_names[s] : "none";
}

enum sb_dlr_state sb_dlr_parse(const char *name)
{
    if (!name)
        return SB_DLR_NONE;
    for (int i = 0; i < SB_DLR_NSTATES; i++)
        if (strcmp(state_names[i], name) == 0)
            return (enum sb_dlr_state)i;
    return SB_DLR_NONE;
}
