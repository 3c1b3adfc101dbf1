/* api_mail.c - the REST routes of inbound mail: the quarantine for
 * operators, and a contact's HTML body and attachments for agents.
 *
 * A message's HTML is served as text/html under a Content-Security-Policy
 * of "sandbox" with nothing allowed but inline styles and data: images, so
 * a page opened directly runs no script, loads nothing and submits nothing;
 * the console shows it in a sandboxed iframe on top of that. Attachments
 * are always downloads (Content-Disposition: attachment, nosniff).
 */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailin.h"
#include "util.h"

static void am_json(enum sb_store_status st, json_t *res, const char *err,
                    void *arg)
{
    if (st == SB_STORE_OK)
        sb_http_respond_json(arg, 200, res);
    else
        sb_api_store_fail(arg, st, err, "no such quarantine entry");
    json_decref(res);
}

void sb_api_quarantine_list(struct sb_http_req *req)
{
    sb_api_list(req, sb_mailin_q_list);
}

void sb_api_quarantine_show(struct sb_http_req *req)
{
    if (sb_mailin_q_show(req->params[0], am_json, req) < 0)
        sb_api_unavailable(req);
}

void sb_api_quarantine_replay(struct sb_http_req *req)
{
    if (sb_mailin_q_replay(req->params[0], am_json, req) < 0)
        sb_api_unavailable(req);
}

/* ---- a contact's HTML and attachments ---------------------------------- */

struct am_get {
    struct sb_http_req *req;
    int html;           /* 1: the HTML body, 0: attachment n */
    long long n;
    char *ctype;        /* what the blob is served as */
    char *filename;
};

static void am_get_free(struct am_get *g)
{
    free(g->ctype);
    free(g->filename);
    free(g);
}

/* RFC 5987 encoding of a file name for Content-Disposition. */
static char *disposition(const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    struct sb_buf b;

    sb_buf_init(&b, 0);
    sb_buf_appends(&b, "attachment; filename*=UTF-8''");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
            (*p >= '0' && *p <= '9') || strchr("!#$&+-.^_`|~", *p)) {
            sb_buf_append(&b, p, 1);
        } else {
            char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            sb_buf_append(&b, e, 3);
        }
    }
    return sb_buf_steal(&b, NULL);
}

static void on_blob(enum sb_store_status st, const char *data, size_t len,
                    void *arg)
{
    struct am_get *g = arg;
    struct sb_http_req *req = g->req;

    if (st == SB_STORE_NOTFOUND) {
        sb_http_respond_error(req, 404,
                              "content not kept (over the size cap or "
                              "expired)",
                              NULL);
    } else if (st != SB_STORE_OK) {
        sb_api_unavailable(req);
    } else {
        sb_http_add_header(req, "X-Content-Type-Options", "nosniff");
        sb_http_add_header(req, "Cache-Control", "private, no-store");
        if (g->html) {
            sb_http_add_header(req, "Content-Security-Policy",
                               "sandbox; default-src 'none'; "
                               "style-src 'unsafe-inline'; img-src data:");
        } else {
            char *cd = disposition(g->filename ? g->filename : "attachment");
            sb_http_add_header(req, "Content-Disposition", cd);
            sb_http_add_header(req, "Content-Security-Policy", "sandbox");
            free(cd);
        }
        sb_http_respond(req, 200, g->ctype, data, len);
    }
    am_get_free(g);
}

/* A content type we are willing to name: type/subtype tokens only. */
static int ctype_ok(const char *t)
{
    const char *slash = t ? strchr(t, '/') : NULL;

    if (!slash || slash == t || !slash[1] || strlen(t) > 100)
        return 0;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              strchr("/.+-_", *p)))
            return 0;
    return 1;
}

static void on_contact(enum sb_store_status st, json_t *res, const char *err,
                       void *arg)
{
    struct am_get *g = arg;
    json_t *e = json_array_get(json_object_get(res, "entries"), 0);
    json_t *f = json_object_get(e, "fields");
    const char *sha = NULL;
    int r;

    if (st != SB_STORE_OK) {
        sb_api_store_fail(g->req, st, err, "no such contact");
        json_decref(res);
        am_get_free(g);
        return;
    }
    if (g->html) {
        sha = json_string_value(
            json_object_get(json_object_get(f, "html"), "sha256"));
        g->ctype = sb_strdup("text/html; charset=utf-8");
    } else {
        json_t *a = json_array_get(json_object_get(f, "attachments"),
                                   (size_t)g->n);
        const char *t = json_string_value(json_object_get(a, "content_type"));
        const char *fn = json_string_value(json_object_get(a, "filename"));
        sha = json_string_value(json_object_get(a, "sha256"));
        g->ctype = sb_strdup(ctype_ok(t) && strncmp(t, "text/html", 9) != 0
                                 ? t
                                 : "application/octet-stream");
        g->filename = sb_strdup(fn && *fn ? fn : "attachment");
    }
    if (!e || !sha) {
        sb_http_respond_error(g->req, 404, "no such content", NULL);
        json_decref(res);
        am_get_free(g);
        return;
    }
    r = sb_mailin_blob(sha, on_blob, g);
    json_decref(res);
    if (r == -2) {
        sb_http_respond_error(g->req, 404, "no such content", NULL);
        am_get_free(g);
    } else if (r < 0) {
        sb_api_unavailable(g->req);
        am_get_free(g);
    }
}

static void get_content(struct sb_http_req *req, int html, long long n)
{
    struct am_get *g = sb_calloc(1, sizeof(*g));

    g->req = req;
    g->html = html;
    g->n = n;
    if (sb_contact_get(req->params[0], on_contact, g) < 0) {
        am_get_free(g);
        sb_api_unavailable(req);
    }
}

void sb_api_contact_html(struct sb_http_req *req)
{
    get_content(req, 1, 0);
}

void sb_api_contact_attachment(struct sb_http_req *req)
{
    long long n;

    if (sb_parse_ll(req->params[1], &n) < 0 || n < 0 || n > 10000) {
        sb_http_respond_error(req, 404, "no such attachment", NULL);
        return;
    }
    get_content(req, 0, n);
}
