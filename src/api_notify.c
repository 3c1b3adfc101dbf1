/* api_notify.c - the notification endpoints of the REST API.
 *
 *   POST   /api/v1/notifications        accept one (202 + id)
 *   GET    /api/v1/notifications/{id}   its state and every attempt
 *   GET    /api/v1/notify/queues        stream, schedule, DLQ figures
 *   GET    /api/v1/dlq                  dead letters, newest first
 *   POST   /api/v1/dlq/{id}/retry       start a dead one over
 *   DELETE /api/v1/dlq/{id}             drop it from the queue
 *
 * Validation lives in notify_req.c (the stream door shares it); this file
 * only maps HTTP to it. The 202 goes out after the notification is in
 * Redis (the script's reply), never before.
 */
#include "api.h"

#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"
#include "notify.h"
#include "util.h"

static void an_reply(struct sb_http_req *req, int status,
                     enum sb_store_status st, json_t *res, const char *err,
                     const char *what)
{
    if (st == SB_STORE_OK)
        sb_http_respond_json(req, status, res);
    else
        sb_api_store_fail(req, st, err, what);
    json_decref(res);
}

static void an_accepted(enum sb_store_status st, json_t *res,
                        const char *err, void *arg)
{
    an_reply(arg, 202, st, res, err, "no such customer");
}

static void an_ok(enum sb_store_status st, json_t *res, const char *err,
                  void *arg)
{
    an_reply(arg, 200, st, res, err, "not found");
}

void sb_api_notify_post(struct sb_http_req *req)
{
    struct sb_json_err e = {{0}, {0}};
    struct sb_ntf_in in;
    json_t *j = sb_json_parse_body(req->body.data, req->body.len, &e);
    int r;

    if (!j || sb_notify_from_json(j, &in, &e) < 0) {
        json_decref(j);
        if (j)
            sb_ntf_in_free(&in);
        sb_http_respond_error(req, 400, e.error, e.field[0] ? e.field : NULL);
        return;
    }
    json_decref(j);
    r = sb_notify_submit(&in, an_accepted, req);
    sb_ntf_in_free(&in);
    if (r < 0)
        sb_api_unavailable(req);
}

void sb_api_notify_get(struct sb_http_req *req)
{
    if (sb_notify_get(req->params[0], an_ok, req) < 0)
        sb_api_unavailable(req);
}

void sb_api_notify_queues(struct sb_http_req *req)
{
    if (sb_notify_stats(an_ok, req) < 0)
        sb_api_unavailable(req);
}

void sb_api_dlq_list(struct sb_http_req *req)
{
    sb_api_list(req, sb_notify_dlq_list);
}

void sb_api_dlq_retry(struct sb_http_req *req)
{
    if (sb_notify_dlq_retry(req->params[0], an_ok, req) < 0)
        sb_api_unavailable(req);
}

void sb_api_dlq_drop(struct sb_http_req *req)
{
    if (sb_notify_dlq_drop(req->params[0], an_ok, req) < 0)
        sb_api_unavailable(req);
}
