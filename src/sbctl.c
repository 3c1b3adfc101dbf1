/* sbctl.c - the operator's command line, a client of the HTTP API.
 *
 * sbctl talks to a running switchboard over HTTP with libcurl (blocking: it
 * is a short-lived command; one easy handle is reused, so the commands that
 * make several requests keep one connection). The server URL comes from
 * --url, $SB_URL or http://127.0.0.1:8080; the token from --token,
 * $SB_TOKEN or the file `sbctl login` writes
 * ($XDG_CONFIG_HOME/switchboard/token, mode 0600). The token is sent only in
 * the Authorization header and never printed.
 *
 * Commands are rows of one table (name, arguments, options, handler), which
 * also drives option checking and the usage text. People get aligned tables
 * (widths computed from the data, in code points, so Cyrillic lines up) and
 * local or relative times; --json prints the server's JSON as it came (tail:
 * one object per line). Exit codes scripts can trust: 0 ok, 1 the server
 * said no (4xx/5xx, its error printed), 2 usage, 3 cannot reach the server.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "template.h"
#include "tz.h"
#include "util.h"

enum { EX_OK = 0, EX_REFUSED = 1, EX_USAGE = 2, EX_UNREACHABLE = 3 };

#define CT_BODY_MAX (64u << 20)  /* largest answer we accept */
#define CT_TEXT_MAX 60           /* code points of a text excerpt */
#define CT_NAME_LOOKUPS 200      /* customers named per listing, at most */
#define CT_TAIL_POLL_MS 500
#define CT_TAIL_PAGE 1000        /* the server's maximum */

static struct {
    char *url;
    char *token;
    int json;
    CURL *h;
    CURLcode last;  /* outcome of the last transfer */
    int quiet;      /* 1: request() does not report unreachability */
} O;

static volatile sig_atomic_t STOP;

/* ---- HTTP ---------------------------------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct sb_buf *b = arg;

    if (sb_buf_append(b, p, sz * n) < 0)
        return 0;
    return sz * n;
}

/* Abort a transfer in flight once SIGINT/SIGTERM has arrived. */
static int on_progress(void *arg, curl_off_t dt, curl_off_t dn,
                       curl_off_t ut, curl_off_t un)
{
    return STOP != 0;
}

/* One request. Returns the HTTP status, or 0 when the server could not be
 * reached (said on stderr unless O.quiet); the body is left in out (always
 * initialised: the caller frees it). */
static long request(const char *method, const char *path, const char *body,
                    struct sb_buf *out)
{
    struct curl_slist *hdrs = NULL;
    char *url = sb_asprintf("%s%s", O.url, path), *auth = NULL;
    long status = 0;

    sb_buf_init(out, CT_BODY_MAX);
    if (!O.h)
        O.h = curl_easy_init();
    else
        curl_easy_reset(O.h);
    if (!O.h) {
        fprintf(stderr, "sbctl: cannot initialise libcurl\n");
        free(url);
        return 0;
    }
    curl_easy_setopt(O.h, CURLOPT_URL, url);
    curl_easy_setopt(O.h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(O.h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(O.h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(O.h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(O.h, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(O.h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(O.h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(O.h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(O.h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (O.token) {
        auth = sb_asprintf("Authorization: Bearer %s", O.token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(O.h, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(O.h, CURLOPT_HTTPHEADER, hdrs);
    O.last = curl_easy_perform(O.h);
    if (O.last == CURLE_OK)
        curl_easy_getinfo(O.h, CURLINFO_RESPONSE_CODE, &status);
    else if (!O.quiet && O.last != CURLE_ABORTED_BY_CALLBACK)
        fprintf(stderr, "sbctl: cannot reach %s: %s\n", O.url,
                curl_easy_strerror(O.last));
    curl_slist_free_all(hdrs);
    if (auth) {
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    free(url);
    return status;
}

/* Percent-encode one path segment or query value (new string). */
static char *esc(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    struct sb_buf b;

    sb_buf_init(&b, 0);
    sb_buf_appends(&b, "");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[3] = {'%', hex[c >> 4], hex[c & 15]};

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c >= '0' && c <= '9') || strchr("-._~", c))
            sb_buf_append(&b, s, 1);
        else
            sb_buf_append(&b, e, 3);
    }
    return sb_buf_steal(&b, NULL);
}

/* Map a status to an exit code; on a refusal print the server's error.
 * Frees the body unless the answer is a success. */
static int finish(long status, struct sb_buf *b)
{
    if (status == 0) {
        sb_buf_free(b);
        return EX_UNREACHABLE;
    }
    if (status < 200 || status >= 300) {
        json_t *j = json_loadb(b->data ? b->data : "", b->len, 0, NULL);
        const char *e = json_string_value(json_object_get(j, "error"));
        const char *f = json_string_value(json_object_get(j, "field"));

        fprintf(stderr, "sbctl: %ld %s%s%s%s\n", status, e ? e : "error",
                f ? " (" : "", f ? f : "", f ? ")" : "");
        json_decref(j);
        sb_buf_free(b);
        return EX_REFUSED;
    }
    return EX_OK;
}

static void print_body(const struct sb_buf *b)
{
    fwrite(b->data ? b->data : "", 1, b->len, stdout);
    if (b->len && b->data[b->len - 1] != '\n')
        putchar('\n');
}

/* Run a request and parse a JSON object answer. Returns an exit code; on
 * EX_OK *out is the document, and with --json it has been printed as it
 * came. */
static int call(const char *method, const char *path, const char *body,
                json_t **out)
{
    struct sb_buf b;
    long st = request(method, path, body, &b);
    int r = finish(st, &b);

    *out = NULL;
    if (r)
        return r;
    if (O.json)
        print_body(&b);
    *out = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
    sb_buf_free(&b);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        fprintf(stderr, "sbctl: the server's answer is not a JSON object\n");
        return EX_REFUSED;
    }
    return EX_OK;
}

/* ---- text: UTF-8, cells, times ------------------------------------------- */

/* Length of the valid UTF-8 sequence at p, 0 if invalid. */
static size_t u8_len(const unsigned char *p)
{
    unsigned char c = p[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80;
        unsigned char hi = c == 0xed ? 0x9f : 0xbf;

        if (p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80;
        unsigned char hi = c == 0xf4 ? 0x8f : 0xbf;

        if (p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 ||
            (p[3] & 0xc0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

/* A control character a terminal would act on: C0, DEL, C1, and the
 * bidirectional overrides and isolates (U+202A..E, U+2066..9). */
static int u8_is_control(const unsigned char *p, size_t n)
{
    if (n == 1)
        return p[0] < 0x20 || p[0] == 0x7f;
    if (n == 2)
        return p[0] == 0xc2 && p[1] < 0xa0;
    if (n == 3 && p[0] == 0xe2 && p[1] == 0x80)
        return p[2] >= 0xaa && p[2] <= 0xae;
    if (n == 3 && p[0] == 0xe2 && p[1] == 0x81)
        return p[2] >= 0xa6 && p[2] <= 0xa9;
    return 0;
}

/* Display width: code points (every cell is valid UTF-8 by now). */
static size_t u8_width(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

/* A printable one-line copy of s (new string): control characters become
 * one space (runs collapse), invalid bytes '?', leading and trailing
 * spaces go, and more than max code points (0: no limit) are cut with an
 * ellipsis. NULL or "" gives "-". */
static char *cell(const char *s, size_t max)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    struct sb_buf b;
    size_t cps = 0, cut = 0;
    int space = 1;

    sb_buf_init(&b, 0);
    sb_buf_appends(&b, "");
    while (*p) {
        size_t n = u8_len(p);

        if (n == 0) {
            sb_buf_append(&b, "?", 1);
            space = 0;
            cps++;
            p++;
        } else if (*p == ' ' || u8_is_control(p, n)) {
            if (!space) {
                sb_buf_append(&b, " ", 1);
                space = 1;
                cps++;
            }
            p += n;
        } else {
            sb_buf_append(&b, p, n);
            space = 0;
            cps++;
            p += n;
        }
    }
    while (b.len && b.data[b.len - 1] == ' ') {
        b.data[--b.len] = '\0';
        cps--;
    }
    if (b.len == 0) {
        sb_buf_free(&b);
        return sb_strdup("-");
    }
    if (max && cps > max) {
        /* Keep max - 1 code points, then U+2026. */
        for (size_t i = 0, seen = 0; i < b.len; i++) {
            if (((unsigned char)b.data[i] & 0xc0) != 0x80 &&
                seen++ == max - 1) {
                cut = i;
                break;
            }
        }
        b.len = cut;
        b.data[cut] = '\0';
        sb_buf_appends(&b, "\xe2\x80\xa6");
    }
    return sb_buf_steal(&b, NULL);
}

static const char *str(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));

    return v && *v ? v : "-";
}

static long long num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

/* "45s", "3m 12s", "2h 05m", "3d 04h". */
static void fmt_dur(long long ms, char *out, size_t n)
{
    long long s = ms < 0 ? 0 : ms / 1000;

    if (s < 60)
        snprintf(out, n, "%llds", s);
    else if (s < 3600)
        snprintf(out, n, "%lldm %02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(out, n, "%lldh %02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(out, n, "%lldd %02lldh", s / 86400, s % 86400 / 3600);
}

/* "3m ago" for an epoch time in ms; "-" for none (0 or absent). */
static void fmt_ago(long long at, char *out, size_t n)
{
    long long d = (long long)sb_now_ms() - at;
    char dur[32];

    if (at <= 0) {
        snprintf(out, n, "-");
        return;
    }
    if (d < 1000) {
        snprintf(out, n, "just now");
        return;
    }
    fmt_dur(d, dur, sizeof(dur));
    snprintf(out, n, "%s ago", dur);
}

static void fmt_local(long long at, const char *fmt, char *out, size_t n)
{
    time_t t = (time_t)(at / 1000);
    struct tm tm;

    if (at <= 0 || !localtime_r(&t, &tm) || !strftime(out, n, fmt, &tm))
        snprintf(out, n, "-");
}

/* ---- tables -------------------------------------------------------------- */

#define CT_COLS_MAX 12

struct ct_table {
    size_t ncols;
    const char *head[CT_COLS_MAX];
    int right[CT_COLS_MAX];  /* 1: right-aligned (numbers) */
    char **cells;            /* rows * ncols, each made by cell() */
    size_t rows, alloc;
};

/* Columns from a spec like "ID|>WAITING|NAME": '>' aligns right. */
static void tbl_init(struct ct_table *t, const char *const *cols)
{
    memset(t, 0, sizeof(*t));
    for (; *cols && t->ncols < CT_COLS_MAX; cols++, t->ncols++) {
        t->right[t->ncols] = (*cols)[0] == '>';
        t->head[t->ncols] = *cols + t->right[t->ncols];
    }
}

/* Add one row of ncols strings (borrowed; copied through cell()), each cut
 * to max code points when max > 0. */
static void tbl_row(struct ct_table *t, const char *const *v, size_t max)
{
    if ((t->rows + 1) * t->ncols > t->alloc) {
        t->alloc = t->alloc ? t->alloc * 2 : 16 * t->ncols;
        t->cells = sb_realloc(t->cells, t->alloc * sizeof(*t->cells));
    }
    for (size_t i = 0; i < t->ncols; i++)
        t->cells[t->rows * t->ncols + i] = cell(v[i], max);
    t->rows++;
}

static void tbl_pad(size_t n)
{
    for (; n; n--)
        putchar(' ');
}

static void tbl_line(const struct ct_table *t, const size_t *w,
                     const char *const *v)
{
    for (size_t i = 0; i < t->ncols; i++) {
        size_t cw = u8_width(v[i]);
        int last = i + 1 == t->ncols;

        if (i)
            fputs("  ", stdout);
        if (t->right[i])
            tbl_pad(w[i] - cw);
        fputs(v[i], stdout);
        if (!t->right[i] && !last)
            tbl_pad(w[i] - cw);
    }
    putchar('\n');
}

/* Print and free. */
static void tbl_print(struct ct_table *t)
{
    size_t w[CT_COLS_MAX];

    for (size_t i = 0; i < t->ncols; i++) {
        w[i] = u8_width(t->head[i]);
        for (size_t r = 0; r < t->rows; r++) {
            size_t cw = u8_width(t->cells[r * t->ncols + i]);
            if (cw > w[i])
                w[i] = cw;
        }
    }
    tbl_line(t, w, t->head);
    for (size_t r = 0; r < t->rows; r++)
        tbl_line(t, w, (const char *const *)&t->cells[r * t->ncols]);
    for (size_t i = 0; i < t->rows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = t->alloc = 0;
}

/* ---- commands: arguments ------------------------------------------------- */

enum {
    OPT_STATE = 1 << 0,
    OPT_QUEUE = 1 << 1,
    OPT_AGENT = 1 << 2,
    OPT_LIMIT = 1 << 3,
    OPT_SINCE = 1 << 4,
    OPT_COUNT = 1 << 5,
    OPT_DIR = 1 << 6,
    OPT_TZ = 1 << 7,
};

struct ct_args {
    char **pos;
    int npos;
    const char *state, *queue, *agent, *since;
    long long limit, count;
    const char *dir, *timezone;
};

struct ct_cmd {
    const char *name;
    const char *synopsis; /* arguments and options, for usage */
    const char *help;
    int min, max;         /* positional arguments */
    unsigned opts;        /* OPT_* accepted */
    int token;            /* 1: needs the token */
    int (*run)(struct ct_args *a);
};

/* ---- login and status ---------------------------------------------------- */

static char *token_path(void)
{
    const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");

    if (x && *x)
        return sb_asprintf("%s/switchboard/token", x);
    return sb_asprintf("%s/.config/switchboard/token", home ? home : ".");
}

static void load_token(void)
{
    const char *env = getenv("SB_TOKEN");
    char *p, line[512];
    FILE *f;

    if (O.token)
        return;
    if (env && *env) {
        O.token = sb_strdup(env);
        return;
    }
    p = token_path();
    f = fopen(p, "r");
    if (f) {
        if (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[0])
                O.token = sb_strdup(line);
        }
        memset(line, 0, sizeof(line));
        fclose(f);
    }
    free(p);
}

/* mkdir -p of the directories above path, mode 0700. */
static int make_parents(const char *path)
{
    char *d = sb_strdup(path);
    int r = 0;

    for (char *s = d + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(d, 0700) < 0 && errno != EEXIST)
            r = -1;
        *s = '/';
    }
    free(d);
    return r;
}

/* Write the token to path atomically, mode 0600. */
static int save_token(const char *path, const char *token)
{
    char *tmp = sb_asprintf("%s.%ld.tmp", path, (long)getpid());
    size_t n = strlen(token);
    int fd, ok;

    make_parents(path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
              0600);
    if (fd < 0) {
        free(tmp);
        return -1;
    }
    ok = fchmod(fd, 0600) == 0 && write(fd, token, n) == (ssize_t)n &&
         write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    if (close(fd) < 0)
        ok = 0;
    if (!ok || rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        errno = e;
        return -1;
    }
    free(tmp);
    return 0;
}

/* One line from stdin, without echo when it is a terminal. */
static int read_password(const char *user, char *pw, size_t n)
{
    struct termios old, quiet;
    int tty = isatty(0) && tcgetattr(0, &old) == 0, ok;

    if (tty) {
        fprintf(stderr, "password for %s: ", user);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(0, TCSAFLUSH, &quiet);
    }
    ok = fgets(pw, (int)n, stdin) != NULL;
    if (tty) {
        tcsetattr(0, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (!ok)
        return -1;
    pw[strcspn(pw, "\r\n")] = '\0';
    return 0;
}

static int cmd_login(struct ct_args *a)
{
    const char *user = a->pos[0];
    char pw[1100], *body, *p;
    json_t *j;
    int r;

    if (read_password(user, pw, sizeof(pw)) < 0) {
        fprintf(stderr, "sbctl: no password on stdin\n");
        return EX_USAGE;
    }
    j = json_pack("{s:s, s:s}", "username", user, "password", pw);
    memset(pw, 0, sizeof(pw));
    if (!j) {
        fprintf(stderr, "sbctl: the user name and password must be "
                        "UTF-8\n");
        return EX_USAGE;
    }
    body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    {
        /* The answer carries the token: never echo it with --json. */
        int json = O.json;
        O.json = 0;
        r = call("POST", "/api/v1/login", body, &j);
        O.json = json;
    }
    memset(body, 0, strlen(body));
    free(body);
    if (r)
        return r;
    if (!json_is_string(json_object_get(j, "token"))) {
        json_decref(j);
        fprintf(stderr, "sbctl: unexpected login answer\n");
        return EX_REFUSED;
    }
    p = token_path();
    if (save_token(p, json_string_value(json_object_get(j, "token"))) < 0) {
        fprintf(stderr, "sbctl: cannot write %s: %s\n", p, strerror(errno));
        free(p);
        json_decref(j);
        return EX_REFUSED;
    }
    if (O.json) {
        json_t *o = json_pack("{s:s, s:O?, s:O?, s:s}", "user", user, "role",
                              json_object_get(j, "role"), "expires_at",
                              json_object_get(j, "expires_at"), "token_file",
                              p);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("logged in as %s (%s); token saved in %s\n", user,
               str(j, "role"), p);
    }
    free(p);
    json_decref(j);
    return EX_OK;
}

static int cmd_status(struct ct_args *a)
{
    struct sb_buf b;
    long st = request("GET", "/readyz", NULL, &b);

    if (st == 0) {
        sb_buf_free(&b);
        return EX_UNREACHABLE;
    }
    if (O.json) {
        print_body(&b);
    } else {
        printf("%-7s %s\n", "server", O.url);
        printf("%-7s %s\n", "ready",
               st == 200 ? "yes" : "no (redis unavailable or draining)");
    }
    sb_buf_free(&b);
    return st == 200 ? EX_OK : EX_REFUSED;
}

/* ---- plain views (JSON for people too) ----------------------------------- */

static int show_json(const char *path)
{
    json_t *j;
    int r;

    r = call("GET", path, NULL, &j);
    if (r == EX_OK && !O.json) {
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (s)
            puts(s);
        free(s);
    }
    json_decref(j);
    return r;
}

static int cmd_customer(struct ct_args *a)
{
    char *id = esc(a->pos[0]), *p = sb_asprintf("/api/v1/customers/%s", id);
    int r = show_json(p);

    free(p);
    free(id);
    return r;
}

static int cmd_conversation(struct ct_args *a)
{
    char *id = esc(a->pos[0]);
    char *p = sb_asprintf("/api/v1/conversations/%s", id);
    int r = show_json(p);

    free(p);
    free(id);
    return r;
}

static int cmd_find(struct ct_args *a)
{
    char *v, *p;
    int r;

    if (strcmp(a->pos[0], "email") != 0 && strcmp(a->pos[0], "phone") != 0) {
        fprintf(stderr, "sbctl: find email|phone VALUE\n");
        return EX_USAGE;
    }
    v = esc(a->pos[1]);
    p = sb_asprintf("/api/v1/customers?%s=%s", a->pos[0], v);
    r = show_json(p);
    free(p);
    free(v);
    return r;
}

/* ---- tables of the routing state ----------------------------------------- */

/* The notification queues under the conversation queues (operators and
 * keys with the notify scope; others see only the first table). */
static void print_notify_queues(json_t *n)
{
    static const char *const cols[] = {
        ">BACKLOG", ">PENDING", ">SCHEDULED", ">DEAD", ">REJECTS",
        "CONSUMERS (PENDING)", NULL};
    static const char *const ccols[] = {"CHANNEL", "DRIVER", ">WAITING",
                                        ">SENDING", NULL};
    struct ct_table t;
    struct sb_buf cons;
    char v0[24], v1[24], v2[24], v3[24], v4[24], q[24], f[24];
    const char *v[6], *cv[4];
    const char *k;
    json_t *c;
    size_t i;

    printf("\nnotifications\n");
    tbl_init(&t, cols);
    snprintf(v0, sizeof(v0), "%lld", num(n, "backlog"));
    snprintf(v1, sizeof(v1), "%lld", num(n, "pending"));
    snprintf(v2, sizeof(v2), "%lld", num(n, "scheduled"));
    snprintf(v3, sizeof(v3), "%lld", num(n, "dead"));
    snprintf(v4, sizeof(v4), "%lld", num(n, "rejects"));
    sb_buf_init(&cons, 0);
    sb_buf_appends(&cons, "");
    json_array_foreach(json_object_get(n, "consumers"), i, c)
        sb_buf_printf(&cons, "%s%s (%lld)", i ? ", " : "", str(c, "name"),
                      num(c, "pending"));
    v[0] = v0;
    v[1] = v1;
    v[2] = v2;
    v[3] = v3;
    v[4] = v4;
    v[5] = cons.len ? cons.data : "-";
    tbl_row(&t, v, 0);
    tbl_print(&t);
    sb_buf_free(&cons);
    printf("\n");
    tbl_init(&t, ccols);
    json_object_foreach(json_object_get(n, "channels"), k, c)
    {
        snprintf(q, sizeof(q), "%lld", num(c, "queued"));
        snprintf(f, sizeof(f), "%lld", num(c, "inflight"));
        cv[0] = k;
        cv[1] = json_is_true(json_object_get(c, "driver")) ? "yes" : "no";
        cv[2] = q;
        cv[3] = f;
        tbl_row(&t, cv, 0);
    }
    tbl_print(&t);
}

static int cmd_queues(struct ct_args *a)
{
    static const char *const cols[] = {
        "QUEUE",   "STRATEGY", ">WAITING",      "LONGEST WAIT",
        ">ONLINE", ">BUSY",    ">SLA BREACHES", NULL};
    struct ct_table t;
    json_t *j, *q, *n = NULL;
    size_t i;
    int json = O.json, r;

    O.json = 0;
    r = call("GET", "/api/v1/queues", NULL, &j);
    if (r == EX_OK && call("GET", "/api/v1/notify/queues", NULL, &n) != EX_OK)
        n = NULL;
    O.json = json;
    if (r) {
        json_decref(j);
        return r;
    }
    if (json) {
        if (n)
            json_object_set(j, "notifications", n);
        char *s = json_dumps(j, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
        json_decref(j);
        json_decref(n);
        return EX_OK;
    }
    tbl_init(&t, cols);
    json_array_foreach(json_object_get(j, "queues"), i, q)
    {
        char strat[64], wait[32], online[24], busy[24], sla[24], waiting[24];
        const char *v[7];

        snprintf(strat, sizeof(strat), "%s%s", str(q, "strategy"),
                 json_is_true(json_object_get(q, "auto_assign")) ? " (auto)"
                                                                 : "");
        snprintf(waiting, sizeof(waiting), "%lld", num(q, "waiting"));
        if (num(q, "waiting") > 0)
            fmt_dur(num(q, "longest_wait"), wait, sizeof(wait));
        else
            snprintf(wait, sizeof(wait), "-");
        snprintf(online, sizeof(online), "%lld", num(q, "online"));
        snprintf(busy, sizeof(busy), "%lld", num(q, "busy"));
        if (num(q, "sla") > 0)
            snprintf(sla, sizeof(sla), "%lld", num(q, "sla_breaches"));
        else
            snprintf(sla, sizeof(sla), "-");
        v[0] = str(q, "name");
        v[1] = strat;
        v[2] = waiting;
        v[3] = wait;
        v[4] = online;
        v[5] = busy;
        v[6] = sla;
        tbl_row(&t, v, 0);
    }
    tbl_print(&t);
    if (n)
        print_notify_queues(n);
    json_decref(j);
    json_decref(n);
    return EX_OK;
}

/* ---- notifications and dead letters ------------------------------------- */

static int cmd_notify(struct ct_args *a)
{
    static const char *const cols[] = {">#", "CHANNEL", "TO", "RESULT",
                                       "REPORT", "WHEN", "REASON", NULL};
    char *id = esc(a->pos[0]);
    char *p = sb_asprintf("/api/v1/notifications/%s", id);
    struct ct_table t;
    json_t *j, *at;
    size_t i;
    int r = call("GET", p, NULL, &j);

    free(p);
    free(id);
    if (r || O.json) {
        json_decref(j);
        return r;
    }
    printf("%s  %s  customer %s  state %s", str(j, "id"), str(j, "event"),
           str(j, "customer"), str(j, "state"));
    if (json_string_value(json_object_get(j, "ref")))
        printf("  ref %s", str(j, "ref"));
    if (json_string_value(json_object_get(j, "reason")))
        printf("\n  %s", str(j, "reason"));
    printf("\n\n");
    tbl_init(&t, cols);
    json_array_foreach(json_object_get(j, "attempts"), i, at)
    {
        char n[16], when[64];
        char *reason = cell(str(at, "reason"), CT_TEXT_MAX);
        const char *v[7];

        snprintf(n, sizeof(n), "%lld", num(at, "n"));
        fmt_local(num(at, "at"), "%Y-%m-%d %H:%M:%S", when, sizeof(when));
        v[0] = n;
        v[1] = str(at, "channel");
        v[2] = str(at, "to");
        v[3] = str(at, "result");
        v[4] = str(at, "report");
        v[5] = when;
        v[6] = reason;
        tbl_row(&t, v, 0);
        free(reason);
    }
    tbl_print(&t);
    json_decref(j);
    return EX_OK;
}

/* "sbctl CMD OP ID": METHOD on path (a format with one %s: the ID,
 * escaped). EX_USAGE (with a message, *j NULL) when there is no ID. */
static int id_call(struct ct_args *a, const char *cmd, const char *method,
                   const char *path, const char *body, json_t **j)
{
    char *id, *p;
    int r;

    *j = NULL;
    if (a->npos != 2) {
        fprintf(stderr, "sbctl: %s %s ID\n", cmd, a->pos[0]);
        return EX_USAGE;
    }
    id = esc(a->pos[1]);
    p = sb_asprintf(path, id);
    r = call(method, p, body, j);
    free(p);
    free(id);
    return r;
}

static int cmd_dlq(struct ct_args *a)
{
    static const char *const cols[] = {"NOTIFICATION", "EVENT", "CUSTOMER",
                                       "DEAD SINCE", "REASON", NULL};
    const char *op = a->pos[0];
    struct ct_table t;
    json_t *j, *e;
    size_t i;
    char *p;
    int r;

    if (!strcmp(op, "retry") || !strcmp(op, "drop")) {
        int retry = !strcmp(op, "retry");
        r = id_call(a, "dlq", retry ? "POST" : "DELETE",
                    retry ? "/api/v1/dlq/%s/retry" : "/api/v1/dlq/%s",
                    retry ? "{}" : NULL, &j);
        if (r == EX_USAGE)
            return r;
        if (r == EX_OK && !O.json)
            printf("%s: %s\n", a->pos[1],
                   !strcmp(op, "retry") ? "queued again" : "dropped");
        json_decref(j);
        return r;
    }
    if (strcmp(op, "list") != 0 || a->npos != 1) {
        fprintf(stderr, "sbctl: dlq list|retry ID|drop ID\n");
        return EX_USAGE;
    }
    p = sb_asprintf("/api/v1/dlq?limit=%lld", a->limit > 0 ? a->limit : 50);
    r = call("GET", p, NULL, &j);
    free(p);
    if (r || O.json) {
        json_decref(j);
        return r;
    }
    tbl_init(&t, cols);
    json_array_foreach(json_object_get(j, "entries"), i, e)
    {
        char ago[32];
        char *reason = cell(str(e, "reason"), CT_TEXT_MAX);
        const char *v[5];

        fmt_ago(num(e, "at"), ago, sizeof(ago));
        v[0] = str(e, "id");
        v[1] = str(e, "event");
        v[2] = str(e, "customer");
        v[3] = ago;
        v[4] = reason;
        tbl_row(&t, v, 0);
        free(reason);
    }
    tbl_print(&t);
    if (json_string_value(json_object_get(j, "next_before")))
        printf("(more: the list shows the newest %lld)\n",
               a->limit > 0 ? a->limit : 50);
    json_decref(j);
    return EX_OK;
}

/* The quarantine of inbound mail: list, show (with the raw message),
 * replay. */
static int cmd_quarantine(struct ct_args *a)
{
    static const char *const cols[] = {"ID", "WHEN", "MAILBOX", "UID", "FROM",
                                       "REASON", NULL};
    const char *op = a->pos[0];
    struct ct_table t;
    json_t *j, *e;
    size_t i;
    char *p;
    int r;

    if (!strcmp(op, "show") || !strcmp(op, "replay")) {
        int replay = !strcmp(op, "replay");
        r = id_call(a, "quarantine", replay ? "POST" : "GET",
                    replay ? "/api/v1/quarantine/%s/replay"
                           : "/api/v1/quarantine/%s",
                    replay ? "{}" : NULL, &j);
        if (r == EX_USAGE)
            return r;
        if (r == EX_OK && !O.json) {
            if (!strcmp(op, "replay")) {
                printf("%s: %s%s%s\n", a->pos[1], str(j, "result"),
                       json_object_get(j, "reason") ? ": " : "",
                       json_object_get(j, "reason") ? str(j, "reason") : "");
            } else {
                char ago[32];
                fmt_ago(num(j, "at"), ago, sizeof(ago));
                printf("id:       %s\nwhen:     %s\nmailbox:  %s (uid %s)\n"
                       "from:     %s\nsubject:  %s\nsize:     %lld\n"
                       "tries:    %lld\nreason:   %s\n\n",
                       str(j, "id"), ago, str(j, "mailbox"), str(j, "uid"),
                       str(j, "from"), str(j, "subject"), num(j, "size"),
                       num(j, "tries"), str(j, "reason"));
                if (json_string_value(json_object_get(j, "raw")))
                    fputs(str(j, "raw"), stdout);
                else
                    printf("(not UTF-8: %zu bytes of base64 in --json)\n",
                           strlen(str(j, "raw_base64")));
            }
        }
        json_decref(j);
        return r;
    }
    if (strcmp(op, "list") != 0 || a->npos != 1) {
        fprintf(stderr, "sbctl: quarantine list|show ID|replay ID\n");
        return EX_USAGE;
    }
    p = sb_asprintf("/api/v1/quarantine?limit=%lld",
                    a->limit > 0 ? a->limit : 50);
    r = call("GET", p, NULL, &j);
    free(p);
    if (r || O.json) {
        json_decref(j);
        return r;
    }
    tbl_init(&t, cols);
    json_array_foreach(json_object_get(j, "entries"), i, e)
    {
        char ago[32];
        char *reason = cell(str(e, "reason"), CT_TEXT_MAX);
        char *from = cell(str(e, "from"), 40);
        const char *v[6];

        fmt_ago(num(e, "at"), ago, sizeof(ago));
        v[0] = str(e, "id");
        v[1] = ago;
        v[2] = str(e, "mailbox");
        v[3] = str(e, "uid");
        v[4] = from;
        v[5] = reason;
        tbl_row(&t, v, 0);
        free(reason);
        free(from);
    }
    tbl_print(&t);
    json_decref(j);
    return EX_OK;
}

/* Join a JSON array of strings with ", " (new string). */
static char *join(json_t *arr)
{
    struct sb_buf b;
    json_t *v;
    size_t i;

    sb_buf_init(&b, 0);
    sb_buf_appends(&b, "");
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v))
            continue;
        if (b.len)
            sb_buf_appends(&b, ", ");
        sb_buf_appends(&b, json_string_value(v));
    }
    return sb_buf_steal(&b, NULL);
}

static int cmd_agents(struct ct_args *a)
{
    static const char *const cols[] = {"AGENT",      "PRESENCE", ">ACTIVE",
                                       ">OFFERS",    "IDLE SINCE", "QUEUES",
                                       NULL};
    struct ct_table t;
    json_t *j, *g;
    size_t i;
    int r = call("GET", "/api/v1/agents", NULL, &j);

    if (r || O.json) {
        json_decref(j);
        return r;
    }
    tbl_init(&t, cols);
    json_array_foreach(json_object_get(j, "agents"), i, g)
    {
        char active[48], offers[24], idle[48], *queues;
        const char *v[6];
        size_t nof = json_array_size(json_object_get(g, "offers"));

        snprintf(active, sizeof(active), "%lld/%lld", num(g, "active"),
                 num(g, "capacity"));
        snprintf(offers, sizeof(offers), "%zu", nof);
        if (num(g, "active") == 0 && nof == 0 &&
            strcmp(str(g, "presence"), "offline") != 0)
            fmt_ago(num(g, "idle_since"), idle, sizeof(idle));
        else
            snprintf(idle, sizeof(idle), "-");
        queues = join(json_object_get(g, "queues"));
        v[0] = str(g, "name");
        v[1] = str(g, "presence");
        v[2] = active;
        v[3] = offers;
        v[4] = idle;
        v[5] = queues;
        tbl_row(&t, v, 0);
        free(queues);
    }
    tbl_print(&t);
    json_decref(j);
    return EX_OK;
}

/* The customers' names for a listing: {id: name}, looked up one by one
 * (at most CT_NAME_LOOKUPS); a failed lookup leaves the name out. */
static json_t *customer_names(json_t *convs)
{
    json_t *names = json_object(), *c;
    size_t i, looked = 0;
    int quiet = O.quiet;

    O.quiet = 1;
    json_array_foreach(convs, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "customer"));
        struct sb_buf b;
        char *e, *p;
        long st;

        if (!id || json_object_get(names, id) || looked++ >= CT_NAME_LOOKUPS)
            continue;
        e = esc(id);
        p = sb_asprintf("/api/v1/customers/%s", e);
        st = request("GET", p, NULL, &b);
        json_object_set_new(names, id, json_null());
        if (st == 200) {
            json_t *cu = json_loadb(b.data, b.len, 0, NULL);
            json_t *n = json_object_get(cu, "name");
            if (json_is_string(n))
                json_object_set(names, id, n);
            json_decref(cu);
        }
        sb_buf_free(&b);
        free(p);
        free(e);
        if (st == 0)
            break;
    }
    O.quiet = quiet;
    return names;
}

static int cmd_conversations(struct ct_args *a)
{
    static const char *const cols[] = {"ID",    "CUSTOMER", "NAME",
                                       "CHANNEL", "STATE",  "QUEUE",
                                       "AGENT", ">AGE",     "SUBJECT",
                                       NULL};
    const char *keys[] = {"state", "queue", "agent"};
    const char *vals[] = {a->state, a->queue, a->agent};
    struct sb_buf path;
    struct ct_table t;
    json_t *j, *c, *names;
    size_t i;
    int r;

    sb_buf_init(&path, 0);
    sb_buf_appends(&path, "/api/v1/conversations");
    for (i = 0; i < 3; i++) {
        char *e;
        if (!vals[i])
            continue;
        e = esc(vals[i]);
        sb_buf_printf(&path, "%c%s=%s", strchr(path.data, '?') ? '&' : '?',
                      keys[i], e);
        free(e);
    }
    if (a->limit)
        sb_buf_printf(&path, "%climit=%lld",
                      strchr(path.data, '?') ? '&' : '?', a->limit);
    r = call("GET", path.data, NULL, &j);
    sb_buf_free(&path);
    if (r || O.json) {
        json_decref(j);
        return r;
    }
    names = customer_names(json_object_get(j, "conversations"));
    tbl_init(&t, cols);
    json_array_foreach(json_object_get(j, "conversations"), i, c)
    {
        char age[32];
        const char *v[9];
        long long created = num(c, "created");

        if (created > 0)
            fmt_dur((long long)sb_now_ms() - created, age, sizeof(age));
        else
            snprintf(age, sizeof(age), "-");
        v[0] = str(c, "id");
        v[1] = str(c, "customer");
        v[2] = json_string_value(json_object_get(names, v[1]));
        v[3] = str(c, "channel");
        v[4] = str(c, "state");
        v[5] = str(c, "queue");
        v[6] = str(c, "agent");
        v[7] = age;
        v[8] = str(c, "subject");
        tbl_row(&t, v, 40);
    }
    tbl_print(&t);
    json_decref(names);
    json_decref(j);
    return EX_OK;
}

/* Subject, else text: what an excerpt shows. */
static const char *excerpt_of(json_t *e)
{
    const char *s = json_string_value(json_object_get(e, "subject"));

    if (s && *s)
        return s;
    return json_string_value(json_object_get(e, "text"));
}

static int cmd_timeline(struct ct_args *a)
{
    static const char *const cols[] = {"WHEN", "CHANNEL", "DIR",
                                       "TYPE", "CONV",    "AGENT",
                                       "SUBJECT / TEXT", NULL};
    long long limit = 50;
    struct ct_table t;
    json_t *j, *e;
    char *id, *path;
    size_t i;
    int r;

    if (a->npos == 2 && (sb_parse_ll(a->pos[1], &limit) < 0 || limit < 1)) {
        fprintf(stderr, "sbctl: LIMIT must be a positive number\n");
        return EX_USAGE;
    }
    id = esc(a->pos[0]);
    path = sb_asprintf("/api/v1/customers/%s/timeline?limit=%lld", id, limit);
    r = call("GET", path, NULL, &j);
    free(path);
    free(id);
    if (r || O.json) {
        json_decref(j);
        return r;
    }
    tbl_init(&t, cols);
    json_array_foreach(json_object_get(j, "entries"), i, e)
    {
        char when[32];
        char *text = cell(excerpt_of(e), CT_TEXT_MAX);
        const char *v[7];

        fmt_local(num(e, "at"), "%Y-%m-%d %H:%M:%S", when, sizeof(when));
        v[0] = when;
        v[1] = str(e, "channel");
        v[2] = str(e, "direction");
        v[3] = str(e, "type");
        v[4] = str(e, "conversation");
        v[5] = str(e, "agent");
        v[6] = text;
        tbl_row(&t, v, 0);
        free(text);
    }
    tbl_print(&t);
    json_decref(j);
    return EX_OK;
}

/* ---- tail ---------------------------------------------------------------- */

static void on_stop_signal(int sig)
{
    STOP = 1;
}

/* Sleep ms, waking early when a stop signal arrives. */
static void nap(long ms)
{
    for (long left = ms; left > 0 && !STOP; left -= 50) {
        struct timespec ts = {0, (left < 50 ? left : 50) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Fixed widths, so that lines written as they arrive still line up. */
static const struct {
    const char *head;
    size_t width;
} TAIL_COLS[] = {
    {"TIME", 14}, {"CHANNEL", 7}, {"DIR", 8},   {"TYPE", 10},
    {"CUSTOMER", 9}, {"CONV", 9}, {"AGENT", 10}, {"SUBJECT / TEXT", 0},
};

static void tail_line(const char *const *v)
{
    for (size_t i = 0; i < SB_ARRAY_LEN(TAIL_COLS); i++) {
        size_t w = u8_width(v[i]);

        if (i)
            fputs("  ", stdout);
        fputs(v[i], stdout);
        if (TAIL_COLS[i].width > w)
            tbl_pad(TAIL_COLS[i].width - w);
    }
    putchar('\n');
}

static void tail_entry(json_t *e)
{
    static const char *const keys[] = {NULL,       "channel",  "direction",
                                       "type",     "customer", "conversation",
                                       "agent",    NULL};
    char when[32], *v[SB_ARRAY_LEN(TAIL_COLS)];

    if (O.json) {
        char *s = json_dumps(e, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
        return;
    }
    fmt_local(num(e, "at"), "%m-%d %H:%M:%S", when, sizeof(when));
    v[0] = sb_strdup(when);
    for (size_t i = 1; i < 7; i++)
        v[i] = cell(json_string_value(json_object_get(e, keys[i])), 24);
    v[7] = cell(excerpt_of(e), CT_TEXT_MAX);
    tail_line((const char *const *)v);
    for (size_t i = 0; i < SB_ARRAY_LEN(v); i++)
        free(v[i]);
}

static int cmd_tail(struct ct_args *a)
{
    struct sigaction sa;
    char *after;
    long long printed = 0;
    int down = 0, r = EX_OK;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (a->since)
        after = sb_strdup(a->since);
    else
        after = sb_asprintf("%lld", (long long)sb_now_ms());
    if (!O.json) {
        const char *h[SB_ARRAY_LEN(TAIL_COLS)];
        for (size_t i = 0; i < SB_ARRAY_LEN(TAIL_COLS); i++)
            h[i] = TAIL_COLS[i].head;
        tail_line(h);
    }
    fflush(stdout);
    O.quiet = 1;
    while (!STOP && (!a->count || printed < a->count)) {
        long long want = CT_TAIL_PAGE;
        struct sb_buf b;
        char *e = esc(after), *path;
        long st;
        json_t *j, *ent, *next;
        size_t i, n;

        if (a->count && a->count - printed < want)
            want = a->count - printed;
        path = sb_asprintf("/api/v1/log?after=%s&limit=%lld", e, want);
        free(e);
        st = request("GET", path, NULL, &b);
        free(path);
        if (STOP) {
            sb_buf_free(&b);
            break;
        }
        if (st == 0 || st >= 500) {
            if (!down) {
                if (st)
                    fprintf(stderr, "sbctl: %s answers %ld; retrying\n",
                            O.url, st);
                else
                    fprintf(stderr, "sbctl: cannot reach %s: %s; retrying\n",
                            O.url, curl_easy_strerror(O.last));
                down = 1;
            }
            sb_buf_free(&b);
            nap(CT_TAIL_POLL_MS);
            continue;
        }
        if (finish(st, &b)) {
            r = EX_REFUSED;
            break;
        }
        if (down) {
            fprintf(stderr, "sbctl: %s is back\n", O.url);
            down = 0;
        }
        j = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
        sb_buf_free(&b);
        if (!json_is_array(json_object_get(j, "entries"))) {
            fprintf(stderr, "sbctl: unexpected answer from /api/v1/log\n");
            json_decref(j);
            r = EX_REFUSED;
            break;
        }
        n = json_array_size(json_object_get(j, "entries"));
        json_array_foreach(json_object_get(j, "entries"), i, ent)
        {
            if (a->count && printed >= a->count)
                break;
            tail_entry(ent);
            printed++;
        }
        fflush(stdout);
        next = json_object_get(j, "next_after");
        if (json_is_string(next)) {
            free(after);
            after = sb_strdup(json_string_value(next));
        }
        json_decref(j);
        if ((long long)n < want)
            nap(CT_TAIL_POLL_MS);
    }
    free(after);
    return r;
}

/* ---- actions ------------------------------------------------------------- */

/* Say what a step left the conversation as. */
static void say_conv(json_t *c)
{
    const char *agent = str(c, "agent"), *queue = str(c, "queue");

    printf("%s: %s", str(c, "id"), str(c, "state"));
    if (strcmp(agent, "-") != 0)
        printf(", agent %s", agent);
    if (strcmp(queue, "-") != 0)
        printf(", queue %s", queue);
    if (num(c, "position") > 0)
        printf(", position %lld", num(c, "position"));
    putchar('\n');
}

static int conv_step(const char *conv, const char *step, json_t *body)
{
    char *id = esc(conv);
    char *path = sb_asprintf("/api/v1/conversations/%s/%s", id, step);
    char *b = json_dumps(body, JSON_COMPACT);
    json_t *j;
    int r;

    free(id);
    if (!b) {
        free(path);
        fprintf(stderr, "sbctl: arguments must be UTF-8\n");
        return EX_USAGE;
    }
    r = call("POST", path, b, &j);
    if (r == EX_OK && !O.json) {
        if (strcmp(step, "notes") == 0)
            printf("note %s added to %s\n", str(j, "id"),
                   str(j, "conversation"));
        else
            say_conv(j);
    }
    json_decref(j);
    free(b);
    free(path);
    return r;
}

static int cmd_step(struct ct_args *a, const char *step)
{
    json_t *body = json_object();
    int r = conv_step(a->pos[0], step, body);

    json_decref(body);
    return r;
}

static int cmd_resolve(struct ct_args *a)
{
    return cmd_step(a, "resolve");
}

static int cmd_accept(struct ct_args *a)
{
    return cmd_step(a, "accept");
}

static int cmd_decline(struct ct_args *a)
{
    return cmd_step(a, "decline");
}

static int cmd_transfer(struct ct_args *a)
{
    json_t *body;
    int r;

    if (!a->agent == !a->queue) {
        fprintf(stderr, "sbctl: transfer takes --agent A or --queue Q\n");
        return EX_USAGE;
    }
    body = a->agent ? json_pack("{s:s}", "agent", a->agent)
                    : json_pack("{s:s}", "queue", a->queue);
    if (!body) {
        fprintf(stderr, "sbctl: arguments must be UTF-8\n");
        return EX_USAGE;
    }
    r = conv_step(a->pos[0], "transfer", body);
    json_decref(body);
    return r;
}

static int cmd_note(struct ct_args *a)
{
    json_t *body = json_pack("{s:s}", "text", a->pos[1]);
    int r;

    if (!body) {
        fprintf(stderr, "sbctl: the note must be UTF-8\n");
        return EX_USAGE;
    }
    r = conv_step(a->pos[0], "notes", body);
    json_decref(body);
    return r;
}

static int cmd_presence(struct ct_args *a)
{
    const char *s = a->pos[1];
    json_t *body, *j;
    char *id, *path, *b;
    int r;

    if (strcmp(s, "online") && strcmp(s, "away") && strcmp(s, "offline")) {
        fprintf(stderr, "sbctl: presence is online, away or offline\n");
        return EX_USAGE;
    }
    body = json_pack("{s:s}", "state", s);
    b = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    id = esc(a->pos[0]);
    path = sb_asprintf("/api/v1/agents/%s/presence", id);
    free(id);
    r = call("PUT", path, b, &j);
    if (r == EX_OK && !O.json)
        printf("%s: %s (active %lld/%lld)\n", str(j, "name"),
               str(j, "presence"), num(j, "active"), num(j, "capacity"));
    json_decref(j);
    free(path);
    free(b);
    return r;
}

/* ---- templates (local: no server) ---------------------------------------- */

/* --dir, else $SB_TEMPLATES, else ./config/templates, else the installed
 * directory. */
static const char *template_dir(const char *opt)
{
    const char *env = getenv("SB_TEMPLATES");
    struct stat st;

    if (opt)
        return opt;
    if (env && *env)
        return env;
    if (stat("config/templates", &st) == 0 && S_ISDIR(st.st_mode))
        return "config/templates";
    return "/etc/switchboard/templates";
}

/* The notification's data object from a file or "-" (stdin). */
static json_t *template_data(const char *path)
{
    json_error_t je;
    json_t *j = strcmp(path, "-") == 0
                    ? json_loadf(stdin, JSON_REJECT_DUPLICATES, &je)
                    : json_load_file(path, JSON_REJECT_DUPLICATES, &je);

    if (!j) {
        if (je.line > 0)
            fprintf(stderr, "sbctl: %s:%d: %s\n",
                    strcmp(path, "-") == 0 ? "stdin" : path, je.line,
                    je.text);
        else
            fprintf(stderr, "sbctl: %s\n", je.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        fprintf(stderr, "sbctl: %s: the data must be a JSON object\n",
                strcmp(path, "-") == 0 ? "stdin" : path);
        json_decref(j);
        return NULL;
    }
    return j;
}

static int cmd_template(struct ct_args *a)
{
    static const char *const channels[] = {"email", "sms", "chat",
                                           "webhook"};
    const char *event = a->pos[1], *channel = a->pos[2];
    const char *locale = a->pos[3], *dir = template_dir(a->dir), *used;
    struct sb_tpl_set *set = NULL;
    const struct sb_tpl *t;
    struct sb_tpl_env env;
    struct sb_rendered out = {NULL, NULL, NULL};
    json_t *data = NULL, *ctx = NULL;
    char err[512];
    int r = EX_REFUSED, known = 0;

    if (strcmp(a->pos[0], "render") != 0) {
        fprintf(stderr, "sbctl: template: unknown action '%s' (there is "
                        "only render)\n", a->pos[0]);
        return EX_USAGE;
    }
    for (size_t i = 0; i < SB_ARRAY_LEN(channels); i++)
        known |= strcmp(channel, channels[i]) == 0;
    if (!known) {
        fprintf(stderr, "sbctl: unknown channel '%s' (email, sms, chat or "
                        "webhook)\n", channel);
        return EX_USAGE;
    }
    if (a->timezone && !sb_tz_valid(a->timezone)) {
        fprintf(stderr, "sbctl: unknown time zone '%s'\n", a->timezone);
        return EX_USAGE;
    }
    if (!(set = sb_tpl_load(dir, err, sizeof(err)))) {
        fprintf(stderr, "sbctl: %s\n", err);
        goto out;
    }
    t = sb_tpl_find(set, event, channel, locale, NULL, &used);
    if (!t) {
        fprintf(stderr, "sbctl: no template for event '%s', channel '%s', "
                        "locale '%s' in %s\n", event, channel, locale, dir);
        goto out;
    }
    if (!(data = template_data(a->pos[4])))
        goto out;
    ctx = json_pack("{s:O, s:{s:s, s:s}, s:s, s:s, s:{s:s}}", "data", data,
                    "customer", "id", "preview", "name", "Customer",
                    "event", event, "ref", "preview", "notification", "id",
                    "preview");
    env.locale = used;
    env.timezone = a->timezone;
    if (!ctx || sb_tpl_render(t, ctx, &env, &out, err, sizeof(err)) < 0) {
        fprintf(stderr, "sbctl: %s/%s.%s: %s\n", event, channel, used,
                ctx ? err : "cannot build the context");
        goto out;
    }
    printf("locale: %s\n", used);
    if (out.subject)
        printf("Subject: %s\n", out.subject);
    printf("\n%s\n", out.text);
    if (out.html)
        printf("\n----- html -----\n%s\n", out.html);
    r = EX_OK;
out:
    sb_rendered_free(&out);
    json_decref(ctx);
    json_decref(data);
    sb_tpl_free(set);
    sb_tz_cleanup();
    return r;
}

/* ---- the command table, usage, main -------------------------------------- */

static const struct ct_cmd CMDS[] = {
    {"login", "USER", "read the password on stdin, save a token",
     1, 1, 0, 0, cmd_login},
    {"status", "", "is the server ready", 0, 0, 0, 0, cmd_status},
    {"queues", "", "waiting, longest wait, agents, SLA; notification queues",
     0, 0, 0, 1, cmd_queues},
    {"notify", "ID", "a notification and every attempt", 1, 1, 0, 1,
     cmd_notify},
    {"dlq", "list [--limit N] | retry ID | drop ID",
     "dead-letter queue of notifications", 1, 2, OPT_LIMIT, 1, cmd_dlq},
    {"quarantine", "list [--limit N] | show ID | replay ID",
     "inbound mail that could not be taken in", 1, 2, OPT_LIMIT, 1,
     cmd_quarantine},
    {"agents", "", "presence, load, offers, idle since", 0, 0, 0, 1,
     cmd_agents},
    {"conversations", "[--state S] [--queue Q] [--agent A] [--limit N]",
     "open ones (or in state S), newest first", 0, 0,
     OPT_STATE | OPT_QUEUE | OPT_AGENT | OPT_LIMIT, 1, cmd_conversations},
    {"conversation", "ID", "one conversation", 1, 1, 0, 1, cmd_conversation},
    {"customer", "ID", "one customer", 1, 1, 0, 1, cmd_customer},
    {"find", "email|phone VALUE", "look a customer up by identity", 2, 2, 0,
     1, cmd_find},
    {"timeline", "CUSTOMER [LIMIT]", "a customer's contacts, newest first", 1,
     2, 0, 1, cmd_timeline},
    {"tail", "[--since MS] [--count N]",
     "follow the contact log (Ctrl-C stops)", 0, 0,
     OPT_SINCE | OPT_COUNT, 1, cmd_tail},
    {"presence", "AGENT online|away|offline", "set an agent's presence", 2,
     2, 0, 1, cmd_presence},
    {"accept", "CONV", "accept an offer (as yourself)", 1, 1, 0, 1,
     cmd_accept},
    {"decline", "CONV", "decline an offer (as yourself)", 1, 1, 0, 1,
     cmd_decline},
    {"resolve", "CONV", "resolve a conversation", 1, 1, 0, 1, cmd_resolve},
    {"transfer", "CONV --agent A | --queue Q",
     "transfer to an agent or a queue", 1, 1, OPT_AGENT | OPT_QUEUE, 1,
     cmd_transfer},
    {"note", "CONV TEXT", "add an internal note", 2, 2, 0, 1, cmd_note},
    {"template", "render EVENT CHANNEL LOCALE DATA.json [--dir DIR] "
     "[--timezone TZ]", "render a template locally (DATA.json: file or -)",
     5, 5, OPT_DIR | OPT_TZ, 0,
     cmd_template},
    {NULL, NULL, NULL, 0, 0, 0, 0, NULL},
};

static const struct ct_cmd *find_cmd(const char *name)
{
    for (const struct ct_cmd *c = CMDS; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sbctl [--url URL] [--token TOKEN] [--json] COMMAND "
               "[ARGS]\n\ncommands:\n");
    for (const struct ct_cmd *c = CMDS; c->name; c++) {
        char *s = sb_asprintf("%s %s", c->name, c->synopsis);
        if (strlen(s) <= 34)
            fprintf(f, "  %-34s  %s\n", s, c->help);
        else
            fprintf(f, "  %s\n  %-34s  %s\n", s, "", c->help);
        free(s);
    }
    fprintf(f,
            "\nThe server: --url, $SB_URL or http://127.0.0.1:8080. The "
            "token: --token,\n$SB_TOKEN or the file `sbctl login` writes "
            "($XDG_CONFIG_HOME/switchboard/token).\n--json prints the "
            "server's JSON (tail: one object per line).\nExit: 0 ok, 1 the "
            "server refused, 2 usage, 3 server unreachable.\n");
}

static void cmd_usage(FILE *f, const struct ct_cmd *c)
{
    fprintf(f, "usage: sbctl [--url URL] [--token TOKEN] [--json] %s %s\n"
               "  %s\n",
            c->name, c->synopsis, c->help);
}

enum {
    LO_STATE = 256, LO_QUEUE, LO_AGENT, LO_LIMIT, LO_SINCE, LO_COUNT,
    LO_DIR, LO_TZ
};

static const struct option OPTS[] = {
    {"url", required_argument, NULL, 'u'},
    {"token", required_argument, NULL, 't'},
    {"json", no_argument, NULL, 'j'},
    {"help", no_argument, NULL, 'h'},
    {"state", required_argument, NULL, LO_STATE},
    {"queue", required_argument, NULL, LO_QUEUE},
    {"agent", required_argument, NULL, LO_AGENT},
    {"limit", required_argument, NULL, LO_LIMIT},
    {"since", required_argument, NULL, LO_SINCE},
    {"count", required_argument, NULL, LO_COUNT},
    {"dir", required_argument, NULL, LO_DIR},
    {"timezone", required_argument, NULL, LO_TZ},
    {NULL, 0, NULL, 0},
};

/* A global option; 1 if c was one. */
static int global_opt(int c, const char *arg)
{
    switch (c) {
    case 'u':
        free(O.url);
        O.url = sb_strdup(arg);
        return 1;
    case 't':
        free(O.token);
        O.token = sb_strdup(arg);
        return 1;
    case 'j':
        O.json = 1;
        return 1;
    }
    return 0;
}

static int positive(const char *s, long long *out)
{
    return sb_parse_ll(s, out) == 0 && *out > 0;
}

/* Parse the command's own argv (argv[0] is the command). Returns -1 to
 * go on, else an exit code. */
static int parse_cmd(const struct ct_cmd *cmd, int argc, char **argv,
                     struct ct_args *a)
{
    static const unsigned bit[] = {OPT_STATE, OPT_QUEUE, OPT_AGENT,
                                   OPT_LIMIT, OPT_SINCE, OPT_COUNT,
                                   OPT_DIR, OPT_TZ};
    int c;

    memset(a, 0, sizeof(*a));
    optind = 0; /* glibc: start afresh, permuting (options anywhere) */
    while ((c = getopt_long(argc, argv, "u:t:jh", OPTS, NULL)) != -1) {
        if (global_opt(c, optarg))
            continue;
        if (c == 'h') {
            cmd_usage(stdout, cmd);
            return EX_OK;
        }
        if (c < LO_STATE || !(cmd->opts & bit[c - LO_STATE])) {
            if (c >= LO_STATE)
                fprintf(stderr, "sbctl: %s takes no --%s\n", cmd->name,
                        OPTS[4 + c - LO_STATE].name);
            goto usage;
        }
        switch (c) {
        case LO_STATE: a->state = optarg; break;
        case LO_QUEUE: a->queue = optarg; break;
        case LO_AGENT: a->agent = optarg; break;
        case LO_DIR: a->dir = optarg; break;
        case LO_TZ: a->timezone = optarg; break;
        case LO_SINCE:
            if (!optarg[0] ||
                strspn(optarg, "0123456789-") != strlen(optarg)) {
                fprintf(stderr, "sbctl: --since takes a time in ms or a "
                                "contact id\n");
                goto usage;
            }
            a->since = optarg;
            break;
        case LO_LIMIT:
        case LO_COUNT:
            if (!positive(optarg, c == LO_LIMIT ? &a->limit : &a->count)) {
                fprintf(stderr, "sbctl: --%s takes a positive number\n",
                        OPTS[4 + c - LO_STATE].name);
                goto usage;
            }
            break;
        }
    }
    a->pos = argv + optind;
    a->npos = argc - optind;
    if (a->npos < cmd->min || a->npos > cmd->max) {
        fprintf(stderr, "sbctl: %s: %s arguments\n", cmd->name,
                a->npos < cmd->min ? "missing" : "too many");
        goto usage;
    }
    return -1;
usage:
    cmd_usage(stderr, cmd);
    return EX_USAGE;
}

int main(int argc, char **argv)
{
    const struct ct_cmd *cmd;
    struct ct_args a;
    const char *env = getenv("SB_URL");
    int c, r;

    O.url = sb_strdup(env && *env ? env : "http://127.0.0.1:8080");
    opterr = 1;
    while ((c = getopt_long(argc, argv, "+u:t:jh", OPTS, NULL)) != -1) {
        if (global_opt(c, optarg))
            continue;
        if (c == 'h') {
            usage(stdout);
            r = EX_OK;
            goto out;
        }
        usage(stderr);
        r = EX_USAGE;
        goto out;
    }
    if (optind >= argc) {
        fprintf(stderr, "sbctl: no command\n");
        usage(stderr);
        r = EX_USAGE;
        goto out;
    }
    cmd = find_cmd(argv[optind]);
    if (!cmd) {
        fprintf(stderr, "sbctl: unknown command '%s'\n", argv[optind]);
        usage(stderr);
        r = EX_USAGE;
        goto out;
    }
    r = parse_cmd(cmd, argc - optind, argv + optind, &a);
    if (r >= 0)
        goto out;
    for (size_t n = strlen(O.url); n > 1 && O.url[n - 1] == '/'; n--)
        O.url[n - 1] = '\0';
    if (cmd->token)
        load_token();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    r = cmd->run(&a);
    if (r == EX_USAGE)
        cmd_usage(stderr, cmd);
    if (O.h)
        curl_easy_cleanup(O.h);
    curl_global_cleanup();
out:
    if (O.token) {
        memset(O.token, 0, strlen(O.token));
        free(O.token);
    }
    free(O.url);
    if (fflush(stdout) != 0 && r == EX_OK)
        r = EX_REFUSED;
    return r;
}
