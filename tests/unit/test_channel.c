/* test_channel.c - the channel driver contract suite, and the file driver.
 *
 * The contract of channel.h is checked against every driver that can run on
 * this machine, listed in drv_cases[] as {ops, config}: today the file
 * driver and a controllable fake driver defined below (it completes OK,
 * TEMPFAIL or PERMFAIL from a uv timer as the recipient says, or never until
 * stop). Each contract test runs once per driver: send() returns 0 and never
 * completes before it returns; exactly one completion per accepted send;
 * a refused send gets none; stop() cancels every unfinished send exactly once
 * with CANCELLED and nothing completes after it; the message may be freed
 * inside its completion (every test does, poisoning it first, so ASan or a
 * wrong file shows a driver that keeps it). After each test the loop must
 * drain to nothing and uv_loop_close() must succeed.
 *
 * Then the file driver's own behaviour: file name and headers, a Cyrillic
 * body byte for byte, no `.tmp-` leftovers, header injection refused,
 * fail_to, mkdir -p with mode 0750, a 100-send burst.
 *
 * Configs go through the real loader (sb_config_parse) with the driver's own
 * table. Files live in a mkdtemp directory, removed after each test. Every
 * loop run is bounded by a guard timer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "channel.h"
#include "config.h"
#include "log.h"
#include "util.h"

extern const struct sb_channel_ops sb_chan_file;

/* ---- a controllable fake driver ---------------------------------------- */

struct fake_conf {
    long long delay_ms;
    long long max_pending;
};

static const struct sb_conf_key fake_keys[] = {
    {"delay", SB_CONF_DURATION, offsetof(struct fake_conf, delay_ms), "5ms",
     0, 60000, NULL, 0, "time before a send completes"},
    {"max_pending", SB_CONF_INT, offsetof(struct fake_conf, max_pending),
     "1000", 1, 1000000, NULL, 0, "sends in flight before send() refuses"},
    {NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const struct sb_conf_section fake_section = {
    "fake", 0, sizeof(struct fake_conf), fake_keys, "test driver", NULL,
};

struct fake_op;

struct fake_chan {
    uv_loop_t *loop;
    uint64_t delay;
    size_t max_pending, pending;
    unsigned seq;
    struct fake_op *ops;
};

struct fake_op {
    uv_timer_t timer; /* the op is freed in its close callback */
    struct fake_op *prev, *next;
    struct fake_chan *fc;
    struct sb_outmsg *msg;
    sb_send_done *done;
    enum sb_send_status status;
};

static int fake_start(struct sb_channel *ch, uv_loop_t *loop,
                      const void *conf)
{
    const struct fake_conf *c = conf;
    struct fake_chan *fc = sb_calloc(1, sizeof(*fc));

    fc->loop = loop;
    fc->delay = (uint64_t)c->delay_ms;
    fc->max_pending = (size_t)c->max_pending;
    ch->priv = fc;
    return 0;
}

static void fake_unlink(struct fake_chan *fc, struct fake_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        fc->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    fc->pending--;
}

static void fake_on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void fake_on_timer(uv_timer_t *t)
{
    struct fake_op *op = t->data;
    struct sb_send_result r = {op->status, "fake", NULL, -1, 0};

    fake_unlink(op->fc, op);
    uv_close((uv_handle_t *)t, fake_on_closed);
    op->done(op->msg, &r);
}

static int fake_send(struct sb_channel *ch, struct sb_outmsg *msg,
                     sb_send_done *done)
{
    struct fake_chan *fc = ch->priv;
    struct fake_op *op;
    enum sb_send_status st;
    int hang = 0;

    if (!fc || fc->pending >= fc->max_pending)
        return -1;
    if (strcmp(msg->to, "ok") == 0)
        st = SB_SEND_OK;
    else if (strcmp(msg->to, "tempfail") == 0)
        st = SB_SEND_TEMPFAIL;
    else if (strcmp(msg->to, "permfail") == 0)
        st = SB_SEND_PERMFAIL;
    else if (strcmp(msg->to, "hang") == 0)
        st = SB_SEND_OK, hang = 1;
    else
        return -1;
    op = sb_calloc(1, sizeof(*op));
    op->fc = fc;
    op->msg = msg;
    op->done = done;
    op->status = st;
    uv_timer_init(fc->loop, &op->timer);
    op->timer.data = op;
    if (!hang)
        uv_timer_start(&op->timer, fake_on_timer, fc->delay + fc->seq++ % 3,
                       0);
    op->next = fc->ops;
    if (fc->ops)
        fc->ops->prev = op;
    fc->ops = op;
    fc->pending++;
    return 0;
}

static void fake_stop(struct sb_channel *ch)
{
    struct fake_chan *fc = ch->priv;
    struct sb_send_result r = {SB_SEND_CANCELLED, "stopped", NULL, -1, 0};
    struct fake_op *op;

    if (!fc)
        return;
    ch->priv = NULL;
    while ((op = fc->ops) != NULL) {
        fake_unlink(fc, op);
        uv_timer_stop(&op->timer);
        uv_close((uv_handle_t *)&op->timer, fake_on_closed);
        op->done(op->msg, &r);
    }
    free(fc);
}

static const struct sb_channel_ops fake_ops = {
    .name = "fake",
    .conf = &fake_section,
    .start = fake_start,
    .send = fake_send,
    .stop = fake_stop,
};

/* ---- the driver table ---------------------------------------------------- */

struct outcome {
    const char *to;
    enum sb_send_status status;
    const char *reason; /* expected reason, or NULL for any */
};

struct drv_case {
    const struct sb_channel_ops *ops;
    /* printf format: %s the temp dir to use, %d max_pending */
    const char *conf_fmt;
    const char *to_ok;   /* a recipient that completes OK */
    const char *to_hang; /* one that never completes before stop, or NULL */
    int writes_files;    /* check the directory for .tmp- leftovers */
    struct outcome mixed[4];
};

static const struct drv_case drv_file = {
    &sb_chan_file,
    "[file]\ndir = %s\nmax_pending = %d\nfail_to = bounce@example.com\n",
    "ivan@example.com",
    NULL,
    1,
    {{"ivan@example.com", SB_SEND_OK, "written"},
     {"bounce@example.com", SB_SEND_PERMFAIL, "rejected by fail_to"},
     {"evil@example.com\r\nBcc: x@example.com", SB_SEND_PERMFAIL,
      "header injection"},
     {"", SB_SEND_PERMFAIL, "no recipient"}},
};

static const struct drv_case drv_fake = {
    &fake_ops,
    "[fake]\n# %s\nmax_pending = %d\ndelay = 2ms\n",
    "ok",
    "hang",
    0,
    {{"ok", SB_SEND_OK, NULL},
     {"tempfail", SB_SEND_TEMPFAIL, NULL},
     {"permfail", SB_SEND_PERMFAIL, NULL},
     {"ok", SB_SEND_OK, NULL}},
};

/* ---- harness ------------------------------------------------------------- */

#define MAX_RECS 256

struct harness;

struct rec {
    struct harness *h;
    int accepted;
    int count;      /* completions seen */
    int early;      /* completions while send() had not returned */
    int late;       /* completions after stop() returned */
    enum sb_send_status status;
    char reason[64];
    char provider_id[256];
};

struct harness {
    const struct drv_case *dc;
    uv_loop_t loop;
    uv_timer_t guard;
    int timed_out;
    char tmp[64];
    char outdir[128];
    struct sb_config *conf;
    struct sb_channel ch;
    int started, stopped;
    int in_send, stop_returned;
    int stop_in_done; /* stop the channel from the first completion */
    struct rec recs[MAX_RECS];
};

static void free_str(const char *s)
{
    if (s) {
        memset((char *)s, 'X', strlen(s));
        free((char *)s);
    }
}

static struct sb_outmsg *mk_msg(struct rec *r, const char *to,
                                const char *id)
{
    struct sb_outmsg *m = sb_calloc(1, sizeof(*m));

    m->to = sb_strdup(to);
    m->id = sb_strdup(id);
    m->text = sb_strdup("hello\n");
    m->user = r;
    return m;
}

static void free_msg(struct sb_outmsg *m)
{
    free_str(m->id);
    free_str(m->to);
    free_str(m->from);
    free_str(m->subject);
    free_str(m->text);
    free_str(m->html);
    free_str(m->in_reply_to);
    free_str(m->references);
    free_str(m->conversation);
    free_str(m->customer);
    memset(m, 0xa5, sizeof(*m));
    free(m);
}

static void h_stop(struct harness *h)
{
    if (h->stopped)
        return;
    h->stopped = 1;
    h->dc->ops->stop(&h->ch);
    h->stop_returned = 1;
}

static void on_done(struct sb_outmsg *m, const struct sb_send_result *res)
{
    struct rec *r = m->user;
    struct harness *h = r->h;

    r->count++;
    if (h->in_send)
        r->early++;
    if (h->stop_returned)
        r->late++;
    r->status = res->status;
    snprintf(r->reason, sizeof(r->reason), "%s",
             res->reason ? res->reason : "");
    snprintf(r->provider_id, sizeof(r->provider_id), "%s",
             res->provider_id ? res->provider_id : "");
    free_msg(m); /* the caller's right after its completion (rule 2) */
    /* Let run_until() look at its condition now rather than block in the
     * poll phase until the next event. */
    uv_stop(&h->loop);
    if (h->stop_in_done)
        h_stop(h);
}

static int h_send(struct harness *h, int i, struct sb_outmsg *m)
{
    struct rec *r = &h->recs[i];
    int rc;

    assert_true(i >= 0 && i < MAX_RECS);
    r->h = h;
    m->user = r;
    h->in_send = 1;
    rc = h->dc->ops->send(&h->ch, m, on_done);
    h->in_send = 0;
    r->accepted = rc == 0;
    if (rc < 0)
        free_msg(m); /* refused: still ours */
    return rc;
}

static int h_send_to(struct harness *h, int i, const char *to)
{
    char id[32];

    snprintf(id, sizeof(id), "att-%d", i);
    return h_send(h, i, mk_msg(&h->recs[i], to, id));
}

static void on_guard(uv_timer_t *t)
{
    struct harness *h = t->data;
    h->timed_out = 1;
}

/* Run the loop until cond holds or ms pass. Returns cond's last value. */
static int run_until(struct harness *h, int (*cond)(struct harness *, int),
                     int arg, unsigned ms)
{
    h->timed_out = 0;
    uv_timer_start(&h->guard, on_guard, ms, 0);
    while (!cond(h, arg) && !h->timed_out)
        uv_run(&h->loop, UV_RUN_ONCE);
    uv_timer_stop(&h->guard);
    return cond(h, arg);
}

static int cond_never(struct harness *h, int n)
{
    return 0;
}

/* The first n records have all completed. */
static int cond_done(struct harness *h, int n)
{
    for (int i = 0; i < n; i++)
        if (h->recs[i].accepted && h->recs[i].count == 0)
            return 0;
    return 1;
}

static int cond_count_at_least(struct harness *h, int n)
{
    int c = 0;

    for (int i = 0; i < MAX_RECS; i++)
        c += h->recs[i].count;
    return c >= n;
}

struct walk {
    uv_handle_t *guard;
    int n;
};

static void walk_count(uv_handle_t *hd, void *arg)
{
    struct walk *w = arg;
    if (hd != w->guard)
        w->n++;
}

/* Nothing left on the loop but the guard timer. */
static int cond_idle(struct harness *h, int unused)
{
    struct walk w = {(uv_handle_t *)&h->guard, 0};

    uv_walk(&h->loop, walk_count, &w);
    return w.n == 0 && h->loop.active_reqs.count == 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct harness *h = sb_calloc(1, sizeof(*h));

    h->dc = *state;
    snprintf(h->tmp, sizeof(h->tmp), "/tmp/sbchanXXXXXX");
    if (!mkdtemp(h->tmp))
        return -1;
    snprintf(h->outdir, sizeof(h->outdir), "%s/outbox", h->tmp);
    if (uv_loop_init(&h->loop) != 0)
        return -1;
    uv_timer_init(&h->loop, &h->guard);
    h->guard.data = h;
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    struct harness *h = *state;
    int idle, rc;

    if (h->started)
        h_stop(h);
    idle = run_until(h, cond_idle, 0, 3000);
    uv_close((uv_handle_t *)&h->guard, NULL);
    uv_run(&h->loop, UV_RUN_NOWAIT);
    rc = uv_loop_close(&h->loop);
    sb_config_free(h->conf);
    nftw(h->tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(h);
    /* A driver that leaves a handle or request behind fails here. */
    assert_int_equal(idle, 1);
    assert_int_equal(rc, 0);
    return 0;
}

/* Parse the case's config (plus extra lines) with the driver's own table
 * and start the driver. Returns start()'s result. */
static int h_start_dir(struct harness *h, const char *dir, int max_pending,
                       const char *extra)
{
    const struct sb_conf_section *secs[] = {h->dc->ops->conf, NULL};
    char text[1024], err[256];
    int n;

    n = snprintf(text, sizeof(text), h->dc->conf_fmt, dir, max_pending);
    assert_true(n > 0 && (size_t)n < sizeof(text));
    snprintf(text + n, sizeof(text) - (size_t)n, "%s", extra ? extra : "");
    sb_config_free(h->conf);
    h->conf = sb_config_parse(text, strlen(text), "test.conf", secs, err,
                              sizeof(err));
    if (!h->conf)
        fail_msg("config: %s", err);
    h->ch.ops = h->dc->ops;
    h->ch.name = "test";
    h->ch.priv = NULL;
    n = h->dc->ops->start(&h->ch, &h->loop,
                          sb_config_get(h->conf, h->dc->ops->conf->name));
    h->started = n == 0;
    return n;
}

static void h_start(struct harness *h, int max_pending)
{
    assert_int_equal(h_start_dir(h, h->outdir, max_pending, NULL), 0);
}

/* Entries of dir: how many, and how many start with ".tmp-". */
static int list_dir(const char *dir, char names[][256], int max, int *tmps)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    *tmps = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (strncmp(e->d_name, ".tmp-", 5) == 0)
            (*tmps)++;
        if (names && n < max)
            snprintf(names[n], 256, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct sb_buf b;
    char chunk[4096];
    size_t n;

    if (!f)
        return NULL;
    sb_buf_init(&b, 1 << 20);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (sb_buf_append(&b, chunk, n) < 0)
            break;
    fclose(f);
    return sb_buf_steal(&b, len);
}

static void assert_no_tmp(struct harness *h)
{
    int tmps;

    if (!h->dc->writes_files)
        return;
    assert_true(list_dir(h->outdir, NULL, 0, &tmps) >= 0);
    assert_int_equal(tmps, 0);
}

/* ---- contract tests (run for every driver) ------------------------------ */

static void check_exactly_once(struct harness *h, int n)
{
    for (int i = 0; i < n; i++) {
        struct rec *r = &h->recs[i];
        if (!r->accepted) {
            assert_int_equal(r->count, 0);
            continue;
        }
        assert_int_equal(r->count, 1);
        assert_int_equal(r->early, 0);
        assert_int_equal(r->late, 0);
    }
}

static void contract_complete_once(void **state)
{
    struct harness *h = *state;
    const int n = 20;

    h_start(h, 100);
    for (int i = 0; i < n; i++)
        assert_int_equal(h_send_to(h, i, h->dc->to_ok), 0);
    /* Nothing may have completed inside send(). */
    for (int i = 0; i < n; i++)
        assert_int_equal(h->recs[i].count, 0);
    assert_true(run_until(h, cond_done, n, 5000));
    run_until(h, cond_never, 0, 50); /* no second completion */
    check_exactly_once(h, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(h->recs[i].status, SB_SEND_OK);
    h_stop(h); /* nothing left to cancel */
    run_until(h, cond_never, 0, 20);
    check_exactly_once(h, n);
    assert_no_tmp(h);
}

static void contract_mixed_outcomes(void **state)
{
    struct harness *h = *state;
    const int rounds = 5, k = 4;

    h_start(h, 100);
    for (int i = 0; i < rounds * k; i++)
        assert_int_equal(h_send_to(h, i, h->dc->mixed[i % k].to), 0);
    assert_true(run_until(h, cond_done, rounds * k, 5000));
    run_until(h, cond_never, 0, 30);
    check_exactly_once(h, rounds * k);
    for (int i = 0; i < rounds * k; i++) {
        const struct outcome *o = &h->dc->mixed[i % k];
        assert_int_equal(h->recs[i].status, o->status);
        if (o->reason)
            assert_string_equal(h->recs[i].reason, o->reason);
        /* A reason is always given. */
        assert_true(h->recs[i].reason[0] != '\0');
    }
}

/* max_pending: beyond it send() refuses, and a refused send never
 * completes; once sends complete there is room again. */
static void contract_refused_no_completion(void **state)
{
    struct harness *h = *state;

    h_start(h, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(h_send_to(h, i, h->dc->to_ok), 0);
    assert_int_equal(h_send_to(h, 3, h->dc->to_ok), -1);
    assert_int_equal(h_send_to(h, 4, h->dc->mixed[1].to), -1);
    assert_true(run_until(h, cond_done, 3, 5000));
    run_until(h, cond_never, 0, 30);
    check_exactly_once(h, 5);
    assert_int_equal(h->recs[3].count, 0);
    assert_int_equal(h->recs[4].count, 0);
    assert_int_equal(h_send_to(h, 5, h->dc->to_ok), 0);
    assert_true(run_until(h, cond_done, 6, 5000));
    check_exactly_once(h, 6);
}

/* stop() right after the sends, before the loop ever ran. */
static void contract_stop_cancels(void **state)
{
    struct harness *h = *state;
    const int n = 12;

    h_start(h, 100);
    for (int i = 0; i < n; i++) {
        const char *to = h->dc->mixed[i % 4].to;
        if (h->dc->to_hang && i % 3 == 0)
            to = h->dc->to_hang;
        assert_int_equal(h_send_to(h, i, to), 0);
    }
    h_stop(h);
    for (int i = 0; i < n; i++) {
        assert_int_equal(h->recs[i].count, 1);
        assert_int_equal(h->recs[i].status, SB_SEND_CANCELLED);
    }
    /* Let in-flight work finish: no completion may follow. */
    assert_true(run_until(h, cond_idle, 0, 3000));
    check_exactly_once(h, n);
    assert_no_tmp(h);
    /* A stopped channel refuses. */
    assert_int_equal(h_send_to(h, n, h->dc->to_ok), -1);
}

/* stop() while sends are half done: each ends exactly once, either with its
 * real outcome before stop or CANCELLED by it. */
static void contract_stop_mid_flight(void **state)
{
    struct harness *h = *state;
    const int n = 60;
    int ok = 0, cancelled = 0, files, tmps;

    h_start(h, 1000);
    for (int i = 0; i < n; i++) {
        const char *to = h->dc->to_ok;
        if (h->dc->to_hang && i % 10 == 0)
            to = h->dc->to_hang;
        assert_int_equal(h_send_to(h, i, to), 0);
    }
    run_until(h, cond_count_at_least, 10, 5000);
    h_stop(h);
    assert_true(run_until(h, cond_idle, 0, 3000));
    check_exactly_once(h, n);
    for (int i = 0; i < n; i++) {
        if (h->recs[i].status == SB_SEND_OK)
            ok++;
        else if (h->recs[i].status == SB_SEND_CANCELLED)
            cancelled++;
        if (h->dc->to_hang && i % 10 == 0)
            assert_int_equal(h->recs[i].status, SB_SEND_CANCELLED);
    }
    assert_int_equal(ok + cancelled, n);
    assert_true(ok >= 10 || cancelled > 0);
    if (h->dc->writes_files) {
        /* Every OK is a file; a cancelled send whose rename was already
         * submitted may land too (documented in file.c). */
        files = list_dir(h->outdir, NULL, 0, &tmps);
        assert_int_equal(tmps, 0);
        assert_true(files >= ok && files <= n);
    }
}

/* stop() from inside a completion: the rest are cancelled, once. */
static void contract_stop_in_callback(void **state)
{
    struct harness *h = *state;
    const int n = 10;
    int cancelled = 0;

    h_start(h, 100);
    h->stop_in_done = 1;
    for (int i = 0; i < n; i++)
        assert_int_equal(h_send_to(h, i, h->dc->to_ok), 0);
    assert_true(run_until(h, cond_done, n, 5000));
    assert_true(h->stopped);
    assert_true(run_until(h, cond_idle, 0, 3000));
    check_exactly_once(h, n);
    for (int i = 0; i < n; i++)
        cancelled += h->recs[i].status == SB_SEND_CANCELLED;
    assert_true(cancelled >= 1 && cancelled <= n - 1);
    assert_no_tmp(h);
}

/* ---- file driver --------------------------------------------------------- */

static const char cyr_text[] =
    "Здравствуйте, Иван Петрович!\n"
    "Ваш заказ №42 отгружен.\n"
    "Ёё — «кавычки», 😀 и tab\tинside.\n";
static const char cyr_html[] =
    "<p>Заказ <b>№42</b> отгружен</p>\n";

/* Check "<digits>-<suffix>" and return the number, or -1. */
static long long name_ts(const char *name, const char *suffix)
{
    long long ts = 0;
    const char *p = name;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++)
        ts = ts * 10 + (*p - '0');
    if (*p != '-' || strcmp(p + 1, suffix) != 0)
        return -1;
    return ts;
}

static void check_date_line(const char *line, size_t len)
{
    /* Date: YYYY-MM-DDTHH:MM:SS.mmmZ */
    static const char pat[] = "Date: dddd-dd-ddTdd:dd:dd.dddZ";

    assert_int_equal(len, strlen(pat));
    for (size_t i = 0; i < len; i++) {
        if (pat[i] == 'd')
            assert_true(line[i] >= '0' && line[i] <= '9');
        else
            assert_int_equal(line[i], pat[i]);
    }
}

static void file_content(void **state)
{
    struct harness *h = *state;
    struct sb_outmsg *m = sb_calloc(1, sizeof(*m));
    char dir[192], names[4][256], path[512];
    const char *expect_head =
        "To: ivan@example.com\n"
        "From: Поддержка <support@example.com>\n"
        "Subject: Заказ №42 отгружен\n"
        "Conversation: conv-7\n"
        "Customer: cust-9\n"
        "In-Reply-To: <a1@example.com>\n"
        "References: <a0@example.com> <a1@example.com>\n"
        "Id: att/1 ü:2\n";
    int64_t before, after;
    long long ts;
    char *data, *p, *date_end;
    size_t len, hl;
    int tmps;
    struct stat st;

    /* mkdir -p with mode 0750 */
    snprintf(dir, sizeof(dir), "%s/deep/er/outbox", h->tmp);
    assert_int_equal(h_start_dir(h, dir, 10, NULL), 0);
    assert_int_equal(stat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0750);
    snprintf(path, sizeof(path), "%s/deep", h->tmp);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0750);

    m->id = sb_strdup("att/1 ü:2");
    m->to = sb_strdup("ivan@example.com");
    m->from = sb_strdup("Поддержка <support@example.com>");
    m->subject = sb_strdup("Заказ №42 отгружен");
    m->text = sb_strdup(cyr_text);
    m->html = sb_strdup(cyr_html);
    m->in_reply_to = sb_strdup("<a1@example.com>");
    m->references = sb_strdup("<a0@example.com> <a1@example.com>");
    m->conversation = sb_strdup("conv-7");
    m->customer = sb_strdup("cust-9");
    before = sb_now_ms();
    assert_int_equal(h_send(h, 0, m), 0);
    after = sb_now_ms();
    assert_int_equal(h->recs[0].count, 0);
    assert_true(run_until(h, cond_done, 1, 5000));
    check_exactly_once(h, 1);
    assert_int_equal(h->recs[0].status, SB_SEND_OK);

    assert_int_equal(list_dir(dir, names, 4, &tmps), 1);
    assert_int_equal(tmps, 0);
    ts = name_ts(names[0], "att_1____2.txt");
    assert_true(ts >= before && ts <= after);
    assert_string_equal(h->recs[0].provider_id, names[0]);

    snprintf(path, sizeof(path), "%s/%s", dir, names[0]);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    data = read_all(path, &len);
    assert_non_null(data);
    hl = strlen(expect_head);
    assert_true(len > hl);
    assert_memory_equal(data, expect_head, hl);
    p = data + hl;
    date_end = memchr(p, '\n', len - hl);
    assert_non_null(date_end);
    check_date_line(p, (size_t)(date_end - p));
    p = date_end + 1;
    assert_int_equal(*p, '\n'); /* blank line ends the headers */
    p++;
    /* The body, byte for byte, then the separator and the HTML. */
    assert_true((size_t)(data + len - p) >= strlen(cyr_text));
    assert_memory_equal(p, cyr_text, strlen(cyr_text));
    p += strlen(cyr_text);
    assert_true(strncmp(p, "-----8<----- text/html -----8<-----\n", 36) == 0);
    p += 36;
    assert_int_equal((size_t)(data + len - p), strlen(cyr_html));
    assert_memory_equal(p, cyr_html, strlen(cyr_html));
    free(data);
}

/* Absent fields are left out; no HTML means no separator. */
static void file_minimal(void **state)
{
    struct harness *h = *state;
    struct sb_outmsg *m = sb_calloc(1, sizeof(*m));
    char names[2][256], path[512];
    const char *head = "To: +79161234567\nId: sms-1\nDate: ";
    char *data, *p;
    size_t len;
    int tmps;

    h_start(h, 10);
    m->to = sb_strdup("+79161234567");
    m->id = sb_strdup("sms-1");
    m->text = sb_strdup("Код: 1234");
    assert_int_equal(h_send(h, 0, m), 0);
    assert_true(run_until(h, cond_done, 1, 5000));
    assert_int_equal(h->recs[0].status, SB_SEND_OK);
    assert_int_equal(list_dir(h->outdir, names, 2, &tmps), 1);
    assert_true(name_ts(names[0], "sms-1.txt") > 0);
    snprintf(path, sizeof(path), "%s/%s", h->outdir, names[0]);
    data = read_all(path, &len);
    assert_non_null(data);
    assert_true(len > strlen(head));
    assert_memory_equal(data, head, strlen(head));
    p = strstr(data, "\n\n");
    assert_non_null(p);
    assert_string_equal(p + 2, "Код: 1234");
    assert_int_equal(strlen(data), len);
    free(data);
}

/* CR or LF in any header value: PERMFAIL "header injection", no file,
 * and the completion still comes after send() returns. */
static void file_header_injection(void **state)
{
    struct harness *h = *state;
    static const char *const bad[] = {"a\r\nBcc: x@example.com", "a\nb",
                                      "a\rb"};
    int i = 0, files, tmps;

    h_start(h, 100);
    for (int f = 0; f < 5; f++) {
        for (size_t b = 0; b < SB_ARRAY_LEN(bad); b++, i++) {
            struct sb_outmsg *m = mk_msg(&h->recs[i], "ivan@example.com",
                                         "inj");
            const char **field[] = {&m->to, &m->from, &m->subject,
                                    &m->in_reply_to, &m->references};
            if (f == 0)
                free_str(m->to);
            *field[f] = sb_strdup(bad[b]);
            assert_int_equal(h_send(h, i, m), 0);
        }
    }
    assert_true(run_until(h, cond_done, i, 5000));
    check_exactly_once(h, i);
    for (int j = 0; j < i; j++) {
        assert_int_equal(h->recs[j].status, SB_SEND_PERMFAIL);
        assert_string_equal(h->recs[j].reason, "header injection");
    }
    files = list_dir(h->outdir, NULL, 0, &tmps);
    assert_int_equal(files, 0);
}

static void file_fail_to(void **state)
{
    struct harness *h = *state;
    int files, tmps;

    h_start(h, 100);
    assert_int_equal(h_send_to(h, 0, "bounce@example.com"), 0);
    assert_int_equal(h_send_to(h, 1, "bounce@example.com "), 0);
    assert_int_equal(h_send_to(h, 2, "Bounce@example.com"), 0);
    assert_int_equal(h_send_to(h, 3, "ivan@example.com"), 0);
    assert_true(run_until(h, cond_done, 4, 5000));
    check_exactly_once(h, 4);
    assert_int_equal(h->recs[0].status, SB_SEND_PERMFAIL);
    assert_string_equal(h->recs[0].reason, "rejected by fail_to");
    for (int i = 1; i < 4; i++)
        assert_int_equal(h->recs[i].status, SB_SEND_OK);
    files = list_dir(h->outdir, NULL, 0, &tmps);
    assert_int_equal(files, 3);
    assert_int_equal(tmps, 0);
}

/* Without fail_to in the config the hook is off. */
static void file_fail_to_off(void **state)
{
    struct harness *h = *state;
    const struct sb_conf_section *secs[] = {sb_chan_file.conf, NULL};
    char text[256], err[256];

    snprintf(text, sizeof(text), "[file]\ndir = %s\n", h->outdir);
    h->conf = sb_config_parse(text, strlen(text), "t.conf", secs, err,
                              sizeof(err));
    assert_non_null(h->conf);
    h->ch.ops = &sb_chan_file;
    assert_int_equal(sb_chan_file.start(&h->ch, &h->loop,
                                        sb_config_get(h->conf, "file")),
                     0);
    h->started = 1;
    assert_int_equal(h_send_to(h, 0, "bounce@example.com"), 0);
    assert_int_equal(h_send_to(h, 1, ""), 0);
    assert_true(run_until(h, cond_done, 2, 5000));
    assert_int_equal(h->recs[0].status, SB_SEND_OK);
    assert_int_equal(h->recs[1].status, SB_SEND_PERMFAIL);
}

static void file_burst(void **state)
{
    struct harness *h = *state;
    static char names[128][256];
    const int n = 100;
    int files, tmps, seen[100] = {0};

    h_start(h, 1000);
    for (int i = 0; i < n; i++)
        assert_int_equal(h_send_to(h, i, "ivan@example.com"), 0);
    assert_true(run_until(h, cond_done, n, 10000));
    check_exactly_once(h, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(h->recs[i].status, SB_SEND_OK);
    files = list_dir(h->outdir, names, 128, &tmps);
    assert_int_equal(files, n);
    assert_int_equal(tmps, 0);
    for (int i = 0; i < n; i++) {
        const char *dash = strchr(names[i], '-');
        char path[512], *data;
        size_t len;
        int id;

        assert_non_null(dash);
        assert_int_equal(sscanf(dash, "-att-%d.txt", &id), 1);
        assert_true(id >= 0 && id < n);
        seen[id]++;
        snprintf(path, sizeof(path), "%s/%.255s", h->outdir, names[i]);
        data = read_all(path, &len);
        assert_non_null(data);
        assert_non_null(strstr(data, "\nId: att-"));
        assert_true(len > 6 && strcmp(data + len - 7, "\nhello\n") == 0);
        free(data);
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(seen[i], 1);
}

/* A directory that cannot be made: start() fails, cleanly. */
static void file_start_fails(void **state)
{
    struct harness *h = *state;
    const struct sb_conf_section *secs[] = {sb_chan_file.conf, NULL};
    char path[192], err[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/plainfile", h->tmp);
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/plainfile/outbox", h->tmp);
    assert_int_equal(h_start_dir(h, path, 10, NULL), -1);
    assert_null(h->ch.priv);
    snprintf(path, sizeof(path), "%s/plainfile", h->tmp);
    assert_int_equal(h_start_dir(h, path, 10, NULL), -1);
    /* An empty dir is a config error, from the table's check. */
    assert_null(sb_config_parse("[file]\ndir =\n", 13, "t.conf", secs, err,
                                sizeof(err)));
    assert_non_null(strstr(err, "dir"));
    /* And max_pending is bounded. */
    assert_null(sb_config_parse("[file]\nmax_pending = 0\n", 23, "t.conf",
                                secs, err, sizeof(err)));
}

static void driver_table(void **state)
{
    size_t n = 0;

    for (; sb_channel_drivers[n]; n++) {
        const struct sb_channel_ops *o = sb_channel_drivers[n];
        assert_non_null(o->name);
        assert_non_null(o->conf);
        assert_non_null(o->start);
        assert_non_null(o->send);
        assert_non_null(o->stop);
        assert_ptr_equal(sb_channel_find_driver(o->name), o);
    }
    assert_true(n >= 1);
    assert_ptr_equal(sb_channel_find_driver("file"), &sb_chan_file);
    assert_string_equal(sb_chan_file.name, "file");
    assert_string_equal(sb_chan_file.conf->name, "file");
    assert_null(sb_channel_find_driver("nope"));
    assert_null(sb_channel_find_driver(""));
    assert_null(sb_channel_find_driver(NULL));
}

#define CONTRACT(label, f, dc)                                               \
    {label ": " #f, f, setup, teardown, (void *)(dc)}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(driver_table),
        CONTRACT("fake", contract_complete_once, &drv_fake),
        CONTRACT("fake", contract_mixed_outcomes, &drv_fake),
        CONTRACT("fake", contract_refused_no_completion, &drv_fake),
        CONTRACT("fake", contract_stop_cancels, &drv_fake),
        CONTRACT("fake", contract_stop_mid_flight, &drv_fake),
        CONTRACT("fake", contract_stop_in_callback, &drv_fake),
        CONTRACT("file", contract_complete_once, &drv_file),
        CONTRACT("file", contract_mixed_outcomes, &drv_file),
        CONTRACT("file", contract_refused_no_completion, &drv_file),
        CONTRACT("file", contract_stop_cancels, &drv_file),
        CONTRACT("file", contract_stop_mid_flight, &drv_file),
        CONTRACT("file", contract_stop_in_callback, &drv_file),
        CONTRACT("file", file_content, &drv_file),
        CONTRACT("file", file_minimal, &drv_file),
        CONTRACT("file", file_header_injection, &drv_file),
        CONTRACT("file", file_fail_to, &drv_file),
        CONTRACT("file", file_fail_to_off, &drv_file),
        CONTRACT("file", file_burst, &drv_file),
        CONTRACT("file", file_start_fails, &drv_file),
    };

    sb_log_level = LOG_WARNING;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
