/* api.h - the REST API routes (/api/v1) and health/metrics endpoints. */
#ifndef SB_API_H
#define SB_API_H

#include "config.h"
#include "core.h"
#include "http.h"
#include "redis.h"
#include "store.h"

/* The route table for sb_http_start (static; lives for the process). */
const struct sb_route *sb_api_routes(void);

/* ready() answers /readyz: 1 when Redis is up and we are not draining. */
void sb_api_init(struct sb_redis *r, int (*ready)(void));
/* Current config (borrowed; call again after each reload). */
void sb_api_config(const struct sb_config *conf);

/* Answer a failed store or router completion: 404 (err or what), 409,
 * 400, or 503 with Retry-After. */
void sb_api_store_fail(struct sb_http_req *req, enum sb_store_status st,
                       const char *err, const char *what);

/* api_routing.c: conversations, queues, agents, presence. */
void sb_api_queues(struct sb_http_req *req);
void sb_api_agents(struct sb_http_req *req);
void sb_api_conversations(struct sb_http_req *req);
void sb_api_presence(struct sb_http_req *req);
void sb_api_accept(struct sb_http_req *req);
void sb_api_decline(struct sb_http_req *req);
void sb_api_assign(struct sb_http_req *req);
void sb_api_transfer(struct sb_http_req *req);
void sb_api_resolve(struct sb_http_req *req);
void sb_api_note(struct sb_http_req *req);
void sb_api_reply(struct sb_http_req *req);
/* api_notify.c */
void sb_api_notify_post(struct sb_http_req *req);
void sb_api_notify_get(struct sb_http_req *req);
void sb_api_notify_queues(struct sb_http_req *req);
void sb_api_dlq_list(struct sb_http_req *req);
void sb_api_dlq_retry(struct sb_http_req *req);
void sb_api_dlq_drop(struct sb_http_req *req);
/* api_mail.c */
void sb_api_quarantine_list(struct sb_http_req *req);
void sb_api_quarantine_show(struct sb_http_req *req);
void sb_api_quarantine_replay(struct sb_http_req *req);
void sb_api_contact_html(struct sb_http_req *req);
void sb_api_contact_attachment(struct sb_http_req *req);

/* 503 "redis unavailable" with Retry-After: 1 (nothing was written). */
void sb_api_unavailable(struct sb_http_req *req);

/* The "limit" query parameter into *out (def when absent). 0, or -1 after
 * answering 400 "limit must be 1..max". */
int sb_api_limit(struct sb_http_req *req, int def, int max, int *out);

/* A list route over a store-style call: ?before= (passed as is, NULL when
 * absent) and ?limit= (1..500, default 50); the JSON result is the
 * answer. */
typedef int sb_api_list_fn(const char *before, int limit,
                           sb_store_json_cb *cb, void *arg);
void sb_api_list(struct sb_http_req *req, sb_api_list_fn *fn);

/* Hand a contact's conversation to the router when ingest says it needs
 * one (res->needs_route); logs a failure, never blocks the answer. */
void sb_api_route_after_ingest(const struct sb_contact_result *res);

#endif
