/* sbctl.c - the operator's command line, a client of the HTTP API.
 *
 * sbctl talks to a running switchboard over HTTP with libcurl (blocking: it
 * is a short-lived command). The server URL comes from --url, $SB_URL or
 * http://127.0.0.1:8080; the token from --token, $SB_TOKEN or the file
 * `sbctl login` writes ($XDG_CONFIG_HOME/switchboard/token, mode 0600).
 * Tables for people, --json for scripts. Exit codes: 0 ok, 1 the server said
 * no (4xx/5xx), 2 usage, 3 cannot reach the server.
 */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

enum { EX_OK = 0, EX_REFUSED = 1, EX_USAGE = 2, EX_UNREACHABLE = 3 };

static struct {
    const char *url;
    char *token;
    int json;
} O;

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
    struct sb_buf *b = arg;

    if (sb_buf_append(b, p, sz * n) < 0)
        return 0;
    return sz * n;
}

/* One request. Returns the HTTP status (0 when unreachable); the body is
 * left in out. */
static long request(const char *method, const char *path, const char *body,
                    struct sb_buf *out)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char *url = sb_asprintf("%s%s", O.url, path), *auth = NULL;
    long status = 0;

    sb_buf_init(out, 64 << 20);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (O.token) {
        auth = sb_asprintf("Authorization: Bearer %s", O.token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "sbctl: cannot reach %s\n", O.url);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(url);
    free(auth);
    return status;
}

static char *token_path(void)
{
    const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");

    if (x && *x)
        return sb_asprintf("%s/switchboard/token", x);
    return sb_asprintf("%s/.config/switchboard/token", home ? home : ".");
}

static void load_token(void)
{
    char *p, line[256];
    FILE *f;

    if (O.token || (getenv("SB_TOKEN") && (O.token = sb_strdup(
                                               getenv("SB_TOKEN")))))
        return;
    p = token_path();
    f = fopen(p, "r");
    if (f) {
        if (fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\r\n")] = '\0';
            O.token = sb_strdup(line);
        }
        fclose(f);
    }
    free(p);
}

/* Print the server's error and map the status to an exit code. */
static int finish(long status, struct sb_buf *b)
{
    if (status == 0) {
        sb_buf_free(b);
        return EX_UNREACHABLE;
    }
    if (status >= 400) {
        json_t *j = json_loadb(b->data ? b->data : "", b->len, 0, NULL);
        const char *e = j ? json_string_value(json_object_get(j, "error"))
                          : NULL;
        fprintf(stderr, "sbctl: %ld %s\n", status, e ? e : "error");
        json_decref(j);
        sb_buf_free(b);
        return EX_REFUSED;
    }
    return EX_OK;
}

static void print_json(struct sb_buf *b)
{
    fwrite(b->data ? b->data : "", 1, b->len, stdout);
    if (b->len && b->data[b->len - 1] != '\n')
        putchar('\n');
}

static const char *str(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);

    if (json_is_string(v))
        return json_string_value(v);
    return "-";
}

static void fmt_ms(json_t *v, char *out, size_t n)
{
    time_t t;
    struct tm tm;

    if (!json_is_integer(v)) {
        snprintf(out, n, "-");
        return;
    }
    t = (time_t)(json_integer_value(v) / 1000);
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

static int cmd_login(const char *user)
{
    char pw[1100], *body, *p;
    struct sb_buf b;
    long st;
    json_t *j;
    FILE *f;

    if (isatty(0))
        fprintf(stderr, "password for %s: ", user);
    if (!fgets(pw, sizeof(pw), stdin))
        return EX_USAGE;
    pw[strcspn(pw, "\r\n")] = '\0';
    j = json_pack("{s:s, s:s}", "username", user, "password", pw);
    body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    st = request("POST", "/api/v1/login", body, &b);
    free(body);
    if (finish(st, &b))
        return st ? EX_REFUSED : EX_UNREACHABLE;
    j = json_loadb(b.data, b.len, 0, NULL);
    sb_buf_free(&b);
    if (!j || !json_is_string(json_object_get(j, "token"))) {
        json_decref(j);
        fprintf(stderr, "sbctl: unexpected login answer\n");
        return EX_REFUSED;
    }
    p = token_path();
    {
        char *dir = sb_strdup(p);
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = '\0';
            char *parent = sb_strdup(dir);
            char *s2 = strrchr(parent, '/');
            if (s2) {
                *s2 = '\0';
                mkdir(parent, 0700);
            }
            free(parent);
            mkdir(dir, 0700);
        }
        free(dir);
    }
    umask(077);
    f = fopen(p, "w");
    if (!f) {
        fprintf(stderr, "sbctl: cannot write %s: %s\n", p, strerror(errno));
        free(p);
        json_decref(j);
        return EX_REFUSED;
    }
    fprintf(f, "%s\n", json_string_value(json_object_get(j, "token")));
    fclose(f);
    printf("logged in as %s (%s); token saved in %s\n", user,
           str(j, "role"), p);
    free(p);
    json_decref(j);
    return EX_OK;
}

static int cmd_status(void)
{
    struct sb_buf b;
    long st = request("GET", "/readyz", NULL, &b);

    if (st == 0) {
        sb_buf_free(&b);
        return EX_UNREACHABLE;
    }
    if (O.json)
        print_json(&b);
    else
        printf("%-10s %s\n", "server", O.url);
    if (!O.json)
        printf("%-10s %s\n", "ready", st == 200 ? "yes" : "no (redis "
                                                          "unavailable?)");
    sb_buf_free(&b);
    return st == 200 ? EX_OK : EX_REFUSED;
}

static int cmd_get(const char *path)
{
    struct sb_buf b;
    long st = request("GET", path, NULL, &b);
    int r = finish(st, &b);

    if (r)
        return r;
    print_json(&b);
    sb_buf_free(&b);
    return EX_OK;
}

static int cmd_timeline(const char *id, int limit)
{
    struct sb_buf b;
    char *path = sb_asprintf("/api/v1/customers/%s/timeline?limit=%d", id,
                             limit);
    long st = request("GET", path, NULL, &b);
    int r = finish(st, &b);
    json_t *j, *e;
    size_t i;

    free(path);
    if (r)
        return r;
    if (O.json) {
        print_json(&b);
        sb_buf_free(&b);
        return EX_OK;
    }
    j = json_loadb(b.data, b.len, 0, NULL);
    sb_buf_free(&b);
    printf("%-19s  %-6s %-3s  %-10s %-8s %s\n", "WHEN (UTC)", "CHAN", "DIR",
           "TYPE", "CONV", "SUBJECT / TEXT");
    json_array_foreach(json_object_get(j, "entries"), i, e)
    {
        char when[32], text[61];
        const char *t = str(e, "subject");
        if (strcmp(t, "-") == 0 || !*t)
            t = str(e, "text");
        fmt_ms(json_object_get(e, "at"), when, sizeof(when));
        snprintf(text, sizeof(text), "%s", t);
        for (char *p = text; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
        printf("%-19s  %-6s %-3s  %-10s %-8s %s\n", when, str(e, "channel"),
               str(e, "direction"), str(e, "type"), str(e, "conversation"),
               text);
    }
    json_decref(j);
    return EX_OK;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sbctl [--url URL] [--token TOKEN] [--json] COMMAND\n"
            "  login USER            read the password from stdin, save a "
            "session token\n"
            "  status                is the server ready\n"
            "  customer ID           one customer (JSON)\n"
            "  find email|phone VAL  look a customer up by identity\n"
            "  timeline ID [LIMIT]   a customer's contacts, newest first\n"
            "  conversation ID       one conversation (JSON)\n"
            "Environment: SB_URL, SB_TOKEN. Exit: 0 ok, 1 refused, 2 usage, "
            "3 unreachable.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"token", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, r = EX_USAGE;
    const char *cmd;

    O.url = getenv("SB_URL") ? getenv("SB_URL") : "http://127.0.0.1:8080";
    while ((c = getopt_long(argc, argv, "u:t:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'u': O.url = optarg; break;
        case 't': O.token = sb_strdup(optarg); break;
        case 'j': O.json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EX_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EX_USAGE;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    cmd = argv[optind++];
    if (strcmp(cmd, "login") == 0 && optind + 1 == argc) {
        r = cmd_login(argv[optind]);
    } else if (strcmp(cmd, "status") == 0 && optind == argc) {
        r = cmd_status();
    } else {
        load_token();
        if (strcmp(cmd, "customer") == 0 && optind + 1 == argc) {
            char *p = sb_asprintf("/api/v1/customers/%s", argv[optind]);
            r = cmd_get(p);
            free(p);
        } else if (strcmp(cmd, "conversation") == 0 && optind + 1 == argc) {
            char *p = sb_asprintf("/api/v1/conversations/%s", argv[optind]);
            r = cmd_get(p);
            free(p);
        } else if (strcmp(cmd, "find") == 0 && optind + 2 == argc &&
                   (strcmp(argv[optind], "email") == 0 ||
                    strcmp(argv[optind], "phone") == 0)) {
            CURL *h = curl_easy_init();
            char *v = curl_easy_escape(h, argv[optind + 1], 0);
            char *p = sb_asprintf("/api/v1/customers?%s=%s", argv[optind], v);
            r = cmd_get(p);
            free(p);
            curl_free(v);
            curl_easy_cleanup(h);
        } else if (strcmp(cmd, "timeline") == 0 &&
                   (optind + 1 == argc || optind + 2 == argc)) {
            int limit = optind + 2 == argc ? atoi(argv[optind + 1]) : 50;
            r = cmd_timeline(argv[optind], limit > 0 ? limit : 50);
        } else {
            usage(stderr);
            r = EX_USAGE;
        }
    }
    free(O.token);
    curl_global_cleanup();
    return r;
}
