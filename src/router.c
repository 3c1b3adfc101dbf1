/* router.c - the routing engine's C side: config, requests, metrics.
 *
 * The decisions themselves are Lua (src/lua/route_engine.lua, one atomic
 * script per call; route_read.lua for the views), so that instances sharing
 * one Redis agree. This file checks the [routing], [queue], [agent] and
 * [rule] sections against each other and against [user], turns them into
 * one compact JSON document that every script call carries (so a reload
 * takes effect with the next call and two instances never read each
 * other's half-written config), sends the calls with the router's clock,
 * and turns the replies into the callbacks of router.h and into metrics.
 *
 * The config document (keys short on purpose, it travels with each call):
 *   {"dq": default queue, "ct": curator timeout ms, "nb": VIP tier count
 *    (the band of ordinary customers), "vip": {tier: band},
 *    "q": {name: {"m": [member], "ms": {member: [skill]}, "sk": [skill],
 *          "st": strategy, "aa": bool, "ot": ms, "mw": ms, "ov": queue,
 *          "sla": ms, "team": bool}},
 *    "qo": [queue names in file order],
 *    "a": {user: {"cap": n, "sk": [skill], "team": queue, "q": [queue]}},
 *    "ao": [agent names sorted],
 *    "r": [{"n": rule, "ch","tag","tier","loc","kw": [..], "q": queue}]}
 */
#include "router.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

#define RT_PLACE "core.router"
#define RT_ARGV_MAX 8
#define RT_NAME_MAX 64
#define RT_SKILL_MAX 32
#define RT_MEMBERS_MAX 200
#define RT_VIP_MAX 8

static const char *const rt_strategies[] = {"round_robin", "least_busy",
                                            "longest_idle", "ring_all", NULL};

/* ---- config tables ------------------------------------------------------- */

static const struct sb_conf_key routing_keys[] = {
    {"default_queue", SB_CONF_STR,
     offsetof(struct sb_routing_conf, default_queue), NULL, 0, RT_NAME_MAX,
     NULL, SB_CONF_RELOAD,
     "queue for conversations no rule matches (default: the first [queue])"},
    {"curator_timeout", SB_CONF_DURATION,
     offsetof(struct sb_routing_conf, curator_timeout), "30s", 1000, 3600000,
     NULL, SB_CONF_RELOAD,
     "how long the customer's curator has to accept before the team queue"},
    {"vip_tiers", SB_CONF_LIST, offsetof(struct sb_routing_conf, vip_tiers),
     "vip", 0, RT_NAME_MAX, NULL, SB_CONF_RELOAD,
     "customer tiers served before everyone else, highest first"},
    {"offer_timeout", SB_CONF_DURATION,
     offsetof(struct sb_routing_conf, offer_timeout), "30s", 1000, 3600000,
     NULL, SB_CONF_RELOAD,
     "how long an offer waits for accept before the next agent"},
    {"tick", SB_CONF_DURATION, offsetof(struct sb_routing_conf, tick), "1s",
     100, 60000, NULL, SB_CONF_RELOAD,
     "how often offer timeouts and maximum waits are checked"},
    {"capacity", SB_CONF_INT, offsetof(struct sb_routing_conf, capacity), "3",
     1, 1000, NULL, SB_CONF_RELOAD,
     "conversations an agent holds at once, unless [agent] says otherwise"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_routing_conf_section = {
    "routing",
    0,
    sizeof(struct sb_routing_conf),
    routing_keys,
    "Routing of conversations to agents: the customer's curator first,\n"
    "else the queue the [rule]s choose, else default_queue.",
    NULL,
};

/* 1..max bytes of [A-Za-z0-9_-]. */
static int rt_word_ok(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return 0;
    return 1;
}

/* "name" or "name/skill+skill": the name's length, or 0 when malformed. */
static size_t rt_member_split(const char *m)
{
    const char *slash = strchr(m, '/');
    size_t n = slash ? (size_t)(slash - m) : strlen(m);

    if (n == 0 || n > RT_NAME_MAX)
        return 0;
    if (slash) {
        char *skills = sb_strdup(slash + 1), *save = NULL, *tok;
        int ok = 1, any = 0;

        for (tok = strtok_r(skills, "+", &save); tok;
             tok = strtok_r(NULL, "+", &save)) {
            any = 1;
            if (!rt_word_ok(tok, RT_SKILL_MAX))
                ok = 0;
        }
        free(skills);
        if (!ok || !any)
            return 0;
    }
    return n;
}

static int rt_skills_ok(char *const *skills, char *err, size_t errlen)
{
    for (size_t i = 0; skills && skills[i]; i++)
        if (!rt_word_ok(skills[i], RT_SKILL_MAX)) {
            snprintf(err, errlen,
                     "skill \"%.32s\" must be 1..32 of A-Z a-z 0-9 _ -",
                     skills[i]);
            return -1;
        }
    return 0;
}

static int queue_check(void *c, char *err, size_t errlen)
{
    struct sb_queue_conf *q = c;
    size_t n = 0;

    for (; q->members && q->members[n]; n++)
        if (!rt_member_split(q->members[n])) {
            snprintf(err, errlen,
                     "member \"%.64s\" must be NAME or NAME/skill+skill",
                     q->members[n]);
            return -1;
        }
    if (n > RT_MEMBERS_MAX) {
        snprintf(err, errlen, "at most %d members", RT_MEMBERS_MAX);
        return -1;
    }
    return rt_skills_ok(q->skills, err, errlen);
}

static const struct sb_conf_key queue_keys[] = {
    {"members", SB_CONF_LIST, offsetof(struct sb_queue_conf, members), "", 0,
     RT_NAME_MAX + 200, NULL, SB_CONF_RELOAD,
     "agents ([user] names), each optionally NAME/skill+skill"},
    {"skills", SB_CONF_LIST, offsetof(struct sb_queue_conf, skills), "", 0,
     RT_SKILL_MAX, NULL, SB_CONF_RELOAD,
     "skills a member needs to be offered this queue's conversations"},
    {"strategy", SB_CONF_ENUM, offsetof(struct sb_queue_conf, strategy),
     "round_robin", 0, 0, rt_strategies, SB_CONF_RELOAD,
     "round_robin, least_busy (fewest conversations), longest_idle, "
     "ring_all (offer to all, first accept wins)"},
    {"auto_assign", SB_CONF_BOOL, offsetof(struct sb_queue_conf, auto_assign),
     "no", 0, 0, NULL, SB_CONF_RELOAD, "assign directly instead of offering"},
    {"offer_timeout", SB_CONF_DURATION,
     offsetof(struct sb_queue_conf, offer_timeout), NULL, 1000, 3600000, NULL,
     SB_CONF_RELOAD, "offer timeout here (default: [routing] offer_timeout)"},
    {"max_wait", SB_CONF_DURATION, offsetof(struct sb_queue_conf, max_wait),
     "0", 0, 604800000LL, NULL, SB_CONF_RELOAD,
     "longest wait before the overflow queue; 0 = no limit"},
    {"overflow", SB_CONF_STR, offsetof(struct sb_queue_conf, overflow), NULL, 0,
     RT_NAME_MAX, NULL, SB_CONF_RELOAD,
     "queue after max_wait (a team queue's default: default_queue)"},
    {"sla", SB_CONF_DURATION, offsetof(struct sb_queue_conf, sla), "0", 0,
     604800000LL, NULL, SB_CONF_RELOAD,
     "first-response target, for the breach count; 0 = none"},
    {"team", SB_CONF_BOOL, offsetof(struct sb_queue_conf, team), "no", 0, 0,
     NULL, SB_CONF_RELOAD,
     "a curators' team: the team queue of its members without [agent] team"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_queue_conf_section = {
    "queue",
    1,
    sizeof(struct sb_queue_conf),
    queue_keys,
    "A queue of waiting conversations: [queue NAME].",
    queue_check,
};

static int agent_check(void *c, char *err, size_t errlen)
{
    return rt_skills_ok(((struct sb_agent_conf *)c)->skills, err, errlen);
}

static const struct sb_conf_key agent_keys[] = {
    {"capacity", SB_CONF_INT, offsetof(struct sb_agent_conf, capacity), NULL, 1,
     1000, NULL, SB_CONF_RELOAD,
     "conversations held at once (default: [routing] capacity)"},
    {"skills", SB_CONF_LIST, offsetof(struct sb_agent_conf, skills), "", 0,
     RT_SKILL_MAX, NULL, SB_CONF_RELOAD, "skills, e.g. ru, en, billing"},
    {"team", SB_CONF_STR, offsetof(struct sb_agent_conf, team), NULL, 0,
     RT_NAME_MAX, NULL, SB_CONF_RELOAD,
     "the queue that takes over when this agent, as curator, cannot"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_agent_conf_section = {
    "agent",
    1,
    sizeof(struct sb_agent_conf),
    agent_keys,
    "Routing settings of an agent: [agent NAME], NAME being a [user].",
    agent_check,
};

static const struct sb_conf_key rule_keys[] = {
    {"channel", SB_CONF_LIST, offsetof(struct sb_rule_conf, channel), "", 0, 32,
     NULL, SB_CONF_RELOAD, "channels, e.g. chat, email, sms"},
    {"tag", SB_CONF_LIST, offsetof(struct sb_rule_conf, tag), "", 0, 64, NULL,
     SB_CONF_RELOAD, "customer tags (any of them)"},
    {"tier", SB_CONF_LIST, offsetof(struct sb_rule_conf, tier), "", 0, 64, NULL,
     SB_CONF_RELOAD, "customer tiers"},
    {"locale", SB_CONF_LIST, offsetof(struct sb_rule_conf, locale), "", 0, 16,
     NULL, SB_CONF_RELOAD, "customer languages, e.g. ru (matches ru-RU)"},
    {"keywords", SB_CONF_LIST, offsetof(struct sb_rule_conf, keywords), "", 0,
     256, NULL, SB_CONF_RELOAD,
     "words in the subject or first message, any case (Latin, Cyrillic)"},
    {"queue", SB_CONF_STR, offsetof(struct sb_rule_conf, queue), NULL, 0,
     RT_NAME_MAX, NULL, SB_CONF_REQUIRED | SB_CONF_RELOAD,
     "where a matching conversation goes"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

const struct sb_conf_section sb_rule_conf_section = {
    "rule",
    1,
    sizeof(struct sb_rule_conf),
    rule_keys,
    "A routing rule: [rule NAME], tried in file order; every condition\n"
    "given must hold (any item of a list).",
    NULL,
};

/* ---- module state -------------------------------------------------------- */

static struct {
    struct sb_redis *redis;
    char *prefix;
    char *cfg;      /* the config document (JSON text) */
    long long tick; /* ms */
    int64_t (*now)(void *arg);
    void *now_arg;
    struct sb_metric *m_offers, *m_assign, *m_queued, *m_timeouts, *m_declines,
        *m_overflows, *m_maxwait, *m_resolved, *m_reopened;
} R;

static const char rt_empty_cfg[] =
    "{\"dq\":\"\",\"ct\":30000,\"nb\":0,\"vip\":{},\"q\":{},\"qo\":[],"
    "\"a\":{},\"ao\":[],\"r\":[]}";

void sb_router_init(struct sb_redis *r, const char *prefix)
{
    char *p = sb_strdup(prefix && *prefix ? prefix : "sb:");

    free(R.prefix);
    R.prefix = p;
    R.redis = r;
    if (!R.cfg)
        R.cfg = sb_strdup(rt_empty_cfg);
    if (!R.m_offers) {
        R.m_offers = sb_metric_counter("sb_router_offers_total",
                                       "Offers made to agents, by hop", "hop");
        R.m_assign = sb_metric_counter(
            "sb_router_assignments_total",
            "Conversations assigned, by reason (accepted, auto, transfer)",
            "reason");
        R.m_queued = sb_metric_counter(
            "sb_router_queued_total",
            "Conversations put in a queue, by hop (queue, team, overflow, "
            "transfer)",
            "hop");
        R.m_timeouts = sb_metric_counter("sb_router_offer_timeouts_total",
                                         "Offers not answered in time", NULL);
        R.m_declines = sb_metric_counter("sb_router_declines_total",
                                         "Offers declined by agents", NULL);
        R.m_overflows = sb_metric_counter(
            "sb_router_overflows_total",
            "Conversations moved to the overflow queue after max_wait", NULL);
        R.m_maxwait = sb_metric_counter(
            "sb_router_max_wait_exceeded_total",
            "Conversations past max_wait with no overflow queue", NULL);
        R.m_resolved = sb_metric_counter("sb_router_resolved_total",
                                         "Conversations resolved", NULL);
        R.m_reopened =
            sb_metric_counter("sb_router_reopened_total",
                              "Resolved conversations reopened", NULL);
    }
}

void sb_router_set_clock(int64_t (*now)(void *arg), void *arg)
{
    R.now = now;
    R.now_arg = arg;
}

long long sb_router_tick_interval(void)
{
    return R.tick > 0 ? R.tick : 1000;
}

void sb_router_free(void)
{
    free(R.prefix);
    free(R.cfg);
    memset(&R, 0, sizeof(R));
}

static int64_t rt_now(void)
{
    return R.now ? R.now(R.now_arg) : sb_now_ms();
}

/* ---- building the config document ---------------------------------------- */

static int rt_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int rt_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static char *rt_lower(const char *s)
{
    char *l = sb_strdup(s);

    for (char *p = l; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return l;
}

/* A JSON array of the list's items, lowercased (ASCII) when lower. */
static json_t *rt_list(char *const *l, int lower)
{
    json_t *a = json_array();

    for (size_t i = 0; l && l[i]; i++) {
        if (lower) {
            char *s = rt_lower(l[i]);
            json_array_append_new(a, json_string(s));
            free(s);
        } else {
            json_array_append_new(a, json_string(l[i]));
        }
    }
    return a;
}

static int rt_is_user(const struct sb_config *conf, const char *name)
{
    size_t n = sb_config_count(conf, "user");

    for (size_t i = 0; i < n; i++) {
        const char *un = NULL;

        sb_config_nth(conf, "user", i, &un);
        if (un && strcmp(un, name) == 0)
            return 1;
    }
    return 0;
}

static int rt_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Agents: every [user] with the [routing] capacity, then [agent] sections. */
static int rt_build_agents(const struct sb_config *conf, long long capacity,
                           json_t *agents, json_t *queues, char *err,
                           size_t errlen)
{
    size_t n = sb_config_count(conf, "user");

    for (size_t i = 0; i < n; i++) {
        const char *un = NULL;

        sb_config_nth(conf, "user", i, &un);
        if (!un)
            continue;
        json_object_set_new(agents, un,
                            json_pack("{s:I,s:[],s:s,s:[]}", "cap",
                                      (json_int_t)capacity, "sk", "team", "",
                                      "q"));
    }
    n = sb_config_count(conf, "agent");
    for (size_t i = 0; i < n; i++) {
        const char *an = NULL;
        const struct sb_agent_conf *ac = sb_config_nth(conf, "agent", i, &an);
        json_t *a;

        if (!ac || !an)
            continue;
        a = json_object_get(agents, an);
        if (!a)
            return rt_fail(err, errlen, "[agent %s]: no [user %s]", an, an);
        if (ac->capacity > 0)
            json_object_set_new(a, "cap", json_integer(ac->capacity));
        json_object_set_new(a, "sk", rt_list(ac->skills, 1));
        if (ac->team && *ac->team) {
            if (!json_object_get(queues, ac->team))
                return rt_fail(err, errlen,
                               "[agent %s] team %s: no such "
                               "[queue]",
                               an, ac->team);
            json_object_set_new(a, "team", json_string(ac->team));
        }
    }
    return 0;
}

static int rt_build_queue(const struct sb_config *conf, const char *qn,
                          const struct sb_queue_conf *qc,
                          const struct sb_routing_conf *rc, json_t *q,
                          char *err, size_t errlen)
{
    json_t *members = json_array(), *ms = json_object();

    json_object_set_new(q, "m", members);
    json_object_set_new(q, "ms", ms);
    for (size_t i = 0; qc->members && qc->members[i]; i++) {
        const char *m = qc->members[i];
        size_t n = rt_member_split(m);
        char name[RT_NAME_MAX + 1];

        if (n == 0 || n > RT_NAME_MAX)
            return rt_fail(err, errlen,
                           "[queue %s] member \"%.64s\" is "
                           "malformed",
                           qn, m);
        memcpy(name, m, n);
        name[n] = '\0';
        if (!rt_is_user(conf, name))
            return rt_fail(err, errlen, "[queue %s] member %s: no [user %s]",
                           qn, name, name);
        for (size_t j = 0; j < json_array_size(members); j++)
            if (!strcmp(json_string_value(json_array_get(members, j)), name))
                return rt_fail(err, errlen,
                               "[queue %s] member %s listed "
                               "twice",
                               qn, name);
        json_array_append_new(members, json_string(name));
        if (m[n] == '/') {
            json_t *sk = json_array();
            char *skills = rt_lower(m + n + 1), *save = NULL, *tok;

            for (tok = strtok_r(skills, "+", &save); tok;
                 tok = strtok_r(NULL, "+", &save))
                json_array_append_new(sk, json_string(tok));
            free(skills);
            json_object_set_new(ms, name, sk);
        }
    }
    json_object_set_new(q, "sk", rt_list(qc->skills, 1));
    json_object_set_new(
        q, "st",
        json_string(
            rt_strategies[qc->strategy >= 0 && qc->strategy < 4 ? qc->strategy
                                                                : 0]));
    json_object_set_new(q, "aa", json_boolean(qc->auto_assign));
    json_object_set_new(q, "ot",
                        json_integer(qc->offer_timeout > 0
                                         ? qc->offer_timeout
                                         : rc->offer_timeout));
    json_object_set_new(q, "mw", json_integer(qc->max_wait));
    json_object_set_new(q, "ov", json_string(qc->overflow ? qc->overflow : ""));
    json_object_set_new(q, "sla", json_integer(qc->sla));
    json_object_set_new(q, "team", json_boolean(qc->team));
    return 0;
}

static int rt_build_rules(const struct sb_config *conf, json_t *queues,
                          json_t *rules, char *err, size_t errlen)
{
    size_t n = sb_config_count(conf, "rule");

    for (size_t i = 0; i < n; i++) {
        const char *rn = NULL;
        const struct sb_rule_conf *r = sb_config_nth(conf, "rule", i, &rn);

        if (!r || !rn)
            continue;
        if (!r->queue || !json_object_get(queues, r->queue))
            return rt_fail(err, errlen, "[rule %s] queue %s: no such [queue]",
                           rn, r->queue ? r->queue : "");
        json_array_append_new(
            rules,
            json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:s}", "n", rn, "ch",
                      rt_list(r->channel, 1), "tag", rt_list(r->tag, 1), "tier",
                      rt_list(r->tier, 1), "loc", rt_list(r->locale, 1), "kw",
                      rt_list(r->keywords, 0), "q", r->queue));
    }
    return 0;
}

/* Team queue of agents without [agent] team: the first team queue listing
 * them. Then each agent's queues. */
static void rt_link_agents(json_t *agents, json_t *queues, json_t *order)
{
    for (size_t i = 0; i < json_array_size(order); i++) {
        const char *qn = json_string_value(json_array_get(order, i));
        json_t *q = json_object_get(queues, qn);
        json_t *m = json_object_get(q, "m");
        int team = json_is_true(json_object_get(q, "team"));

        for (size_t j = 0; j < json_array_size(m); j++) {
            const char *an = json_string_value(json_array_get(m, j));
            json_t *a = json_object_get(agents, an);

            if (!a)
                continue;
            json_array_append_new(json_object_get(a, "q"), json_string(qn));
            if (team && !*json_string_value(json_object_get(a, "team")))
                json_object_set_new(a, "team", json_string(qn));
        }
    }
}

static int rt_check_overflow(json_t *queues, json_t *order, char *err,
                             size_t errlen)
{
    size_t nq = json_array_size(order);

    for (size_t i = 0; i < nq; i++) {
        const char *qn = json_string_value(json_array_get(order, i));
        const char *at = qn;

        for (size_t hops = 0;; hops++) {
            const char *ov = json_string_value(
                json_object_get(json_object_get(queues, at), "ov"));

            if (!ov || !*ov)
                break;
            if (!json_object_get(queues, ov))
                return rt_fail(err, errlen,
                               "[queue %s] overflow %s: no such "
                               "[queue]",
                               at, ov);
            if (!strcmp(ov, at) || hops >= nq)
                return rt_fail(err, errlen,
                               "[queue %s] overflow goes round "
                               "in a circle",
                               qn);
            at = ov;
        }
    }
    return 0;
}

/* Check conf and build the document; *out is new on success. */
static int rt_build(const struct sb_config *conf, char **out, long long *tick,
                    char *err, size_t errlen)
{
    static const struct sb_routing_conf defaults = {NULL,  30000, NULL,
                                                    30000, 1000,  3};
    const struct sb_routing_conf *rc = sb_config_get(conf, "routing");
    json_t *root = json_object(), *queues = json_object(),
           *order = json_array(), *agents = json_object(),
           *rules = json_array(), *vip = json_object(), *names;
    size_t nq, nv = 0;
    const char *dq = "";
    const char **sorted;
    const char *key;
    json_t *val;
    int rc_ = -1;

    if (!rc)
        rc = &defaults;
    json_object_set_new(root, "q", queues);
    json_object_set_new(root, "qo", order);
    json_object_set_new(root, "a", agents);
    json_object_set_new(root, "r", rules);
    json_object_set_new(root, "vip", vip);

    nq = sb_config_count(conf, "queue");
    for (size_t i = 0; i < nq; i++) {
        const char *qn = NULL;

        if (sb_config_nth(conf, "queue", i, &qn) && qn) {
            json_object_set_new(queues, qn, json_object());
            json_array_append_new(order, json_string(qn));
        }
    }
    for (size_t i = 0; i < nq; i++) {
        const char *qn = NULL;
        const struct sb_queue_conf *qc = sb_config_nth(conf, "queue", i, &qn);

        if (qc && qn &&
            rt_build_queue(conf, qn, qc, rc, json_object_get(queues, qn), err,
                           errlen) < 0)
            goto done;
    }
    if (rt_check_overflow(queues, order, err, errlen) < 0 ||
        rt_build_agents(conf, rc->capacity, agents, queues, err, errlen) < 0 ||
        rt_build_rules(conf, queues, rules, err, errlen) < 0)
        goto done;
    rt_link_agents(agents, queues, order);

    if (rc->default_queue && *rc->default_queue) {
        if (!json_object_get(queues, rc->default_queue)) {
            rt_fail(err, errlen, "[routing] default_queue %s: no such [queue]",
                    rc->default_queue);
            goto done;
        }
        dq = rc->default_queue;
    } else if (json_array_size(order) > 0) {
        dq = json_string_value(json_array_get(order, 0));
    }
    json_object_set_new(root, "dq", json_string(dq));
    json_object_set_new(root, "ct", json_integer(rc->curator_timeout));

    for (size_t i = 0; rc->vip_tiers && rc->vip_tiers[i]; i++) {
        char *t = rt_lower(rc->vip_tiers[i]);

        if (nv >= RT_VIP_MAX) {
            free(t);
            rt_fail(err, errlen, "[routing] vip_tiers: at most %d", RT_VIP_MAX);
            goto done;
        }
        if (!json_object_get(vip, t))
            json_object_set_new(vip, t, json_integer((json_int_t)nv++));
        free(t);
    }
    json_object_set_new(root, "nb", json_integer((json_int_t)nv));

    sorted = sb_calloc(json_object_size(agents) + 1, sizeof(*sorted));
    nv = 0;
    json_object_foreach(agents, key, val) sorted[nv++] = key;
    qsort(sorted, nv, sizeof(*sorted), rt_cmp_str);
    names = json_array();
    for (size_t i = 0; i < nv; i++)
        json_array_append_new(names, json_string(sorted[i]));
    free(sorted);
    json_object_set_new(root, "ao", names);

    if (out)
        *out = json_dumps(root, JSON_COMPACT);
    if (tick)
        *tick = rc->tick;
    rc_ = 0;
done:
    json_decref(root);
    return rc_;
}

int sb_router_check(const struct sb_config *conf, char *err, size_t errlen)
{
    return rt_build(conf, NULL, NULL, err, errlen);
}

int sb_router_config(const struct sb_config *conf, char *err, size_t errlen)
{
    char *doc = NULL;
    long long tick = 0;

    if (rt_build(conf, &doc, &tick, err, errlen) < 0)
        return -1;
    if (!doc)
        return rt_fail(err, errlen, "cannot encode the routing config");
    free(R.cfg);
    R.cfg = doc;
    R.tick = tick;
    return 0;
}

/* ---- requests ------------------------------------------------------------ */

struct rt_req {
    int read;       /* route_read: one JSON string */
    const char *op; /* static, for logs */
    sb_store_json_cb *cb;
    void *arg;
};

static const struct {
    const char *prefix;
    enum sb_store_status st;
} rt_errors[] = {
    {"NOTFOUND", SB_STORE_NOTFOUND},
    {"CONFLICT", SB_STORE_CONFLICT},
    {"INVALID", SB_STORE_INVALID},
};

static enum sb_store_status rt_map_error(const struct rt_req *q,
                                         const char *text, const char **msg)
{
    char safe[160];

    for (size_t i = 0; i < SB_ARRAY_LEN(rt_errors); i++) {
        size_t n = strlen(rt_errors[i].prefix);

        if (!strncmp(text, rt_errors[i].prefix, n) &&
            (text[n] == ' ' || text[n] == '\0')) {
            *msg = text[n] ? text + n + 1 : text;
            return rt_errors[i].st;
        }
    }
    SB_WARN(RT_PLACE, "redis error op=%s err=\"%s\"", q->op,
            sb_log_safe(text, safe, sizeof(safe)));
    *msg = text;
    return SB_STORE_UNAVAILABLE;
}

/* counts {"offer:curator":1,"timeout":2,...} -> metrics. */
static void rt_count(const redisReply *r)
{
    json_t *c;
    const char *key;
    json_t *val;

    if (!r || r->type != REDIS_REPLY_STRING)
        return;
    c = json_loadb(r->str, r->len, 0, NULL);
    if (!c)
        return;
    json_object_foreach(c, key, val)
    {
        double v = (double)json_integer_value(val);
        const char *colon = strchr(key, ':');
        char kind[16];
        size_t kl = colon ? (size_t)(colon - key) : strlen(key);

        if (kl >= sizeof(kind) || v <= 0)
            continue;
        memcpy(kind, key, kl);
        kind[kl] = '\0';
        if (!strcmp(kind, "offer") && colon)
            sb_metric_add(R.m_offers, v, colon + 1);
        else if (!strcmp(kind, "assign") && colon)
            sb_metric_add(R.m_assign, v, colon + 1);
        else if (!strcmp(kind, "queued") && colon)
            sb_metric_add(R.m_queued, v, colon + 1);
        else if (!strcmp(kind, "timeout"))
            sb_metric_add(R.m_timeouts, v);
        else if (!strcmp(kind, "decline"))
            sb_metric_add(R.m_declines, v);
        else if (!strcmp(kind, "overflow"))
            sb_metric_add(R.m_overflows, v);
        else if (!strcmp(kind, "max_wait"))
            sb_metric_add(R.m_maxwait, v);
        else if (!strcmp(kind, "resolved"))
            sb_metric_add(R.m_resolved, v);
        else if (!strcmp(kind, "reopened"))
            sb_metric_add(R.m_reopened, v);
    }
    json_decref(c);
}

static void rt_on_reply(redisReply *reply, const char *err, void *arg)
{
    struct rt_req *q = arg;
    enum sb_store_status st = SB_STORE_OK;
    const char *msg = NULL;
    const redisReply *doc = NULL;
    json_t *j = NULL;

    if (!reply) {
        st = SB_STORE_UNAVAILABLE;
        msg = err ? err : "disconnected";
    } else if (reply->type == REDIS_REPLY_ERROR) {
        st = rt_map_error(q, reply->str, &msg);
    } else {
        if (q->read)
            doc = reply;
        else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2)
            doc = reply->element[0];
        if (doc && doc->type == REDIS_REPLY_STRING)
            j = json_loadb(doc->str, doc->len, 0, NULL);
        if (!j) {
            SB_ERR(RT_PLACE, "unexpected reply op=%s", q->op);
            st = SB_STORE_UNAVAILABLE;
            msg = "unexpected reply";
        } else if (!q->read) {
            rt_count(reply->element[1]);
        }
    }
    q->cb(st, j, msg, q->arg);
    free(q);
}

#define RT_S(s) ((s) ? (s) : "")

/* Run script `script` with prefix, op, now, config, then nargs args. */
static int rt_run(const char *script, int read, const char *op, int64_t now,
                  int nargs, const char *const *args, sb_store_json_cb *cb,
                  void *arg)
{
    const char *argv[4 + RT_ARGV_MAX];
    size_t lens[4 + RT_ARGV_MAX];
    char nows[24];
    struct rt_req *q;
    int argc = 0;

    if (!R.redis || !R.prefix || !cb || nargs > RT_ARGV_MAX)
        return -1;
    snprintf(nows, sizeof(nows), "%lld", (long long)(now > 0 ? now : 0));
    argv[argc++] = R.prefix;
    argv[argc++] = op;
    argv[argc++] = nows;
    argv[argc++] = R.cfg ? R.cfg : rt_empty_cfg;
    for (int i = 0; i < nargs; i++)
        argv[argc++] = RT_S(args[i]);
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    q = sb_calloc(1, sizeof(*q));
    q->read = read;
    q->op = op;
    q->cb = cb;
    q->arg = arg;
    if (sb_redis_script(R.redis, script, rt_on_reply, q, 0, argc, argv, lens) <
        0) {
        free(q);
        return -1;
    }
    return 0;
}

static int rt_decide(const char *op, int nargs, const char *const *args,
                     sb_store_json_cb *cb, void *arg)
{
    return rt_run("route_engine", 0, op, rt_now(), nargs, args, cb, arg);
}

int sb_router_route(const char *conv, sb_store_json_cb *cb, void *arg)
{
    const char *args[] = {conv};

    return rt_decide("route", 1, args, cb, arg);
}

int sb_router_reopen(const char *conv, sb_store_json_cb *cb, void *arg)
{
    const char *args[] = {conv};

    return rt_decide("reopen", 1, args, cb, arg);
}

int sb_router_presence(const char *agent, const char *state,
                       sb_store_json_cb *cb, void *arg)
{
    const char *args[] = {agent, state};

    return rt_decide("presence", 2, args, cb, arg);
}

int sb_router_accept(const char *conv, const char *agent, sb_store_json_cb *cb,
                     void *arg)
{
    const char *args[] = {conv, agent};

    return rt_decide("accept", 2, args, cb, arg);
}

int sb_router_decline(const char *conv, const char *agent, sb_store_json_cb *cb,
                      void *arg)
{
    const char *args[] = {conv, agent};

    return rt_decide("decline", 2, args, cb, arg);
}

int sb_router_transfer(const char *conv, const char *to_agent,
                       const char *to_queue, const char *by,
                       sb_store_json_cb *cb, void *arg)
{
    const char *args[] = {conv, to_agent, to_queue, by};

    return rt_decide("transfer", 4, args, cb, arg);
}

int sb_router_resolve(const char *conv, const char *by, sb_store_json_cb *cb,
                      void *arg)
{
    const char *args[] = {conv, by};

    return rt_decide("resolve", 2, args, cb, arg);
}

int sb_router_tick(int64_t now_ms, sb_store_json_cb *cb, void *arg)
{
    return rt_run("route_engine", 0, "tick", now_ms, 0, NULL, cb, arg);
}

int sb_router_queues(sb_store_json_cb *cb, void *arg)
{
    return rt_run("route_read", 1, "queues", rt_now(), 0, NULL, cb, arg);
}

int sb_router_agents(sb_store_json_cb *cb, void *arg)
{
    return rt_run("route_read", 1, "agents", rt_now(), 0, NULL, cb, arg);
}

int sb_router_conversations(const struct sb_router_filter *f,
                            sb_store_json_cb *cb, void *arg)
{
    char limit[16];
    const char *args[4];

    snprintf(limit, sizeof(limit), "%d", f && f->limit ? f->limit : 100);
    args[0] = f ? f->state : NULL;
    args[1] = f ? f->queue : NULL;
    args[2] = f ? f->agent : NULL;
    args[3] = limit;
    return rt_run("route_read", 1, "conversations", rt_now(), 4, args, cb, arg);
}

int sb_router_position(const char *conv, sb_store_json_cb *cb, void *arg)
{
    const char *args[] = {conv};

    return rt_run("route_read", 1, "position", rt_now(), 1, args, cb, arg);
}
