/* api_routing.c - the HTTP face of the routing engine: conversations,
 * queues, agents and presence.
 *
 * Who may do what: an agent acts for itself (its presence, accepting or
 * declining its offers, resolving or transferring conversations assigned
 * to it, notes); operators and admins act for anyone; API keys with the
 * admin scope act as operators, and keys with the customers scope may read
 * the views. The router enforces the state machine (409 when the state
 * does not allow a step); this file checks the caller's right to ask.
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "json.h"
#include "log.h"
#include "outbound.h"
#include "router.h"
#include "store.h"

#define AR_PLACE "core.api"


/* Map a router/store completion to an answer. */
static void on_result(enum sb_store_status st, json_t *result,
                      const char *err, void *arg)
{
    struct sb_http_req *req = arg;

    if (st == SB_STORE_OK)
        sb_http_respond_json(req, 200, result);
    else
        sb_api_store_fail(req, st, err, "not found");
    json_decref(result);
}

static int is_supervisor(const struct sb_principal *who)
{
    if (who->kind == SB_PRINCIPAL_USER)
        return who->role >= SB_ROLE_OPERATOR;
    return who->kind == SB_PRINCIPAL_APIKEY && (who->scopes & SB_SCOPE_ADMIN);
}

/* The agent the caller acts as: itself for an agent; for supervisors the
 * named one (or themselves when they are users and name none). */
static const char *acting_agent(struct sb_http_req *req, const char *named)
{
    if (req->who.kind == SB_PRINCIPAL_USER && !is_supervisor(&req->who)) {
        if (named && strcmp(named, req->who.name) != 0)
            return NULL;
        return req->who.name;
    }
    if (named)
        return named;
    return req->who.kind == SB_PRINCIPAL_USER ? req->who.name : NULL;
}

static json_t *body_object(struct sb_http_req *req,
                           const char *const *fields, int allow_empty)
{
    struct sb_json_err e = {{0}, {0}};
    json_t *j;

    if (allow_empty && req->body.len == 0)
        return json_object();
    j = sb_json_parse_body(req->body.data, req->body.len, &e);
    if (!j || sb_json_only(j, fields, &e) < 0) {
        sb_http_respond_error(req, 400, e.error, e.field[0] ? e.field : NULL);
        json_decref(j);
        return NULL;
    }
    return j;
}

static const char *opt_str(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

/* ---- views ------------------------------------------------------------- */

void sb_api_queues(struct sb_http_req *req)
{
    if (sb_router_queues(on_result, req) < 0)
        sb_api_unavailable(req);
}

void sb_api_agents(struct sb_http_req *req)
{
    if (sb_router_agents(on_result, req) < 0)
        sb_api_unavailable(req);
}

void sb_api_conversations(struct sb_http_req *req)
{
    static const char *const states[] = {"new",     "queued",   "assigned",
                                         "waiting", "resolved", NULL};
    struct sb_router_filter f = {NULL, NULL, NULL, 0};
    char *state = sb_http_query(req, "state");
    char *queue = sb_http_query(req, "queue");
    char *agent = sb_http_query(req, "agent");
    int n, ok = 0;

    if (state) {
        for (int i = 0; states[i]; i++)
            if (strcmp(state, states[i]) == 0)
                ok = 1;
        if (!ok) {
            sb_http_respond_error(req, 400,
                                  "state must be new, queued, assigned, "
                                  "waiting or resolved",
                                  "state");
            goto out;
        }
    }
    if (sb_api_limit(req, 100, 500, &n) < 0)
        goto out;
    f.state = state;
    f.queue = queue;
    f.agent = agent;
    f.limit = (int)n;
    if (sb_router_conversations(&f, on_result, req) < 0)
        sb_api_unavailable(req);
out:
    free(state);
    free(queue);
    free(agent);
}

/* ---- presence ------------------------------------------------------------ */

void sb_api_presence(struct sb_http_req *req)
{
    static const char *const fields[] = {"state", NULL};
    static const char *const states[] = {"online", "away", "offline", NULL};
    struct sb_json_err e = {{0}, {0}};
    const char *state = NULL, *agent;
    json_t *j = body_object(req, fields, 0);

    if (!j)
        return;
    if (sb_json_get_enum(j, "state", 1, states, &state, &e) < 0) {
        sb_http_respond_error(req, 400, e.error, e.field);
        json_decref(j);
        return;
    }
    agent = acting_agent(req, req->params[0]);
    if (!agent) {
        sb_http_respond_error(req, 403, "agents set only their own presence",
                              NULL);
    } else if (sb_router_presence(agent, state, on_result, req) < 0) {
        sb_api_unavailable(req);
    }
    json_decref(j);
}

/* ---- conversation steps ----------------------------------------------------- */

static void h_step_run(struct sb_http_req *req, int step);

/* A plain agent may transfer or resolve only what is assigned to it: look
 * the conversation up first. */
struct step_check {
    struct sb_http_req *req;
    int step;
};

static void on_step_conv(enum sb_store_status st, json_t *conv,
                         const char *err, void *arg)
{
    struct step_check *sc = arg;
    struct sb_http_req *req = sc->req;
    int step = sc->step;
    const char *agent = json_string_value(json_object_get(conv, "agent"));

    free(sc);
    if (st != SB_STORE_OK) {
        on_result(st, conv, err, req);
        return;
    }
    if (!agent || strcmp(agent, req->who.name) != 0) {
        json_decref(conv);
        sb_http_respond_error(req, 403,
                              "the conversation is not assigned to you",
                              NULL);
        return;
    }
    json_decref(conv);
    h_step_run(req, step);
}

static void h_step(struct sb_http_req *req, int step)
{
    if ((step == 3 || step == 4) && req->who.kind == SB_PRINCIPAL_USER &&
        !is_supervisor(&req->who)) {
        struct step_check *sc = sb_malloc(sizeof(*sc));
        sc->req = req;
        sc->step = step;
        if (sb_conversation_get(req->params[0], on_step_conv, sc) < 0) {
            free(sc);
            sb_api_unavailable(req);
        }
        return;
    }
    h_step_run(req, step);
}

static void h_step_run(struct sb_http_req *req, int step)
{
    static const char *const fields[] = {"agent", "queue", NULL};
    const char *conv = req->params[0], *named, *queue, *agent;
    json_t *j = body_object(req, fields, 1);
    int r = 0;

    if (!j)
        return;
    named = opt_str(j, "agent");
    queue = opt_str(j, "queue");
    agent = acting_agent(req, step == 2 || step == 3 ? named : NULL);
    switch (step) {
    case 0: /* accept */
    case 1: /* decline */
        if (req->who.kind != SB_PRINCIPAL_USER) {
            sb_http_respond_error(req, 403, "only agents accept offers",
                                  NULL);
            goto out;
        }
        r = step == 0 ? sb_router_accept(conv, req->who.name, on_result, req)
                      : sb_router_decline(conv, req->who.name, on_result, req);
        break;
    case 2: /* assign {agent} */
        if (!named || queue) {
            sb_http_respond_error(req, 400, "assign takes an agent", "agent");
            goto out;
        }
        if (!agent) {
            sb_http_respond_error(req, 403,
                                  "agents may only assign to themselves",
                                  NULL);
            goto out;
        }
        r = sb_router_transfer(conv, agent, NULL, req->who.name, on_result,
                               req);
        break;
    case 3: /* transfer {agent} | {queue} */
        if ((named != NULL) == (queue != NULL)) {
            sb_http_respond_error(req, 400,
                                  "transfer takes an agent or a queue",
                                  "agent");
            goto out;
        }
        r = sb_router_transfer(conv, named, queue, req->who.name, on_result,
                               req);
        break;
    case 4: /* resolve */
        r = sb_router_resolve(conv, req->who.name, on_result, req);
        break;
    }
    if (r < 0)
        sb_api_unavailable(req);
out:
    json_decref(j);
}

void sb_api_accept(struct sb_http_req *req)
{
    h_step(req, 0);
}

void sb_api_decline(struct sb_http_req *req)
{
    h_step(req, 1);
}

void sb_api_assign(struct sb_http_req *req)
{
    h_step(req, 2);
}

void sb_api_transfer(struct sb_http_req *req)
{
    h_step(req, 3);
}

void sb_api_resolve(struct sb_http_req *req)
{
    h_step(req, 4);
}

/* ---- notes ------------------------------------------------------------------ */

static void on_note(enum sb_store_status st,
                    const struct sb_contact_result *res, const char *err,
                    void *arg)
{
    struct sb_http_req *req = arg;
    json_t *j;

    if (st != SB_STORE_OK) {
        on_result(st, NULL, err, req);
        return;
    }
    j = json_pack("{s:s, s:s, s:s}", "id", res->contact_id, "customer",
                  res->customer_id, "conversation", res->conversation_id);
    sb_http_respond_json(req, 201, j);
    json_decref(j);
}

void sb_api_note(struct sb_http_req *req)
{
    static const char *const fields[] = {"text", NULL};
    struct sb_json_err e = {{0}, {0}};
    struct sb_contact_in in;
    const char *text = NULL;
    json_t *j = body_object(req, fields, 0);

    if (!j)
        return;
    if (sb_json_get_str(j, "text", 1, 16384, 1, &text, &e) < 0) {
        sb_http_respond_error(req, 400, e.error, e.field);
        json_decref(j);
        return;
    }
    memset(&in, 0, sizeof(in));
    in.channel = "note";
    in.direction = "internal";
    in.type = "note";
    in.conversation = req->params[0];
    in.text = text;
    in.text_len = strlen(text);
    in.agent = req->who.name;
    if (sb_contact_ingest(&in, on_note, req) < 0)
        sb_api_unavailable(req);
    json_decref(j);
}

/* ---- replies ---------------------------------------------------------------- */

static void on_reply(enum sb_store_status st, json_t *result,
                     const char *err, void *arg)
{
    struct sb_http_req *req = arg;

    if (st == SB_STORE_OK) {
        sb_http_respond_json(req, 201, result);
        json_decref(result);
        return;
    }
    on_result(st, result, err, req);
}

/* An agent's reply through the conversation's channel (or the customer's
 * next reachable one): only the agent holding it, or a supervisor. */
void sb_api_reply(struct sb_http_req *req)
{
    static const char *const fields[] = {"text", "client_id", NULL};
    struct sb_json_err e = {{0}, {0}};
    const char *text = NULL, *cid = NULL;
    json_t *j = body_object(req, fields, 0);

    if (!j)
        return;
    if (sb_json_get_str(j, "text", 1, 16384, 1, &text, &e) < 0 ||
        sb_json_get_str(j, "client_id", 0, 64, 0, &cid, &e) < 0) {
        sb_http_respond_error(req, 400, e.error, e.field);
        json_decref(j);
        return;
    }
    if (req->who.kind != SB_PRINCIPAL_USER) {
        sb_http_respond_error(req, 403, "replies come from agents", NULL);
        json_decref(j);
        return;
    }
    if (sb_outbound_reply(req->params[0], req->who.name,
                          sb_auth_display_name(req->who.name), text, cid,
                          on_reply, req) < 0)
        sb_api_unavailable(req);
    json_decref(j);
}

/* ---- routing after ingest ----------------------------------------------- */

static void on_routed(enum sb_store_status st, json_t *result,
                      const char *err, void *arg)
{
    char *conv = arg;

    if (st != SB_STORE_OK)
        SB_WARN(AR_PLACE, "routing failed conversation=%s err=%s", conv,
                err ? err : "-");
    free(conv);
    json_decref(result);
}

void sb_api_route_after_ingest(const struct sb_contact_result *res)
{
    char *conv;

    /* Ingest says when the router is needed (a new or resolved inbound
     * conversation): routing is a heavy script, not for every message. */
    if (res->duplicate || !res->needs_route || !res->conversation_id[0])
        return;
    conv = sb_strdup(res->conversation_id);
    if (sb_router_route(conv, on_routed, conv) < 0) {
        SB_WARN(AR_PLACE, "routing refused conversation=%s", conv);
        free(conv);
    }
}
