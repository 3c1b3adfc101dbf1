/* test_smtp.c - unit tests for the MIME builder and the libesmtp client.
 *
 * Builder cases check the text itself (CRLF only, lines within 998,
 * folding, encodings, refusals) and round-trip the hard ones through
 * Python's email parser (/usr/bin/python3) so a real decoder confirms RFC
 * 2047 words and QP/base64 bodies. Sending cases each start
 * tests/integration/smtpsink.py (aiosmtpd; run from the repository root,
 * as tests/run-unit.sh does) on a loopback port the sink picks itself,
 * with the options the case needs, and stop it by PID (the teardown too,
 * when a case fails): one session for several messages, 4xx/5xx/552, a
 * silent server and a dropped connection, STARTTLS required, verified,
 * refused, AUTH PLAIN and LOGIN accepted or refused, dot-stuffing,
 * cancellation on close, refused submissions, and a throughput figure.
 * Every wait is bounded in time and every completion is counted (exactly
 * once).
 *
 * SMTP_TEST_FILTER=pattern runs matching cases only; SMTP_TEST_KEEP=1
 * keeps each case's temp dir (sink logs, stored mail).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "smtp.h"
#include "testutil.h"
#include "util.h"

#define PY "/usr/bin/python3"
#define SINK "tests/integration/smtpsink.py"

/* ---- files and processes ------------------------------------------------ */

static int rm_one(const char *p, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    SB_UNUSED(st);
    SB_UNUSED(flag);
    SB_UNUSED(ftw);
    return remove(p);
}

static void rm_rf(const char *dir)
{
    if (dir[0])
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* A temp dir for one case (sink state, certificates, message files). */
static char tmpdir[64];

/* Sinks still running, stopped by the teardown when a case fails. */
static pid_t live_sinks[8];

static int setup_tmp(void **state)
{
    SB_UNUSED(state);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sb-test-smtp-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    SB_UNUSED(state);
    for (size_t i = 0; i < SB_ARRAY_LEN(live_sinks); i++) {
        t_stop_child(live_sinks[i]);
        live_sinks[i] = 0;
    }
    if (getenv("SMTP_TEST_KEEP")) /* keep sink logs and mail to look at */
        fprintf(stderr, "kept %s\n", tmpdir);
    else
        rm_rf(tmpdir);
    tmpdir[0] = '\0';
    return 0;
}

/* ---- the sink ----------------------------------------------------------- */

struct sink {
    pid_t pid;
    int port;
    char dir[128];
};

static void sink_forget(pid_t pid)
{
    for (size_t i = 0; i < SB_ARRAY_LEN(live_sinks); i++)
        if (live_sinks[i] == pid)
            live_sinks[i] = 0;
}

/* Start smtpsink.py with extra arguments (NULL-terminated) on a port of
 * its choosing; wait (max 15 s) for its ready file. */
static int sink_vstart(struct sink *k, const char *name, va_list ap)
{
    const char *argv[40];
    int argc = 0, i;
    char ready[192], logp[192];

    memset(k, 0, sizeof(*k));
    snprintf(k->dir, sizeof(k->dir), "%s/%s", tmpdir, name);
    argv[argc++] = PY;
    argv[argc++] = SINK;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    argv[argc++] = "--dir";
    argv[argc++] = k->dir;
    while (argc < 38 && (argv[argc] = va_arg(ap, const char *)) != NULL)
        argc++;
    argv[argc] = NULL;
    snprintf(ready, sizeof(ready), "%s/ready", k->dir);
    snprintf(logp, sizeof(logp), "%s/%s.log", tmpdir, name);
    k->pid = fork();
    if (k->pid < 0)
        return -1;
    if (k->pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(PY, (char *const *)argv);
        _exit(127);
    }
    for (i = 0; i < (int)SB_ARRAY_LEN(live_sinks); i++)
        if (!live_sinks[i]) {
            live_sinks[i] = k->pid;
            break;
        }
    for (i = 0; i < 300; i++) {
        char *r = t_slurp(ready, NULL);

        if (r) {
            k->port = atoi(r);
            free(r);
            if (k->port > 0)
                return 0;
        }
        if (waitpid(k->pid, NULL, WNOHANG) == k->pid) {
            sink_forget(k->pid);
            k->pid = 0;
            return -1;
        }
        sleep_ms(50);
    }
    return -1;
}

static void sink_stop(struct sink *k)
{
    sink_forget(k->pid);
    t_stop_child(k->pid);
    k->pid = 0;
}

/* index.jsonl as a JSON array (new reference), [] when absent. */
static json_t *sink_index(const struct sink *k)
{
    char path[192], *data, *line, *save = NULL;
    json_t *arr = json_array();

    snprintf(path, sizeof(path), "%s/index.jsonl", k->dir);
    data = t_slurp(path, NULL);
    if (!data)
        return arr;
    for (line = strtok_r(data, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        json_t *o = json_loads(line, 0, NULL);

        if (o)
            json_array_append_new(arr, o);
    }
    free(data);
    return arr;
}

static size_t sink_count(const struct sink *k)
{
    json_t *a = sink_index(k);
    size_t n = json_array_size(a);

    json_decref(a);
    return n;
}

static size_t sink_connections(const struct sink *k)
{
    char path[192], *data;
    size_t n = 0;

    snprintf(path, sizeof(path), "%s/connections.jsonl", k->dir);
    data = t_slurp(path, NULL);
    if (!data)
        return 0;
    for (char *p = data; *p; p++)
        n += *p == '\n';
    free(data);
    return n;
}

static char *sink_message(const struct sink *k, int n, size_t *len)
{
    char path[192];

    snprintf(path, sizeof(path), "%s/%08d.eml", k->dir, n);
    return t_slurp(path, len);
}

/* A self-signed EC certificate for CN/SAN DNS:localhost (no IP SAN) in
 * tmpdir/certs/{cert,key}.pem. */
static const char *make_cert(void)
{
    static char dir[128];
    char cmd[512];

    snprintf(dir, sizeof(dir), "%s/certs", tmpdir);
    mkdir(dir, 0700);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -days 2 "
             "-subj /CN=localhost -addext subjectAltName=DNS:localhost "
             "-keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1",
             dir, dir);
    if (system(cmd) != 0)
        return NULL;
    return dir;
}

/* A string member of a JSON object, "(null)" when it is not one. */
static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));

    return s ? s : "(null)";
}

/* The sink's record of its first stored message: how many it stored
 * (count; -1 unchecked), over TLS or not (tls 1, 0; -1 unchecked), the
 * AUTH user and mechanism (NULL unchecked). */
static void expect_stored(const struct sink *k, int count, int tls,
                          const char *auth, const char *mech)
{
    json_t *idx = sink_index(k);
    json_t *first = json_array_get(idx, 0);

    if (count >= 0)
        assert_int_equal(json_array_size(idx), count);
    if (tls >= 0)
        assert_int_equal(json_is_true(json_object_get(first, "tls")), tls);
    if (auth)
        assert_string_equal(jstr(first, "auth"), auth);
    if (mech)
        assert_string_equal(jstr(first, "auth_mech"), mech);
    json_decref(idx);
}

/* ---- driving the client ------------------------------------------------- */

#define MAXR 2100

struct outcome {
    int calls;
    enum sb_smtp_status status;
    int code;
    char reason[256];
};

static struct outcome res[MAXR];
static size_t ndone;

static void on_done(const struct sb_smtp_result *r, void *arg)
{
    struct outcome *o = arg;

    o->calls++;
    o->status = r->status;
    o->code = r->code;
    snprintf(o->reason, sizeof(o->reason), "%s", r->reason ? r->reason : "");
    ndone++;
}

static void reset_outcomes(void)
{
    memset(res, 0, sizeof(res));
    ndone = 0;
}

static void on_tick(uv_timer_t *t)
{
    SB_UNUSED(t);
}

/* Run the loop until ndone reaches want or ms pass. */
static void run_until(uv_loop_t *loop, size_t want, long ms)
{
    uv_timer_t tick;
    uint64_t end = sb_mono_ms() + (uint64_t)ms;

    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 20, 20);
    while (ndone < want && sb_mono_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Close the client and run the loop until it has freed itself. */
static void close_and_drain(uv_loop_t *loop, struct sb_smtp *s)
{
    uint64_t end = sb_mono_ms() + 20000;

    sb_smtp_close(s);
    while (uv_loop_alive(loop) && sb_mono_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void conf_plain(struct sb_smtp_conf *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->host = "127.0.0.1";
    c->port = port;
    c->tls = SB_SMTP_TLS_NONE;
    c->timeout_ms = 5000;
    c->threads = 1;
    c->helo = "client.test";
}

/* A small valid message from the builder. */
static char *make_msg(const char *to, int i, size_t *len)
{
    struct sb_mail m;
    struct sb_buf b;
    char id[64], subj[64];
    const char *why = NULL;

    memset(&m, 0, sizeof(m));
    snprintf(id, sizeof(id), "t%d.x@example.com", i);
    snprintf(subj, sizeof(subj), "Message %d", i);
    m.from_addr = "noreply@example.com";
    m.from_name = "Switchboard";
    m.to_addr = to;
    m.subject = subj;
    m.text = "Hello,\nyour order has shipped.\n";
    m.message_id = id;
    m.auto_submitted = "auto-generated";
    sb_buf_init(&b, 0);
    if (sb_mail_build(&m, &b, &why) != 0) {
        sb_buf_free(&b);
        return NULL;
    }
    return sb_buf_steal(&b, len);
}

static int submit_one(struct sb_smtp *s, const char *to, int i)
{
    size_t len;
    char *d = make_msg(to, i, &len);
    int rc;

    if (!d)
        return -1;
    rc = sb_smtp_submit(s, "noreply@example.com", to, d, len, on_done,
                        &res[i]);
    free(d);
    return rc;
}

/* Start the sink (extra arguments NULL-terminated), which must come up,
 * and a plain conf for it in c. */
static void sink_conf(struct sink *k, struct sb_smtp_conf *c, const char *name,
                      ...)
{
    va_list ap;
    int rc;

    va_start(ap, name);
    rc = sink_vstart(k, name, ap);
    va_end(ap);
    assert_int_equal(rc, 0);
    conf_plain(c, k->port);
}

/* STARTTLS required and verified against ca, for the name localhost (the
 * certificate from make_cert). */
static void conf_tls(struct sb_smtp_conf *c, const char *ca)
{
    c->host = "localhost";
    c->tls = SB_SMTP_TLS_REQUIRE;
    c->verify_cert = 1;
    c->ca_file = ca;
}

/* A client for c on a fresh loop, outcomes reset. */
static struct sb_smtp *client_new(uv_loop_t *loop, const struct sb_smtp_conf *c)
{
    struct sb_smtp *s;

    reset_outcomes();
    uv_loop_init(loop);
    s = sb_smtp_new(loop, c);
    assert_non_null(s);
    return s;
}

/* Submit a one-byte message; returns what sb_smtp_submit does. */
static int submit_x(struct sb_smtp *s, const char *from, const char *to,
                    struct outcome *o)
{
    return sb_smtp_submit(s, from, to, "x", 1, on_done, o);
}

/* Send one message with conf c, return its outcome (after close). */
static struct outcome send_one(const struct sb_smtp_conf *c, const char *to)
{
    uv_loop_t loop;
    struct sb_smtp *s = client_new(&loop, c);

    assert_int_equal(submit_one(s, to, 0), 0);
    run_until(&loop, 1, 30000);
    close_and_drain(&loop, s);
    assert_int_equal(res[0].calls, 1);
    return res[0];
}

/* o must have status st, the reply code (-1: any) and a reason holding
 * reason (NULL: any); what names the step when it has not. */
static void expect_outcome(const char *what, const struct outcome *o,
                           enum sb_smtp_status st, int code, const char *reason)
{
    if (o->status != st || (code >= 0 && o->code != code) ||
        (reason && !strstr(o->reason, reason)))
        fail_msg("%s: status %d code %d reason \"%s\"; want %d %d \"%s\"", what,
                 o->status, o->code, o->reason, st, code, reason ? reason : "");
}

/* send_one to a@example.org, and expect_outcome on it. */
static struct outcome send_expect(const char *what,
                                  const struct sb_smtp_conf *c,
                                  enum sb_smtp_status st, int code,
                                  const char *reason)
{
    struct outcome o = send_one(c, "a@example.org");

    expect_outcome(what, &o, st, code, reason);
    return o;
}

/* ---- builder helpers ----------------------------------------------------- */

static char *build(const struct sb_mail *m, const char **why)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    *why = NULL;
    if (sb_mail_build(m, &b, why) != 0) {
        assert_int_equal(b.len, 0);
        sb_buf_free(&b);
        return NULL;
    }
    return sb_buf_steal(&b, NULL);
}

/* CRLF only, every line at most max bytes (without CRLF). */
static void assert_lines(const char *s, size_t max)
{
    size_t col = 0;

    for (; *s; s++) {
        if (*s == '\r') {
            assert_int_equal(s[1], '\n');
            s++;
            col = 0;
            continue;
        }
        assert_int_not_equal(*s, '\n');
        col++;
        assert_true(col <= max);
    }
    assert_int_equal(col, 0);
}

/* Lines of the header block (up to the blank line) at most 78 bytes. */
static void assert_header_lines(const char *s)
{
    const char *end = strstr(s, "\r\n\r\n");
    const char *p = s;

    assert_non_null(end);
    while (p < end) {
        const char *e = strstr(p, "\r\n");

        assert_true((size_t)(e - p) <= 78);
        p = e + 2;
    }
}

static void base_mail(struct sb_mail *m)
{
    memset(m, 0, sizeof(*m));
    m->from_addr = "support@example.com";
    m->to_addr = "ivan@example.org";
    m->subject = "Order shipped";
    m->text = "Hello";
    m->message_id = "nt_5.1.x7f3@example.com";
}

/* Parse msg with Python's email package; returns a JSON object with
 * subject (modern parser), subject2 and the display names (the classic
 * decode_header: Python 3.11's modern parser puts a space between
 * adjacent encoded words of a display name, against RFC 2047 6.2, even
 * for the headers Python itself writes), from_addr, text, html, ctype. */
static json_t *py_parse(const char *msg)
{
    char path[128], cmd[2048], out[65536];
    FILE *p;
    size_t n;
    json_t *j;

    snprintf(path, sizeof(path), "%s/parse.eml", tmpdir);
    if (t_write_file(path, msg, strlen(msg)) != 0)
        return NULL;
    snprintf(cmd, sizeof(cmd),
             PY " -c '"
             "import sys, json, email, email.policy\n"
             "m = email.message_from_binary_file(open(sys.argv[1], \"rb\"),"
             " policy=email.policy.default)\n"
             "import email.header as H, email.utils as U\n"
             "def name(raw):\n"
             "    n = U.parseaddr(raw)[0]\n"
             "    return str(H.make_header(H.decode_header(n)))\n"
             "c = email.message_from_binary_file(open(sys.argv[1], \"rb\"))\n"
             "f = m[\"from\"].addresses[0]\n"
             "tp = m.get_body((\"plain\",)); hp = m.get_body((\"html\",))\n"
             "print(json.dumps({\"subject\": str(m[\"subject\"]),"
             " \"subject2\": str(H.make_header(H.decode_header("
             "c[\"subject\"] or \"\"))),"
             " \"from_name\": name(c[\"from\"]), \"from_addr\": f.addr_spec,"
             " \"to_name\": name(c[\"to\"]),"
             " \"text\": tp.get_content().replace(\"\\r\\n\", \"\\n\")"
             " if tp else None,"
             " \"html\": hp.get_content().replace(\"\\r\\n\", \"\\n\")"
             " if hp else None,"
             " \"ctype\": m.get_content_type(),"
             " \"defects\": len(m.defects)}))' %s",
             path);
    p = popen(cmd, "r");
    if (!p)
        return NULL;
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    if (pclose(p) != 0)
        return NULL;
    j = json_loads(out, 0, NULL);
    return j;
}

/* The message built from m, which must build. CHECK_LINES: CRLF only,
 * lines within 998; CHECK_HEADERS: header lines within 78. */
enum { CHECK_LINES = 1, CHECK_HEADERS = 2 };

static char *build_ok(const struct sb_mail *m, int checks)
{
    const char *why;
    char *out = build(m, &why);

    assert_non_null(out);
    if (checks & CHECK_LINES)
        assert_lines(out, 998);
    if (checks & CHECK_HEADERS)
        assert_header_lines(out);
    return out;
}

/* build_ok of base_mail with this text. */
static char *build_text(const char *text, int checks)
{
    struct sb_mail m;

    base_mail(&m);
    m.text = text;
    return build_ok(&m, checks);
}

/* What follows the blank line. */
static char *body_of(char *out)
{
    char *p = strstr(out, "\r\n\r\n");

    assert_non_null(p);
    return p + 4;
}

/* Each of the n strings must (want 1) or must not (want 0) be in out. */
static void expect_in(const char *out, const char *const *s, size_t n, int want)
{
    for (size_t i = 0; i < n; i++)
        if ((strstr(out, s[i]) != NULL) != want)
            fail_msg("\"%s\" %s in:\n%s", s[i], want ? "missing" : "present",
                     out);
}

#define MAIL_FIELD(f) offsetof(struct sb_mail, f)

/* base_mail with one string field (MAIL_FIELD) set to value must be
 * refused, with the reason why (NULL: unchecked; "": any reason). */
static void expect_refused(size_t field, const char *value, const char *why)
{
    struct sb_mail m;
    const char *got;

    base_mail(&m);
    *(const char **)(void *)((char *)&m + field) = value;
    assert_null(build(&m, &got));
    if (why && !why[0])
        assert_non_null(got);
    else if (why)
        assert_string_equal(got, why);
}

/* A field that refuses every value of a list. */
struct refusing_field {
    size_t field;
    const char *why; /* as for expect_refused */
    int skip_empty;  /* "" is not tried in this field */
};

static void expect_refused_all(const struct refusing_field *fields, size_t nf,
                               const char *const *values, size_t nv)
{
    for (size_t v = 0; v < nv; v++)
        for (size_t f = 0; f < nf; f++)
            if (values[v][0] || !fields[f].skip_empty)
                expect_refused(fields[f].field, values[v], fields[f].why);
}

/* py_parse, which must succeed. */
static json_t *py_parse_ok(const char *msg)
{
    json_t *j = py_parse(msg);

    assert_non_null(j);
    return j;
}

/* Python's view of msg: each key of the NULL-terminated key, value list
 * reads value; no_defects: and the parser found none. */
static void py_expect(const char *msg, int no_defects, const char *const *kv)
{
    json_t *j = py_parse_ok(msg);

    for (; kv[0]; kv += 2)
        assert_string_equal(jstr(j, kv[0]), kv[1]);
    if (no_defects)
        assert_int_equal(json_integer_value(json_object_get(j, "defects")), 0);
    json_decref(j);
}

/* ======================================================================
 * Builder
 * ====================================================================== */

static void test_build_basic(void **state)
{
    static const char *const present[] = {
        "From: Switchboard Support <support@example.com>\r\n",
        "To: \"J. Smith\" <ivan@example.org>\r\n",
        "Reply-To: help@example.com\r\n",
        "Subject: Order shipped\r\n",
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n",
        "Message-ID: <nt_5.1.x7f3@example.com>\r\n",
        "In-Reply-To: <abc.1@mail.example.org>\r\n",
        "References: <r1@a.example> <r2@b.example> "
        "<abc.1@mail.example.org>\r\n",
        "List-Unsubscribe: <https://example.com/u?t=1>\r\n",
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        "Auto-Submitted: auto-generated\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: text/plain; charset=utf-8",
        "quoted-printable\r\n\r\nHello\r\n",
    };
    static const char *const absent[] = {
        "List-Unsubscribe-Post", "In-Reply-To", "References",
        "Auto-Submitted",        "Reply-To",
    };
    struct sb_mail m;
    char *out;

    SB_UNUSED(state);
    base_mail(&m);
    m.from_name = "Switchboard Support";
    m.to_name = "J. Smith";
    m.reply_to = "help@example.com";
    m.in_reply_to = "abc.1@mail.example.org";
    m.references = "r1@a.example r2@b.example  abc.1@mail.example.org";
    m.list_unsubscribe = "https://example.com/u?t=1";
    m.list_unsubscribe_post = 1;
    m.auto_submitted = "auto-generated";
    m.date_ms = 1704067200000LL; /* 2024-01-01 00:00:00 UTC, a Monday */
    out = build_ok(&m, CHECK_LINES | CHECK_HEADERS);
    expect_in(out, present, SB_ARRAY_LEN(present), 1);
    free(out);

    /* Optional headers stay out; a mailto: URL gets no One-Click. */
    base_mail(&m);
    m.list_unsubscribe = "mailto:unsub@example.com";
    m.list_unsubscribe_post = 1;
    out = build_ok(&m, 0);
    expect_in(out, absent, SB_ARRAY_LEN(absent), 0);
    free(out);
}

static void test_build_cyrillic_roundtrip(void **state)
{
    static const char subj[] =
        "Заказ №12345 отгружен: ожидайте доставку транспортной компанией "
        "«Деловые линии» в течение трёх рабочих дней";
    static const char from[] = "Служба поддержки «Парус»";
    static const char to[] = "Иван Петрович Сидоров";
    static const char text[] =
        "Здравствуйте, Иван Петрович!\n\nВаш заказ №12345 отгружен.\n"
        "Трек-номер: 1234-5678.\n";
    static const char *const present[] = {
        "Subject: =?UTF-8?B?",
        "Content-Transfer-Encoding: base64",
    };
    struct sb_mail m;
    char *out;

    SB_UNUSED(state);
    base_mail(&m);
    m.subject = subj;
    m.from_name = from;
    m.to_name = to;
    m.text = text;
    out = build_ok(&m, CHECK_LINES | CHECK_HEADERS);
    expect_in(out, present, SB_ARRAY_LEN(present), 1);
    /* Nothing but ASCII leaves the builder. */
    for (const char *p = out; *p; p++)
        assert_true((unsigned char)*p < 0x80);
    py_expect(out, 1,
              (const char *const[]){"subject", subj, "subject2", subj,
                                    "from_name", from, "from_addr",
                                    "support@example.com", "to_name", to,
                                    "text", text, NULL});
    free(out);
}

static void test_build_names_quoting(void **state)
{
    static const struct {
        const char *name;
        const char *expect; /* in the raw header, or NULL */
    } cases[] = {
        {"Plain Name", "From: Plain Name <support@example.com>"},
        {"O'Brien, Pat (Sales)",
         "From: \"O'Brien, Pat (Sales)\" <support@example.com>"},
        {"Say \"hi\" \\ bye", "From: \"Say \\\"hi\\\" \\\\ bye\""},
        {"=?UTF-8?B?SGk=?=", "From: =?UTF-8?"},
        {"Müller GmbH", "=?UTF-8?Q?M=C3=BCller_GmbH?="},
        {"A very long display name that goes on and on and on past sixty "
         "characters for sure",
         NULL},
    };
    size_t i;

    SB_UNUSED(state);
    for (i = 0; i < SB_ARRAY_LEN(cases); i++) {
        struct sb_mail m;
        char *out;

        base_mail(&m);
        m.from_name = cases[i].name;
        out = build_ok(&m, CHECK_LINES | CHECK_HEADERS);
        if (cases[i].expect && !strstr(out, cases[i].expect))
            fail_msg("%s: %s", cases[i].expect, out);
        py_expect(out, 0,
                  (const char *const[]){"from_name", cases[i].name, "from_addr",
                                        "support@example.com", NULL});
        free(out);
    }
}

static void test_build_qp_vs_base64(void **state)
{
    char *out, longline[3100];
    json_t *j;

    SB_UNUSED(state);
    /* Mostly ASCII: quoted-printable; "=" and trailing space encoded. */
    out = build_text("Total = 100 EUR \nDéjà vu.\t\nLast line", 0);
    assert_non_null(strstr(out, "Content-Transfer-Encoding: "
                                "quoted-printable"));
    assert_string_equal(body_of(out),
                        "Total =3D 100 EUR=20\r\nD=C3=A9j=C3=A0 vu.=09"
                        "\r\nLast line\r\n");
    /* Python hands back the text with LF and a final newline. */
    py_expect(out, 0,
              (const char *const[]){
                  "text", "Total = 100 EUR \nDéjà vu.\t\nLast line\n", NULL});
    free(out);

    /* Mostly Cyrillic: base64. */
    out = build_text("Привет, мир! Это проверка кодировки тела письма.", 0);
    assert_non_null(strstr(out, "Content-Transfer-Encoding: base64"));
    free(out);

    /* A 3000-byte line: QP soft breaks keep every line within 76. */
    memset(longline, 'x', 3000);
    longline[3000] = '\0';
    out = build_text(longline, 0);
    assert_lines(body_of(out), 76);
    j = py_parse_ok(out);
    assert_int_equal(strlen(jstr(j, "text")), 3001);
    json_decref(j);
    free(out);
}

static void test_build_multipart(void **state)
{
    struct sb_mail m;
    char *out, *bnd, boundary[80];
    char *t, *h;

    SB_UNUSED(state);
    base_mail(&m);
    m.text = "Your order 42 has shipped.\nTrack it online.";
    m.html = "<p>Your order <b>42</b> has shipped.</p>\n"
             "<p>Ваш заказ отгружен.</p>";
    out = build_ok(&m, CHECK_LINES | CHECK_HEADERS);
    bnd = strstr(out, "Content-Type: multipart/alternative;\r\n boundary=\"");
    assert_non_null(bnd);
    bnd = strchr(bnd, '"') + 1;
    assert_true(strchr(bnd, '"') - bnd < (long)sizeof(boundary));
    snprintf(boundary, sizeof(boundary), "%.*s",
             (int)(strchr(bnd, '"') - bnd), bnd);
    /* Text first, then HTML, then the closing delimiter. */
    t = strstr(out, "Content-Type: text/plain");
    h = strstr(out, "Content-Type: text/html");
    assert_non_null(t);
    assert_non_null(h);
    assert_true(t < h);
    {
        char close[100];

        snprintf(close, sizeof(close), "\r\n--%s--\r\n", boundary);
        assert_non_null(strstr(h, close));
    }
    /* In a multipart the CRLF before a delimiter is the delimiter's: the
     * parts come back exactly as given. */
    py_expect(out, 1,
              (const char *const[]){"ctype", "multipart/alternative", "text",
                                    m.text, "html", m.html, NULL});
    free(out);
}

static void test_build_crlf_normalised(void **state)
{
    char *out;

    SB_UNUSED(state);
    out = build_text("a\nb\rc\r\nd\n\n.\n", CHECK_LINES);
    assert_string_equal(body_of(out), "a\r\nb\r\nc\r\nd\r\n\r\n.\r\n");
    free(out);
}

static void test_build_refusals(void **state)
{
    static const char *const bad_addr[] = {
        "", "a b@x.org", "<a@x.org>", "a@b@x.org", "a,b@x.org", "a@",
        "@x.org", "a@x.org\r\nBcc: evil@x.org", "a\n@x.org", "ivan@пример.рф",
        "a\"b@x.org",
    };
    static const struct refusing_field addr_fields[] = {
        {MAIL_FIELD(to_addr), "", 0},
        {MAIL_FIELD(from_addr), NULL, 0},
        {MAIL_FIELD(reply_to), NULL, 1},
    };
    static const char *const bad_id[] = {
        "noat", "a b@x", "<a@x>", "a@x\r\n", "a@x\nX: y", "@x", "a@",
    };
    static const struct refusing_field id_fields[] = {
        {MAIL_FIELD(message_id), NULL, 0},
        {MAIL_FIELD(in_reply_to), NULL, 0},
        {MAIL_FIELD(references), NULL, 0},
    };
    /* CR or LF in any header value. */
    static const char *const inj[] = {
        "x\r\nBcc: evil@x.org", "x\nBcc: evil@x.org", "x\rBcc: e@x.org",
    };
    static const struct refusing_field inj_fields[] = {
        {MAIL_FIELD(subject), "CR or LF in a header value", 0},
        {MAIL_FIELD(from_name), NULL, 0},
        {MAIL_FIELD(to_name), NULL, 0},
        {MAIL_FIELD(list_unsubscribe), NULL, 0},
        {MAIL_FIELD(auto_submitted), NULL, 0},
    };
    /* Invalid UTF-8 (an encoded NUL, overlong C0 80; a byte; a
     * surrogate); missing required fields; bad URL and Auto-Submitted
     * values. */
    static const struct {
        size_t field;
        const char *value;
        const char *why; /* NULL: unchecked */
    } bad[] = {
        {MAIL_FIELD(subject), "abc\xC0\x80 Bcc",
         "invalid UTF-8 in a header value"},
        {MAIL_FIELD(text), "bad \xff byte", NULL},
        {MAIL_FIELD(html), "<p>\xed\xa0\x80</p>", NULL},
        {MAIL_FIELD(text), NULL, NULL},
        {MAIL_FIELD(message_id), NULL, NULL},
        {MAIL_FIELD(from_addr), NULL, NULL},
        {MAIL_FIELD(list_unsubscribe), "javascript:alert(1)", NULL},
        {MAIL_FIELD(list_unsubscribe), "https://x.example/a b", NULL},
        {MAIL_FIELD(auto_submitted), "auto generated", NULL},
    };
    struct sb_mail m;
    const char *why;
    char *out;

    SB_UNUSED(state);
    expect_refused_all(addr_fields, SB_ARRAY_LEN(addr_fields), bad_addr,
                       SB_ARRAY_LEN(bad_addr));
    expect_refused_all(id_fields, SB_ARRAY_LEN(id_fields), bad_id,
                       SB_ARRAY_LEN(bad_id));
    expect_refused_all(inj_fields, SB_ARRAY_LEN(inj_fields), inj,
                       SB_ARRAY_LEN(inj));
    /* A NUL ends a C string: whatever followed it never reaches the
     * message. */
    base_mail(&m);
    m.subject = "abc\0\r\nBcc: evil@x.org";
    out = build_ok(&m, 0);
    assert_null(strstr(out, "Bcc"));
    assert_non_null(strstr(out, "Subject: abc\r\n"));
    free(out);
    for (size_t i = 0; i < SB_ARRAY_LEN(bad); i++)
        expect_refused(bad[i].field, bad[i].value, bad[i].why);
    /* A buffer cap that cannot hold the message. */
    {
        struct sb_buf b;

        base_mail(&m);
        sb_buf_init(&b, 100);
        assert_int_equal(sb_mail_build(&m, &b, &why), -1);
        assert_string_equal(why, "message too large");
        assert_int_equal(b.len, 0);
        sb_buf_free(&b);
    }
}

static void test_build_line_lengths(void **state)
{
    static char subj[600], text[4000], refs[2000], id[251];
    static const char cyr[] = "Ж";
    struct sb_mail m;
    char *out;
    size_t i;

    SB_UNUSED(state);
    /* A 500-byte subject without a space, a 250-byte message id, 30
     * references, a 3990-byte line of two-byte characters. */
    memset(subj, 'S', 500);
    for (i = 0; i + 2 <= 3990; i += 2)
        memcpy(text + i, cyr, 2);
    memset(id, 'i', 240);
    memcpy(id + 240, "@x.example", 10);
    id[250] = '\0';
    for (i = 0; i < 30; i++) {
        char one[64];

        snprintf(one, sizeof(one), "%sref%zu.%zu@host%zu.example.org",
                 i ? " " : "", i, i * 7919, i);
        strcat(refs, one);
    }
    base_mail(&m);
    m.subject = subj;
    m.text = text;
    m.message_id = id;
    m.in_reply_to = id;
    m.references = refs;
    m.from_name = "Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж Ж";
    out = build_ok(&m, CHECK_LINES);
    /* Only the two msg-id headers may pass 78 (the id is one token). */
    {
        const char *p = out, *end = strstr(out, "\r\n\r\n");

        while (p < end) {
            const char *e = strstr(p, "\r\n");

            if (strncmp(p, "Message-ID:", 11) && strncmp(p, "In-Reply-To:", 12))
                assert_true(e - p <= 78);
            p = e + 2;
        }
    }
    py_expect(
        out, 0,
        (const char *const[]){"subject", subj, "from_name", m.from_name, NULL});
    free(out);

    /* A long ASCII subject with spaces folds at spaces, text unchanged. */
    base_mail(&m);
    m.subject = "Your service request 1234 was updated: the technician will "
                "arrive tomorrow between 10:00 and 12:00, please make sure "
                "someone is at home";
    out = build_ok(&m, CHECK_HEADERS);
    assert_non_null(strstr(out, "\r\n "));
    py_expect(out, 0, (const char *const[]){"subject", m.subject, NULL});
    free(out);
}

/* ======================================================================
 * Sending
 * ====================================================================== */

static void test_send_one_session(void **state)
{
    struct sink k;
    struct sb_smtp_conf c;
    struct sb_smtp *s;
    uv_loop_t loop;
    json_t *idx;
    size_t i;
    char *built[5];
    size_t blen[5];

    SB_UNUSED(state);
    sink_conf(&k, &c, "one", NULL);
    c.threads = 2;
    s = client_new(&loop, &c);
    for (i = 0; i < 5; i++) {
        char to[64];

        snprintf(to, sizeof(to), "user%zu@example.org", i);
        built[i] = make_msg(to, (int)i, &blen[i]);
        assert_non_null(built[i]);
        assert_int_equal(sb_smtp_submit(s, "noreply@example.com", to,
                                        built[i], blen[i], on_done, &res[i]),
                         0);
    }
    assert_int_equal(ndone, 0); /* never inside submit */
    assert_int_equal(sb_smtp_pending(s), 5);
    run_until(&loop, 5, 20000);
    assert_int_equal(sb_smtp_pending(s), 0);
    close_and_drain(&loop, s);
    for (i = 0; i < 5; i++) {
        assert_int_equal(res[i].calls, 1);
        expect_outcome("one session", &res[i], SB_SMTP_OK, 250, "OK sink-");
    }
    idx = sink_index(&k);
    assert_int_equal(json_array_size(idx), 5);
    for (i = 0; i < 5; i++) {
        json_t *o = json_array_get(idx, i);
        char *got;
        size_t glen;

        /* One connection for all five, our envelope, the bytes we built
         * stored unchanged (libesmtp added and changed no header). */
        assert_int_equal(json_integer_value(json_object_get(o, "conn")), 1);
        assert_string_equal(jstr(o, "mail_from"), "noreply@example.com");
        got = sink_message(&k, (int)json_integer_value(json_object_get(o, "n")),
                           &glen);
        assert_non_null(got);
        {
            size_t m;

            for (m = 0; m < 5; m++)
                if (glen == blen[m] && memcmp(got, built[m], glen) == 0)
                    break;
            assert_true(m < 5);
        }
        free(got);
    }
    assert_int_equal(sink_connections(&k), 1);
    json_decref(idx);
    for (i = 0; i < 5; i++)
        free(built[i]);
    sink_stop(&k);
}

static void test_send_reply_codes(void **state)
{
    static const struct {
        const char *to;
        enum sb_smtp_status st;
        int code;
        const char *text;
    } cases[] = {
        {"ok@example.org", SB_SMTP_OK, 250, "OK"},
        {"tempfail@example.org", SB_SMTP_TEMPFAIL, 451, "try later"},
        {"permfail@example.org", SB_SMTP_PERMFAIL, 550, "no such user"},
        {"toomany@example.org", SB_SMTP_TEMPFAIL, 552, "too many"},
        {"unavail@example.org", SB_SMTP_TEMPFAIL, 421, "closing"},
        {"policy@example.org", SB_SMTP_PERMFAIL, 554, "policy"},
        {"ok2@example.org", SB_SMTP_OK, 250, "OK"},
    };
    struct sink k;
    struct sb_smtp_conf c;
    struct sb_smtp *s;
    uv_loop_t loop;
    size_t i;

    SB_UNUSED(state);
    sink_conf(&k, &c, "codes",
              "--reply-rcpt", "tempfail=451 4.3.0 try later",
              "--reply-rcpt", "permfail=550 5.1.1 no such user",
              "--reply-rcpt", "toomany=552 5.5.3 too many recipients",
              "--reply-rcpt", "unavail=421 4.3.2 closing soon",
              "--reply-rcpt", "policy=554 5.7.1 policy", NULL);
    s = client_new(&loop, &c);
    for (i = 0; i < SB_ARRAY_LEN(cases); i++)
        assert_int_equal(submit_one(s, cases[i].to, (int)i), 0);
    run_until(&loop, SB_ARRAY_LEN(cases), 20000);
    close_and_drain(&loop, s);
    for (i = 0; i < SB_ARRAY_LEN(cases); i++) {
        assert_int_equal(res[i].calls, 1);
        expect_outcome(cases[i].to, &res[i], cases[i].st, cases[i].code,
                       cases[i].text);
    }
    assert_int_equal(sink_count(&k), 2);
    assert_int_equal(sink_connections(&k), 1);
    sink_stop(&k);
}

static void test_send_data_reply(void **state)
{
    static const struct {
        const char *name;
        const char *reply; /* to the end of DATA */
        enum sb_smtp_status st;
        int code;
        const char *reason; /* NULL: unchecked */
    } cases[] = {
        {"data5", "554 5.6.0 content rejected", SB_SMTP_PERMFAIL, 554,
         "content rejected"},
        {"data4", "452 4.3.1 insufficient storage", SB_SMTP_TEMPFAIL, 452,
         NULL},
        {"data552", "552 5.3.4 message too big", SB_SMTP_TEMPFAIL, 552, NULL},
    };
    struct sink k;
    struct sb_smtp_conf c;

    SB_UNUSED(state);
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        sink_conf(&k, &c, cases[i].name, "--reply-data", cases[i].reply, NULL);
        send_expect(cases[i].reply, &c, cases[i].st, cases[i].code,
                    cases[i].reason);
        sink_stop(&k);
    }
}

static void test_send_silent_timeout(void **state)
{
    struct sink k;
    struct sb_smtp_conf c;
    uint64_t t0;

    SB_UNUSED(state);
    sink_conf(&k, &c, "silent", "--silent", NULL);
    c.timeout_ms = 1000;
    t0 = sb_mono_ms();
    send_expect("silent relay", &c, SB_SMTP_TEMPFAIL, 0, "timeout");
    assert_true(sb_mono_ms() - t0 >= 900);
    assert_true(sb_mono_ms() - t0 < 6000);
    assert_int_equal(sink_connections(&k), 1);
    sink_stop(&k);
}

static void test_send_dropped_and_refused(void **state)
{
    struct sink k;
    struct sb_smtp_conf c;
    struct outcome o;
    int port;

    SB_UNUSED(state);
    sink_conf(&k, &c, "drop", "--drop-after-rcpt", NULL);
    send_expect("dropped", &c, SB_SMTP_TEMPFAIL, 0, "dropped");
    assert_int_equal(sink_count(&k), 0);
    sink_stop(&k);

    port = t_free_port();
    assert_true(port > 0);
    conf_plain(&c, port);
    o = send_expect("refused", &c, SB_SMTP_TEMPFAIL, 0, NULL);
    assert_string_equal(o.reason, "cannot connect: connection refused");
}

static void test_tls_required_not_offered(void **state)
{
    struct sink k;
    struct sb_smtp_conf c;
    struct outcome o;

    SB_UNUSED(state);
    sink_conf(&k, &c, "notls", NULL);
    c.tls = SB_SMTP_TLS_REQUIRE;
    c.verify_cert = 1;
    o = send_expect("TLS required", &c, SB_SMTP_TEMPFAIL, -1, NULL);
    assert_string_equal(o.reason, "STARTTLS required but not offered");
    assert_int_equal(sink_count(&k), 0);

    /* TRY falls back to plain text against the same relay. */
    c.tls = SB_SMTP_TLS_TRY;
    send_expect("TLS tried", &c, SB_SMTP_OK, -1, NULL);
    sink_stop(&k);
    expect_stored(&k, 1, 0, NULL, NULL);
}

static void test_tls_verify(void **state)
{
    static const char failed[] = "TLS certificate verification failed";
    struct sink k;
    struct sb_smtp_conf c;
    const char *certs = make_cert();
    char ca[192];

    SB_UNUSED(state);
    assert_non_null(certs);
    snprintf(ca, sizeof(ca), "%s/cert.pem", certs);
    sink_conf(&k, &c, "tls", "--tls", certs, "--require-tls", NULL);

    /* The self-signed certificate as ca_file, host name matching. */
    conf_tls(&c, ca);
    send_expect("verified TLS", &c, SB_SMTP_OK, -1, NULL);
    expect_stored(&k, 1, 1, NULL, NULL);

    /* The system store does not know it. */
    c.ca_file = NULL;
    send_expect("system store", &c, SB_SMTP_TEMPFAIL, 0, failed);

    /* Trusted, but issued to localhost, not to 127.0.0.1. */
    c.ca_file = ca;
    c.host = "127.0.0.1";
    send_expect("other name", &c, SB_SMTP_TEMPFAIL, -1, failed);

    /* Without verification the same relay takes the message. */
    c.verify_cert = 0;
    c.ca_file = NULL;
    send_expect("unverified", &c, SB_SMTP_OK, -1, NULL);
    assert_int_equal(sink_count(&k), 2);

    /* A relay that wants TLS, reached in plain text: 530 to MAIL. */
    c.tls = SB_SMTP_TLS_NONE;
    send_expect("plain text", &c, SB_SMTP_TEMPFAIL, 530, NULL);
    assert_int_equal(sink_count(&k), 2);
    sink_stop(&k);

    /* The production shape: STARTTLS required and verified, then AUTH. */
    sink_conf(&k, &c, "tlsauth", "--tls", certs, "--require-tls", "--auth",
              "bob:s3cret", NULL);
    conf_tls(&c, ca);
    c.user = "bob";
    c.password = "s3cret";
    send_expect("TLS + AUTH", &c, SB_SMTP_OK, -1, NULL);
    expect_stored(&k, 1, 1, "bob", NULL);
    sink_stop(&k);
}

static void test_auth(void **state)
{
    struct sink k;
    struct sb_smtp_conf c;

    SB_UNUSED(state);
    sink_conf(&k, &c, "plain", "--auth", "bob:s3cret", "--auth-mechs", "PLAIN",
              NULL);
    c.user = "bob";
    c.password = "s3cret";
    send_expect("AUTH PLAIN", &c, SB_SMTP_OK, -1, NULL);
    expect_stored(&k, 1, -1, "bob", "PLAIN");

    /* Wrong password: TEMPFAIL with the relay's 535, nothing stored. */
    c.password = "wrong";
    send_expect("wrong password", &c, SB_SMTP_TEMPFAIL, 535,
                "AUTH refused: 535");

    /* No credentials at all: the relay's 530 to MAIL is ours to fix. */
    c.user = NULL;
    c.password = NULL;
    send_expect("no AUTH", &c, SB_SMTP_TEMPFAIL, 530, NULL);
    assert_int_equal(sink_count(&k), 1);
    sink_stop(&k);

    sink_conf(&k, &c, "login", "--auth", "bob:s3cret", "--auth-mechs", "LOGIN",
              NULL);
    c.user = "bob";
    c.password = "s3cret";
    send_expect("AUTH LOGIN", &c, SB_SMTP_OK, -1, NULL);
    expect_stored(&k, -1, -1, NULL, "LOGIN");
    sink_stop(&k);
}

static void test_dot_stuffing(void **state)
{
    static const char msg[] =
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: dots\r\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        "Message-ID: <dots.1@example.com>\r\n\r\n"
        "line one\r\n.hidden\r\n.\r\n..two dots\r\n. space\r\nlast\r\n";
    /* Lone LF and CR: normalised on submit, so "." stays a line. */
    static const char bare[] =
        "From: a@example.com\nTo: b@example.org\nSubject: bare\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\n"
        "Message-ID: <dots.2@example.com>\n\n"
        "x\n.\nQUIT\r.\ry\n.hidden";
    static const char bare_expect[] =
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: bare\r\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
        "Message-ID: <dots.2@example.com>\r\n\r\n"
        "x\r\n.\r\nQUIT\r\n.\r\ny\r\n.hidden\r\n";
    struct sink k;
    struct sb_smtp_conf c;
    struct sb_smtp *s;
    uv_loop_t loop;
    char *got;
    size_t glen;

    SB_UNUSED(state);
    sink_conf(&k, &c, "dots", NULL);
    s = client_new(&loop, &c);
    assert_int_equal(sb_smtp_submit(s, "a@example.com", "b@example.org", msg,
                                    strlen(msg), on_done, &res[0]),
                     0);
    assert_int_equal(sb_smtp_submit(s, "a@example.com", "b@example.org",
                                    bare, strlen(bare), on_done, &res[1]),
                     0);
    run_until(&loop, 2, 20000);
    close_and_drain(&loop, s);
    assert_int_equal(res[0].status, SB_SMTP_OK);
    assert_int_equal(res[1].status, SB_SMTP_OK);
    assert_int_equal(sink_count(&k), 2);
    got = sink_message(&k, 1, &glen);
    assert_non_null(got);
    assert_int_equal(glen, strlen(msg));
    assert_memory_equal(got, msg, glen);
    free(got);
    got = sink_message(&k, 2, &glen);
    assert_non_null(got);
    assert_string_equal(got, bare_expect);
    free(got);
    sink_stop(&k);
}

static void test_close_cancels(void **state)
{
    struct sink k;
    struct sb_smtp_conf c;
    struct sb_smtp *s;
    uv_loop_t loop;
    uint64_t t0, t1;
    size_t i;

    SB_UNUSED(state);
    sink_conf(&k, &c, "slow", "--silent", NULL);
    c.timeout_ms = 1000;
    c.max_per_session = 1;
    s = client_new(&loop, &c);
    assert_int_equal(submit_one(s, "a@example.org", 0), 0);
    /* Let the thread take the first one into a (hanging) session. */
    run_until(&loop, 1, 300);
    for (i = 1; i < 4; i++)
        assert_int_equal(submit_one(s, "a@example.org", (int)i), 0);
    assert_int_equal(sb_smtp_pending(s), 4);
    t0 = sb_mono_ms();
    sb_smtp_close(s);
    t1 = sb_mono_ms();
    assert_true(t1 - t0 < 100); /* close never waits for a session */
    /* Waiting ones complete CANCELLED before close returns. */
    assert_int_equal(ndone, 3);
    for (i = 1; i < 4; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].status, SB_SMTP_CANCELLED);
    }
    assert_int_equal(res[0].calls, 0);
    /* No use after close: submit refuses (no callback). */
    while (uv_loop_alive(&loop) && sb_mono_ms() < t0 + 20000)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(uv_loop_close(&loop), 0);
    /* The session in progress finished normally, from the loop. */
    assert_int_equal(res[0].calls, 1);
    assert_int_equal(res[0].status, SB_SMTP_TEMPFAIL);
    assert_non_null(strstr(res[0].reason, "timeout"));
    assert_int_equal(ndone, 4);
    sink_stop(&k);
}

/* Closing from inside a completion callback. */
static struct sb_smtp *close_me;

static void on_done_close(const struct sb_smtp_result *r, void *arg)
{
    on_done(r, arg);
    sb_smtp_close(close_me);
}

static void test_close_from_callback(void **state)
{
    struct sink k;
    struct sb_smtp_conf c;
    uv_loop_t loop;
    size_t len;
    char *d;

    SB_UNUSED(state);
    sink_conf(&k, &c, "cb", NULL);
    close_me = client_new(&loop, &c);
    d = make_msg("a@example.org", 0, &len);
    assert_int_equal(sb_smtp_submit(close_me, "noreply@example.com",
                                    "a@example.org", d, len, on_done_close,
                                    &res[0]),
                     0);
    free(d);
    run_until(&loop, 1, 20000);
    assert_int_equal(res[0].status, SB_SMTP_OK);
    while (uv_loop_alive(&loop))
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(res[0].calls, 1);
    sink_stop(&k);
}

static void test_submit_refused(void **state)
{
    static const char *const bad[] = {
        "", "a b@x.org", "<a@x.org>", "a@x.org\r\nRCPT TO:<b@y>", "a\n@x",
        "noat", "a\"b@x.org",
    };
    /* Configurations sb_smtp_new refuses. */
    static const struct {
        const char *host;
        int port;
        const char *user;    /* without a password */
        const char *ca_file; /* with TLS required and verified */
    } bad_conf[] = {
        {"::1", 25, NULL, NULL},
        {"127.0.0.1", 0, NULL, NULL},
        {"127.0.0.1", 25, "u", NULL},
        {"127.0.0.1", 25, NULL, "/nonexistent/ca.pem"},
    };
    /* callbacks run per res[] slot */
    static const int calls[] = {0, 1, 1, 0, 0};
    struct sb_smtp_conf c;
    struct sb_smtp *s;
    uv_loop_t loop;
    size_t i;

    SB_UNUSED(state);
    conf_plain(&c, 9); /* never connected to: nothing is sent */
    c.max_queue = 2;
    s = client_new(&loop, &c);
    for (i = 0; i < SB_ARRAY_LEN(bad); i++) {
        assert_int_equal(submit_x(s, "a@x.org", bad[i], &res[0]), -1);
        if (bad[i][0])
            assert_int_equal(submit_x(s, bad[i], "a@x.org", &res[0]), -1);
    }
    /* The null reverse path is fine; the queue holds two. */
    assert_int_equal(submit_x(s, "", "a@x.org", &res[1]), 0);
    assert_int_equal(submit_x(s, "a@x.org", "a@x.org", &res[2]), 0);
    assert_int_equal(submit_x(s, "a@x.org", "a@x.org", &res[3]), -1);
    assert_int_equal(sb_smtp_pending(s), 2);
    sb_smtp_close(s);
    assert_int_equal(submit_x(s, "a@x.org", "a@x.org", &res[4]), -1);
    while (uv_loop_alive(&loop))
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (i = 0; i < SB_ARRAY_LEN(calls); i++)
        assert_int_equal(res[i].calls, calls[i]);
    assert_int_equal(ndone, 2);

    /* Bad configurations. */
    uv_loop_init(&loop);
    for (i = 0; i < SB_ARRAY_LEN(bad_conf); i++) {
        struct sb_smtp_conf b;

        conf_plain(&b, bad_conf[i].port);
        b.host = bad_conf[i].host;
        b.user = bad_conf[i].user;
        if (bad_conf[i].ca_file) {
            b.tls = SB_SMTP_TLS_REQUIRE;
            b.verify_cert = 1;
            b.ca_file = bad_conf[i].ca_file;
        }
        assert_null(sb_smtp_new(&loop, &b));
    }
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_throughput(void **state)
{
    struct sink k;
    struct sb_smtp_conf c;
    struct sb_smtp *s;
    uv_loop_t loop;
    size_t i, n = 2000, ok = 0, conns;
    uint64_t t0, ms;

    SB_UNUSED(state);
    sink_conf(&k, &c, "bench", NULL);
    c.threads = 2;
    c.max_per_session = 100;
    s = client_new(&loop, &c);
    t0 = sb_mono_ms();
    for (i = 0; i < n; i++) {
        char to[64];

        snprintf(to, sizeof(to), "u%zu@example.org", i);
        assert_int_equal(submit_one(s, to, (int)i), 0);
    }
    run_until(&loop, n, 120000);
    ms = sb_mono_ms() - t0;
    close_and_drain(&loop, s);
    for (i = 0; i < n; i++) {
        assert_int_equal(res[i].calls, 1);
        ok += res[i].status == SB_SMTP_OK;
    }
    assert_int_equal(ok, n);
    assert_int_equal(sink_count(&k), n);
    conns = sink_connections(&k);
    assert_true(conns >= n / 100 && conns <= n / 100 + 2);
    printf("smtp throughput: %zu messages in %llu ms = %.0f msg/s "
           "(%zu SMTP sessions, 2 threads, aiosmtpd sink)\n",
           n, (unsigned long long)ms, ms ? n * 1000.0 / ms : 0.0, conns);
    sink_stop(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_build_basic, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_build_cyrillic_roundtrip,
                                        setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_build_names_quoting, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_build_qp_vs_base64, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_build_multipart, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_build_crlf_normalised,
                                        setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_build_refusals, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_build_line_lengths, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_send_one_session, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_send_reply_codes, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_send_data_reply, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_send_silent_timeout, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_send_dropped_and_refused,
                                        setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_tls_required_not_offered,
                                        setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_tls_verify, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_auth, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_dot_stuffing, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_close_cancels, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_close_from_callback, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_submit_refused, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_throughput, setup_tmp,
                                        teardown_tmp),
    };

    signal(SIGPIPE, SIG_IGN);
    /* SMTP_TEST_FILTER=test_auth runs matching cases only. */
    if (getenv("SMTP_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SMTP_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
