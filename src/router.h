/* router.h - the routing engine: every conversation, from every channel, to
 * an agent.
 *
 * A conversation goes first to the customer's curator (the agent named in
 * the customer's `curator` field) when that agent is online with free
 * capacity; on decline, timeout or unavailability it goes to the curator's
 * team queue, then to the default queue. Without a curator, the [rule]
 * sections choose the queue (channel, tag, tier, locale, keywords in the
 * first message), else [routing] default_queue. A queue holds its waiting
 * conversations FIFO within priority (VIP tiers first) and offers each to
 * one member chosen by its strategy (round_robin, least_busy, longest_idle)
 * or to every eligible member at once (ring_all: the first accept wins, the
 * other offers are withdrawn); with auto_assign it assigns without an
 * offer. Agents have presence (online, away, offline) and a capacity of
 * concurrent conversations; a pending offer reserves a slot. docs/routing.md
 * has the model, the keys, the event and log shapes.
 *
 * All state is in Redis and every decision is one Lua script
 * (src/lua/route_engine.lua), so any number of daemon instances sharing one
 * Redis never assign a conversation twice nor exceed a capacity. Each
 * decision is appended to the contact log (type "assignment" or "status",
 * direction "internal", the reason in `fields`) in the same script, and is
 * published as a JSON event on the pub/sub channel "<prefix>events".
 *
 * Contract:
 *  1. Every call that returns 0 completes EXACTLY ONCE, asynchronously, on
 *     the loop thread. -1 means refused (no Redis connection bound, Redis
 *     down or overloaded: answer 503); no completion follows.
 *  2. String inputs are borrowed for the call only (copied into the Redis
 *     command before return). The JSON result passed to the callback is a
 *     new reference the callback owns (json_decref it); it is NULL unless
 *     the status is SB_STORE_OK.
 *  3. Statuses are those of store.h: NOTFOUND (no such conversation, agent
 *     or queue), CONFLICT (the state does not allow it: no pending offer,
 *     offer expired, at capacity, already resolved...; err says which),
 *     INVALID (bad argument), UNAVAILABLE (timeout, lost link, script
 *     error: nothing is known to be written).
 *  4. Times come from the router's clock (sb_router_set_clock; default
 *     sb_now_ms) and are passed to the scripts; Redis' TIME is never used
 *     for a decision. sb_router_tick takes its time explicitly.
 *  5. The configuration given to sb_router_config is copied; the router
 *     keeps nothing borrowed from it.
 *
 * The result of a decision (route, reopen, accept, decline, transfer,
 * resolve) is the conversation as the router sees it afterwards:
 *   {"id","state","queue","agent","hop","position","offers":[agent,...],
 *    "routed":bool}
 * (queue, agent, hop, position null when none; position is 1-based in the
 * queue's waiting order; routed false when routing is not configured).
 */
#ifndef SB_ROUTER_H
#define SB_ROUTER_H

#include <jansson.h>
#include <stdint.h>

#include "config.h"
#include "redis.h"
#include "store.h"

/* [routing] */
struct sb_routing_conf {
    char *default_queue;       /* queue when no rule matches */
    long long curator_timeout; /* ms an offer to the curator lasts */
    char **vip_tiers;          /* customer tiers served first, in order */
    long long offer_timeout;   /* ms, default for queues */
    long long tick;            /* ms between sb_router_tick calls */
    long long capacity;        /* default agent capacity */
};

enum sb_route_strategy {
    SB_ROUTE_ROUND_ROBIN = 0,
    SB_ROUTE_LEAST_BUSY,
    SB_ROUTE_LONGEST_IDLE,
    SB_ROUTE_RING_ALL,
};

/* [queue NAME] */
struct sb_queue_conf {
    char **members;          /* "alice" or "alice/skill+skill" */
    char **skills;           /* skills a member needs for this queue */
    int strategy;            /* enum sb_route_strategy */
    int auto_assign;         /* assign without an offer */
    long long offer_timeout; /* ms; 0 = [routing] offer_timeout */
    long long max_wait;      /* ms; 0 = no limit */
    char *overflow;          /* queue after max_wait */
    long long sla;           /* first-response target, ms; 0 = none */
    int team;                /* a curator team: members' team queue */
};

/* [agent NAME]; NAME is a [user NAME] */
struct sb_agent_conf {
    long long capacity; /* 0 = [routing] capacity */
    char **skills;
    char *team; /* the agent's team queue */
};

/* [rule NAME], tried in file order; every condition given must hold, and
 * a list condition holds when any of its items does. */
struct sb_rule_conf {
    char **channel;
    char **tag;
    char **tier;
    char **locale;
    char **keywords; /* substrings of the subject + first message */
    char *queue;
};

extern const struct sb_conf_section sb_routing_conf_section; /* [routing] */
extern const struct sb_conf_section sb_queue_conf_section;   /* [queue] */
extern const struct sb_conf_section sb_agent_conf_section;   /* [agent] */
extern const struct sb_conf_section sb_rule_conf_section;    /* [rule] */

/* Bind to a Redis connection (borrowed; outlives the router's use of it)
 * and a key prefix (copied). May be called again to switch connections;
 * the configuration is kept. Registers the router's metrics once. */
void sb_router_init(struct sb_redis *r, const char *prefix);

/* Cross-section checks the per-section tables cannot make: members and
 * [agent] names are [user]s, queues named by default_queue, overflow,
 * team and rules exist, overflow has no cycle. 0, or -1 with a reason in
 * err. For --check and before accepting a reload. */
int sb_router_check(const struct sb_config *conf, char *err, size_t errlen);

/* Check, then adopt the configuration (copied). 0, or -1 with a reason in
 * err and the previous configuration kept. Without [queue] sections
 * routing is off: route completes OK with "routed": false. */
int sb_router_config(const struct sb_config *conf, char *err, size_t errlen);

/* [routing] tick in ms: how often the daemon should call sb_router_tick. */
long long sb_router_tick_interval(void);

/* The clock for decisions (ms since the epoch); NULL restores sb_now_ms. */
void sb_router_set_clock(int64_t (*now)(void *arg), void *arg);

/* At exit, before sb_metrics_free: free the configuration copy and the
 * prefix, forget the connection, the clock and the metric families. */
void sb_router_free(void);

/* Route a conversation: a new one (state "new"), or a resolved one, which
 * is reopened first (the customer wrote again). One that is already queued
 * or assigned is left alone (result "routed": true, unchanged), so calling
 * this after every inbound contact is safe. */
int sb_router_route(const char *conv, sb_store_json_cb *cb, void *arg);

/* Reopen a resolved conversation and route it. CONFLICT if not resolved. */
int sb_router_reopen(const char *conv, sb_store_json_cb *cb, void *arg);

/* Set an agent's presence: "online", "away" or "offline". Going away or
 * offline withdraws the agent's pending offers (the conversations move
 * on); assigned conversations stay. Going online dispatches the agent's
 * queues. Result: the agent as in sb_router_agents. */
int sb_router_presence(const char *agent, const char *state,
                       sb_store_json_cb *cb, void *arg);

/* Accept a pending offer. CONFLICT "no pending offer" when there is none
 * (another agent won, or it was withdrawn), "offer expired", "at capacity".
 * Accepting a conversation already assigned to the same agent is OK. */
int sb_router_accept(const char *conv, const char *agent, sb_store_json_cb *cb,
                     void *arg);

/* Decline a pending offer: remembered for this conversation, which goes to
 * the next eligible agent (or, from the curator, to the team queue). */
int sb_router_decline(const char *conv, const char *agent, sb_store_json_cb *cb,
                      void *arg);

/* Transfer to an agent (assigned directly; CONFLICT when the agent is not
 * online or at capacity) or to a queue (exactly one of to_agent, to_queue
 * non-NULL). `by` names who asked (a user or API key id; may be NULL).
 * The previous agent is freed and not offered it again in this episode.
 * Also serves "assign" of a queued conversation to an agent. */
int sb_router_transfer(const char *conv, const char *to_agent,
                       const char *to_queue, const char *by,
                       sb_store_json_cb *cb, void *arg);

/* Resolve: frees the agent's slot (waiting conversations are assigned at
 * once), withdraws offers, clears the customer's open-conversation entry.
 * CONFLICT when already resolved. */
int sb_router_resolve(const char *conv, const char *by, sb_store_json_cb *cb,
                      void *arg);

/* Expire offers (next agent, or curator -> team) and max waits (overflow)
 * due at now_ms, then dispatch every queue. Result:
 *   {"timeouts":n,"overflows":n,"decisions":n,"more":bool}
 * ("more": a bound was hit; call again soon). */
int sb_router_tick(int64_t now_ms, sb_store_json_cb *cb, void *arg);

/* Read-only views (results documented in docs/routing.md):
 *   queues:  {"queues":[{"name","strategy","waiting","longest_wait",...}]}
 *   agents:  {"agents":[{"name","presence","active","capacity",...}]}
 *   conversations: {"conversations":[{conversation + "position","hop"}]}
 *   position: {"id","state","queue","position","waiting"} */
int sb_router_queues(sb_store_json_cb *cb, void *arg);
int sb_router_agents(sb_store_json_cb *cb, void *arg);

struct sb_router_filter {
    const char *state; /* new|queued|assigned|waiting|resolved; NULL: open */
    const char *queue; /* NULL: any */
    const char *agent; /* NULL: any */
    int limit;         /* 1..500; 0 = 100 */
};

int sb_router_conversations(const struct sb_router_filter *f,
                            sb_store_json_cb *cb, void *arg);
int sb_router_position(const char *conv, sb_store_json_cb *cb, void *arg);

#endif
