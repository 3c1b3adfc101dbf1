/* file.c - the development channel driver: one file per message.
 *
 * Like a development mail backend, this driver "delivers" every message by
 * writing it to a directory (`[file] dir`, ./var/outbox by default; the
 * systemd unit would point it at /var/lib/switchboard/outbox). A file is
 * named `<ms timestamp>-<attempt id>.txt`, the id reduced to [A-Za-z0-9._-]
 * (other bytes become '_', at most 128 of them are kept), and holds header
 * lines (To, From, Subject, Conversation, Customer, In-Reply-To, References,
 * Id, Date in RFC 3339 UTC; absent values are left out), a blank line, the
 * text, and, when the message has HTML, a separator line and the HTML.
 *
 * The loop never blocks: every step goes through libuv's asynchronous file
 * API (open `.tmp-NAME` with O_EXCL, write, fsync, close, rename to NAME), so
 * a reader of the directory never sees half a file (a crash mid-write can
 * leave a `.tmp-` file: readers skip dot-files), and the completion always
 * comes from a later loop turn than send() (channel.h rule 1). Sends whose
 * outcome is known at once (a refused header value, the fail_to hook) are
 * queued and completed from a zero-delay timer, for the same reason. Only
 * start() touches the file system synchronously, to create the directory
 * (mkdir -p, mode 0750) once at boot.
 *
 * Outcomes: OK with the file name as provider id; PERMFAIL "header
 * injection" when a header value (to, from, subject, in_reply_to,
 * references, conversation, customer, id) holds CR or LF, "no recipient",
 * "message too large" (over 32 MiB), or "rejected by fail_to" (below);
 * TEMPFAIL "<step>: <error>" when the file system fails (full disk, the
 * directory gone, or a name collision with a file being written). A NUL
 * cannot occur inside a value: every field is a C string, which ends at its
 * first NUL, so what reaches the file is exactly the string up to it.
 *
 * fail_to is a test hook: a recipient equal to it, byte for byte, fails with
 * PERMFAIL "rejected by fail_to", so a developer can watch the fallback and
 * dead-letter paths without a real provider. Leave it empty in production.
 *
 * max_pending bounds the sends in flight; beyond it send() refuses with -1.
 *
 * Cancellation: stop() delivers CANCELLED to every unfinished send before it
 * returns and detaches those still waiting for a file-system request. A
 * detached send never calls back again: when its request comes back it stops
 * at that step, closes and unlinks its temporary file, and frees itself. The
 * one exception is a rename already submitted when stop() ran: that file
 * still appears. CANCELLED means "outcome unknown, try again", which the
 * at-least-once promise allows, so a retry may leave a second file. The
 * driver's state itself is freed in the close callback of its timer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "channel.h"
#include "config.h"
#include "list.h"
#include "log.h"
#include "util.h"

#define FILE_PLACE "chan.file"
#define FILE_ID_MAX 128               /* id bytes kept in a file name */
#define FILE_MAX_BYTES (32u << 20)    /* one message file, all included */
#define FILE_HTML_SEP "-----8<----- text/html -----8<-----\n"

struct file_conf {
    char *dir;
    long long max_pending;
    char *fail_to;
};

static int file_conf_check(void *conf, char *err, size_t errlen)
{
    const struct file_conf *c = conf;

    if (!c->dir || !c->dir[0]) {
        snprintf(err, errlen, "dir must not be empty");
        return -1;
    }
    return 0;
}

static const struct sb_conf_key file_keys[] = {
    {"dir", SB_CONF_STR, offsetof(struct file_conf, dir), "./var/outbox", 0,
     4000, NULL, 0,
     "directory the message files are written to (created, mode 0750)"},
    {"max_pending", SB_CONF_INT, offsetof(struct file_conf, max_pending),
     "1000", 1, 1000000, NULL, 0,
     "sends in flight before send() refuses"},
    {"fail_to", SB_CONF_STR, offsetof(struct file_conf, fail_to), "", 0, 320,
     NULL, 0,
     "test hook: a recipient equal to this fails PERMFAIL (keep empty)"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const struct sb_conf_section file_section = {
    "file",
    0,
    sizeof(struct file_conf),
    file_keys,
    "The development channel: every message becomes a file in dir, named\n"
    "<ms timestamp>-<attempt id>.txt, headers then a blank line then the\n"
    "text. fail_to makes one recipient fail, to exercise fallbacks.",
    file_conf_check,
};

struct file_op;

struct file_chan {
    uv_loop_t *loop;
    uv_timer_t kick;            /* completes the queued sends */
    char *dir;
    char *fail_to;              /* NULL when the hook is off */
    size_t max_pending;
    struct sb_list ops;         /* every accepted, unfinished send; its
                                 * count is the number pending */
    struct file_op *ready_head; /* outcome known, completion queued */
    struct file_op *ready_tail;
    size_t nready;
};

struct file_op {
    struct sb_list_node link;    /* in file_chan.ops */
    struct file_op *next_ready;
    struct file_chan *fc;        /* NULL once stop() detached it */
    uv_loop_t *loop;
    struct sb_outmsg *msg;       /* borrowed until the completion */
    sb_send_done *done;
    int queued;                  /* 1: on the ready queue, no request */
    uv_fs_t req;
    uv_file fd;
    char *name;                  /* final file name, the provider id */
    char *path;
    char *tmp_path;
    char *data;
    size_t len, off;
    int err;                     /* first uv error, 0 if none */
    enum sb_send_status status;
    const char *reason;
    char reason_buf[96];
};

static void file_on_open(uv_fs_t *req);
static void file_on_write(uv_fs_t *req);
static void file_on_fsync(uv_fs_t *req);
static void file_on_close(uv_fs_t *req);
static void file_on_rename(uv_fs_t *req);
static void file_on_unlink(uv_fs_t *req);

/* mkdir -p with mode 0750 for the parts it creates. 0 or -1 (logged). */
static int file_mkdirs(const char *dir)
{
    char *p = sb_strdup(dir);
    size_t n = strlen(p);
    struct stat st;
    int rc = -1;

    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0750) < 0 && errno != EEXIST)
            goto fail;
        *s = '/';
    }
    if (mkdir(p, 0750) < 0 && errno != EEXIST)
        goto fail;
    if (stat(p, &st) < 0)
        goto fail;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        goto fail;
    }
    rc = 0;
fail:
    if (rc < 0)
        SB_ERR(FILE_PLACE, "cannot create outbox dir=%s path=%s err=\"%s\"",
               dir, p, strerror(errno));
    free(p);
    return rc;
}

static void file_on_kick(uv_timer_t *t);
static void file_on_kick_closed(uv_handle_t *h);

static int file_start(struct sb_channel *ch, uv_loop_t *loop,
                      const void *conf)
{
    const struct file_conf *c = conf;
    struct file_chan *fc;

    if (!ch || !loop || !c || !c->dir || !c->dir[0] || c->max_pending < 1)
        return -1;
    if (file_mkdirs(c->dir) < 0)
        return -1;
    if (access(c->dir, W_OK | X_OK) < 0) {
        SB_ERR(FILE_PLACE, "outbox not writable dir=%s err=\"%s\"", c->dir,
               strerror(errno));
        return -1;
    }
    fc = sb_calloc(1, sizeof(*fc));
    fc->loop = loop;
    fc->dir = sb_strdup(c->dir);
    fc->fail_to = c->fail_to && c->fail_to[0] ? sb_strdup(c->fail_to) : NULL;
    fc->max_pending = (size_t)c->max_pending;
    uv_timer_init(loop, &fc->kick);
    fc->kick.data = fc;
    ch->priv = fc;
    SB_INFO(FILE_PLACE, "started dir=%s max_pending=%zu fail_to=%s", fc->dir,
            fc->max_pending, fc->fail_to ? "set" : "off");
    return 0;
}

static void file_op_free(struct file_op *op)
{
    free(op->name);
    free(op->path);
    free(op->tmp_path);
    free(op->data);
    free(op);
}

static void file_op_link(struct file_chan *fc, struct file_op *op)
{
    sb_list_push_front(&fc->ops, &op->link);
}

static void file_op_unlink(struct file_chan *fc, struct file_op *op)
{
    sb_list_remove(&fc->ops, &op->link);
}

/* The one place a completion is delivered (stop() aside). The result's
 * strings live in op, valid for the callback; op is freed after it. */
static void file_op_complete(struct file_op *op)
{
    struct file_chan *fc = op->fc;
    struct sb_send_result r = {op->status, op->reason, NULL, -1, 0};

    if (op->status == SB_SEND_OK)
        r.provider_id = op->name;
    file_op_unlink(fc, op);
    op->fc = NULL;
    op->done(op->msg, &r);
}

/* End of the file-system chain: complete unless stop() detached us. */
static void file_op_finish(struct file_op *op)
{
    if (op->fc)
        file_op_complete(op);
    file_op_free(op);
}

/* Record the first failure of a step; the send ends in TEMPFAIL. */
static void file_op_fail(struct file_op *op, int err, const char *step)
{
    char id[80];

    if (op->err)
        return;
    op->err = err;
    op->status = SB_SEND_TEMPFAIL;
    snprintf(op->reason_buf, sizeof(op->reason_buf), "%s: %s", step,
             uv_strerror(err));
    op->reason = op->reason_buf;
    SB_WARN(FILE_PLACE, "write failed step=%s id=%s file=%s err=\"%s\"", step,
            sb_log_safe(op->msg ? op->msg->id : NULL, id, sizeof(id)),
            op->name ? op->name : "-", uv_strerror(err));
}

/* Submit helpers: a request libuv refuses at once is handled like one that
 * failed, by calling its callback with the error (we are already inside a
 * callback, never inside send()). */
static void file_op_write(struct file_op *op)
{
    uv_buf_t buf = uv_buf_init(op->data + op->off,
                               (unsigned int)(op->len - op->off));
    int rc = uv_fs_write(op->loop, &op->req, op->fd, &buf, 1,
                         (int64_t)op->off, file_on_write);
    if (rc < 0) {
        op->req.result = rc;
        file_on_write(&op->req);
    }
}

static void file_op_fsync(struct file_op *op)
{
    int rc = uv_fs_fsync(op->loop, &op->req, op->fd, file_on_fsync);
    if (rc < 0) {
        op->req.result = rc;
        file_on_fsync(&op->req);
    }
}

static void file_op_close(struct file_op *op)
{
    int rc = uv_fs_close(op->loop, &op->req, op->fd, file_on_close);
    if (rc < 0) {
        op->req.result = rc;
        file_on_close(&op->req);
    }
}

static void file_op_rename(struct file_op *op)
{
    int rc = uv_fs_rename(op->loop, &op->req, op->tmp_path, op->path,
                          file_on_rename);
    if (rc < 0) {
        op->req.result = rc;
        file_on_rename(&op->req);
    }
}

static void file_op_unlink_tmp(struct file_op *op)
{
    int rc = uv_fs_unlink(op->loop, &op->req, op->tmp_path, file_on_unlink);
    if (rc < 0) {
        op->req.result = rc;
        file_on_unlink(&op->req);
    }
}

static void file_on_open(uv_fs_t *req)
{
    struct file_op *op = req->data;
    ssize_t r = req->result;

    uv_fs_req_cleanup(req);
    req->data = op;
    if (r < 0) {
        /* Nothing was created (an EEXIST file is not ours to remove). */
        if (op->fc)
            file_op_fail(op, (int)r, "open");
        file_op_finish(op);
        return;
    }
    op->fd = (uv_file)r;
    if (!op->fc)
        file_op_close(op);
    else
        file_op_write(op);
}

static void file_on_write(uv_fs_t *req)
{
    struct file_op *op = req->data;
    ssize_t r = req->result;

    uv_fs_req_cleanup(req);
    req->data = op;
    if (r <= 0) {
        file_op_fail(op, r < 0 ? (int)r : UV_EIO, "write");
        file_op_close(op);
        return;
    }
    op->off += (size_t)r;
    if (!op->fc)
        file_op_close(op);
    else if (op->off < op->len)
        file_op_write(op);
    else
        file_op_fsync(op);
}

static void file_on_fsync(uv_fs_t *req)
{
    struct file_op *op = req->data;
    ssize_t r = req->result;

    uv_fs_req_cleanup(req);
    req->data = op;
    if (r < 0)
        file_op_fail(op, (int)r, "fsync");
    file_op_close(op);
}

static void file_on_close(uv_fs_t *req)
{
    struct file_op *op = req->data;
    ssize_t r = req->result;

    uv_fs_req_cleanup(req);
    req->data = op;
    op->fd = -1;
    if (r < 0)
        file_op_fail(op, (int)r, "close");
    if (op->err || !op->fc)
        file_op_unlink_tmp(op);
    else
        file_op_rename(op);
}

static void file_on_rename(uv_fs_t *req)
{
    struct file_op *op = req->data;
    ssize_t r = req->result;
    char id[80];

    uv_fs_req_cleanup(req);
    req->data = op;
    if (r < 0) {
        file_op_fail(op, (int)r, "rename");
        file_op_unlink_tmp(op);
        return;
    }
    if (op->fc) {
        op->status = SB_SEND_OK;
        op->reason = "written";
        SB_DEBUG(FILE_PLACE, "written id=%s file=%s bytes=%zu",
                 sb_log_safe(op->msg->id, id, sizeof(id)), op->name, op->len);
    }
    file_op_finish(op);
}

static void file_on_unlink(uv_fs_t *req)
{
    struct file_op *op = req->data;
    ssize_t r = req->result;

    uv_fs_req_cleanup(req);
    req->data = op;
    if (r < 0 && r != UV_ENOENT)
        SB_WARN(FILE_PLACE, "cannot remove temporary file=%s err=\"%s\"",
                op->tmp_path, uv_strerror((int)r));
    file_op_finish(op);
}

/* Complete the queued sends of this turn (those queued by a completion
 * callback wait for the next turn, so a caller that resends from its
 * callback cannot keep us here). stop() may run from a callback: it empties
 * the queue, which ends the loop; fc lives until the timer is closed. */
static void file_on_kick(uv_timer_t *t)
{
    struct file_chan *fc = t->data;
    size_t n = fc->nready;
    struct file_op *op;

    while (n-- > 0 && (op = fc->ready_head) != NULL) {
        fc->ready_head = op->next_ready;
        if (!fc->ready_head)
            fc->ready_tail = NULL;
        fc->nready--;
        file_op_complete(op);
        file_op_free(op);
    }
    if (fc->ready_head && !uv_is_closing((uv_handle_t *)&fc->kick))
        uv_timer_start(&fc->kick, file_on_kick, 0, 0);
}

/* Accept a send whose outcome is already known; it completes next turn. */
static void file_op_queue(struct file_chan *fc, struct file_op *op,
                          enum sb_send_status status, const char *reason)
{
    op->queued = 1;
    op->status = status;
    op->reason = reason;
    op->next_ready = NULL;
    if (fc->ready_tail)
        fc->ready_tail->next_ready = op;
    else
        fc->ready_head = op;
    fc->ready_tail = op;
    fc->nready++;
    file_op_link(fc, op);
    if (!uv_is_active((uv_handle_t *)&fc->kick))
        uv_timer_start(&fc->kick, file_on_kick, 0, 0);
}

static int file_has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

/* NULL when the message can be written, else the PERMFAIL reason. */
static const char *file_check(const struct file_chan *fc,
                              const struct sb_outmsg *m)
{
    if (file_has_crlf(m->to) || file_has_crlf(m->from) ||
        file_has_crlf(m->subject) || file_has_crlf(m->in_reply_to) ||
        file_has_crlf(m->references) || file_has_crlf(m->conversation) ||
        file_has_crlf(m->customer) || file_has_crlf(m->id))
        return "header injection";
    if (!m->to || !m->to[0])
        return "no recipient";
    if (fc->fail_to && strcmp(m->to, fc->fail_to) == 0)
        return "rejected by fail_to";
    return NULL;
}

static void file_rfc3339(int64_t ms, char *out, size_t outlen)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    size_t k;

    gmtime_r(&s, &tm);
    k = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, outlen - k, ".%03dZ", (int)(ms % 1000));
}

static int file_header(struct sb_buf *b, const char *name, const char *v)
{
    return v ? sb_buf_printf(b, "%s: %s\n", name, v) : 0;
}

/* The file's bytes into op->data. 0, or -1 when over FILE_MAX_BYTES. */
static int file_render(struct file_op *op, const struct sb_outmsg *m,
                       int64_t now)
{
    struct sb_buf b;
    char date[48];
    const char *text = m->text ? m->text : "";
    size_t tlen = strlen(text);
    int rc = 0;

    file_rfc3339(now, date, sizeof(date));
    sb_buf_init(&b, FILE_MAX_BYTES);
    rc |= file_header(&b, "To", m->to);
    rc |= file_header(&b, "From", m->from);
    rc |= file_header(&b, "Subject", m->subject);
    rc |= file_header(&b, "Conversation", m->conversation);
    rc |= file_header(&b, "Customer", m->customer);
    rc |= file_header(&b, "In-Reply-To", m->in_reply_to);
    rc |= file_header(&b, "References", m->references);
    rc |= file_header(&b, "Id", m->id);
    rc |= file_header(&b, "Date", date);
    rc |= sb_buf_appends(&b, "\n");
    rc |= sb_buf_append(&b, text, tlen);
    if (m->html) {
        if (tlen > 0 && text[tlen - 1] != '\n')
            rc |= sb_buf_appends(&b, "\n");
        rc |= sb_buf_appends(&b, FILE_HTML_SEP);
        rc |= sb_buf_appends(&b, m->html);
    }
    if (rc) {
        sb_buf_free(&b);
        return -1;
    }
    op->data = sb_buf_steal(&b, &op->len);
    return 0;
}

/* "<ms>-<id reduced to [A-Za-z0-9._-]>.txt" */
static char *file_name(int64_t now, const char *id)
{
    char safe[FILE_ID_MAX + 1];
    size_t n = 0;

    for (; id && id[n] && n < FILE_ID_MAX; n++) {
        char c = id[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        safe[n] = ok ? c : '_';
    }
    safe[n] = '\0';
    return sb_asprintf("%lld-%s.txt", (long long)now, n ? safe : "noid");
}

static int file_send(struct sb_channel *ch, struct sb_outmsg *msg,
                     sb_send_done *done)
{
    struct file_chan *fc = ch ? ch->priv : NULL;
    struct file_op *op;
    const char *why;
    int64_t now;
    int rc;

    if (!fc || !msg || !done || fc->ops.count >= fc->max_pending)
        return -1;
    op = sb_calloc(1, sizeof(*op));
    op->fc = fc;
    op->loop = fc->loop;
    op->msg = msg;
    op->done = done;
    op->fd = -1;
    op->req.data = op;

    why = file_check(fc, msg);
    if (why) {
        file_op_queue(fc, op, SB_SEND_PERMFAIL, why);
        return 0;
    }
    now = sb_now_ms();
    if (file_render(op, msg, now) < 0) {
        file_op_queue(fc, op, SB_SEND_PERMFAIL, "message too large");
        return 0;
    }
    op->name = file_name(now, msg->id);
    op->path = sb_asprintf("%s/%s", fc->dir, op->name);
    op->tmp_path = sb_asprintf("%s/.tmp-%s", fc->dir, op->name);
    rc = uv_fs_open(fc->loop, &op->req, op->tmp_path,
                    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640,
                    file_on_open);
    if (rc < 0) {
        SB_WARN(FILE_PLACE, "cannot submit open err=\"%s\"", uv_strerror(rc));
        uv_fs_req_cleanup(&op->req);
        file_op_free(op);
        return -1;
    }
    file_op_link(fc, op);
    return 0;
}

static void file_on_kick_closed(uv_handle_t *h)
{
    struct file_chan *fc = h->data;

    free(fc->dir);
    free(fc->fail_to);
    free(fc);
}

static void file_stop(struct sb_channel *ch)
{
    struct file_chan *fc = ch ? ch->priv : NULL;
    const struct sb_send_result r = {SB_SEND_CANCELLED, "channel stopped",
                                     NULL, -1, 0};
    struct sb_list_node *node;
    size_t n = 0;

    if (!fc)
        return;
    ch->priv = NULL; /* a send() or stop() from a callback below is refused */
    uv_timer_stop(&fc->kick);
    fc->ready_head = fc->ready_tail = NULL;
    fc->nready = 0;
    while ((node = sb_list_pop_front(&fc->ops)) != NULL) {
        struct file_op *op = sb_container_of(node, struct file_op, link);
        struct sb_outmsg *msg = op->msg;
        sb_send_done *done = op->done;

        op->fc = NULL;
        op->msg = NULL;
        op->done = NULL;
        if (op->queued)
            file_op_free(op); /* no request in flight */
        n++;
        done(msg, &r);
    }
    uv_close((uv_handle_t *)&fc->kick, file_on_kick_closed);
    SB_INFO(FILE_PLACE, "stopped cancelled=%zu", n);
}

const struct sb_channel_ops sb_chan_file = {
    .name = "file",
    .conf = &file_section,
    .start = file_start,
    .send = file_send,
    .stop = file_stop,
    .reload = NULL, /* [file] changes need a restart */
    .flags = 0,     /* no delivery reports */
};
