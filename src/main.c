/* main.c - switchboard: command line, start-up, signals, reload, drain.
 *
 * One libuv loop owns everything. Start-up order: config, crypto, the worker
 * pool, Redis (connecting in the background), outbound HTTP, the HTTP server.
 * READY=1 goes to systemd only once Redis has answered and every listener is
 * bound. SIGHUP loads the config anew: an invalid file, or one that changes
 * a key that needs a restart, is refused and logged, and the running config
 * stays. SIGTERM stops taking requests (new ones get 503), waits for the
 * in-flight ones up to [core] drain_timeout, then tears down in the order
 * STACK-NOTES prescribes for lws on a foreign loop and exits 0.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>
#include <uv.h>

#include "api.h"
#include "auth.h"
#include "channel.h"
#include "config.h"
#include "console.h"
#include "core.h"
#include "crypto.h"
#include "events.h"
#include "http.h"
#include "httpc.h"
#include "log.h"
#include "mailin.h"
#include "metrics.h"
#include "mime.h"
#include "outbound.h"
#include "notify.h"
#include "redis.h"
#include "router.h"
#include "static.h"
#include "store.h"
#include "worker.h"
#include "ws.h"

#define MAIN_PLACE "core.main"

static struct {
    uv_loop_t loop;
    const char *path;
    struct sb_config *conf;
    struct sb_redis *redis;
    uv_signal_t sig_hup, sig_term, sig_int;
    uv_timer_t watchdog, drain, route_tick;
    int tick_running;
    uint64_t watchdog_usec;
    int http_up, notified_ready, draining, stopping;
    uint64_t drain_deadline;
    struct sb_metric *m_reloads;
} M;

static int is_ready(void)
{
    return M.http_up && !M.draining && sb_redis_is_up(M.redis);
}

static double redis_up_fn(void *arg)
{
    return sb_redis_is_up(M.redis) ? 1 : 0;
}

static double redis_pending_fn(void *arg)
{
    return (double)sb_redis_pending(M.redis);
}

static double http_inflight_fn(void *arg)
{
    return (double)sb_http_inflight();
}

static void notify_ready(void)
{
    if (M.notified_ready || !M.http_up || !sb_redis_is_up(M.redis))
        return;
    M.notified_ready = 1;
    sd_notify(0, "READY=1\nSTATUS=serving");
    SB_NOTICE(MAIN_PLACE, "ready pid=%d", (int)getpid());
}

static void on_redis_state(struct sb_redis *r, int up, void *arg)
{
    if (up)
        notify_ready();
    else if (!M.stopping)
        sd_notify(0, "STATUS=redis unavailable");
}

/* ---- shutdown ------------------------------------------------------------ */

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void shutdown_now(void)
{
    if (M.stopping)
        return;
    M.stopping = 1;
    SB_NOTICE(MAIN_PLACE, "stopping inflight=%zu", sb_http_inflight());
    uv_signal_stop(&M.sig_hup);
    close_handle((uv_handle_t *)&M.sig_hup);
    close_handle((uv_handle_t *)&M.sig_term);
    close_handle((uv_handle_t *)&M.sig_int);
    close_handle((uv_handle_t *)&M.watchdog);
    close_handle((uv_handle_t *)&M.drain);
    close_handle((uv_handle_t *)&M.route_tick);
    sb_http_stop();
    sb_console_stop();
    sb_channels_stop(); /* cancels sends: before the dispatcher goes */
    sb_notify_stop();
    sb_worker_shutdown();
    sb_httpc_shutdown();
    sb_events_stop();
    sb_redis_close(M.redis);
    M.redis = NULL;
}

static void on_drain_tick(uv_timer_t *t)
{
    /* WebSocket clients got 1001 at drain start; wait for their close
     * handshakes too (bounded by the deadline below). */
    if (sb_http_inflight() == 0 && sb_worker_inflight() == 0 &&
        sb_ws_count() == 0 && sb_notify_inflight() == 0) {
        shutdown_now();
        return;
    }
    if (uv_now(&M.loop) >= M.drain_deadline) {
        SB_WARN(MAIN_PLACE, "drain deadline passed inflight=%zu",
                sb_http_inflight());
        shutdown_now();
    }
}

static void on_term(uv_signal_t *s, int signum)
{
    const struct sb_core_conf *cc = sb_config_get(M.conf, "core");

    if (M.draining) {
        if (signum == SIGINT)
            shutdown_now();
        return;
    }
    M.draining = 1;
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    SB_NOTICE(MAIN_PLACE, "draining signal=%d deadline_ms=%lld", signum,
              cc->drain_timeout);
    sb_http_drain();
    sb_notify_drain();
    M.drain_deadline = uv_now(&M.loop) + (uint64_t)cc->drain_timeout;
    uv_timer_start(&M.drain, on_drain_tick, 0, 20);
}

/* ---- reload ---------------------------------------------------------------- */

/* The router's timer: offer timeouts, max waits, dispatch. One tick at a
 * time; a tick that hit its bound ("more") runs again at once. */
static void on_route_tick(uv_timer_t *t);

static void on_route_ticked(enum sb_store_status st, json_t *result,
                            const char *err, void *arg)
{
    int more = result && json_is_true(json_object_get(result, "more"));

    M.tick_running = 0;
    if (st != SB_STORE_OK && st != SB_STORE_UNAVAILABLE)
        SB_WARN(MAIN_PLACE, "routing tick failed err=%s", err ? err : "-");
    json_decref(result);
    if (more && !M.stopping)
        uv_timer_start(&M.route_tick, on_route_tick, 0,
                       (uint64_t)sb_router_tick_interval());
}

/* Queue and agent gauges for /metrics, from the router's views every
 * few seconds (a scrape cannot wait for Redis). */
static struct {
    struct sb_metric *waiting, *longest, *breaches, *online, *busy;
    struct sb_metric *active, *capacity, *presence;
    unsigned ticks;
} G;

static void on_gauge_queues(enum sb_store_status st, json_t *res,
                            const char *err, void *arg)
{
    size_t i;
    json_t *q;

    json_array_foreach(json_object_get(res, "queues"), i, q)
    {
        const char *n = json_string_value(json_object_get(q, "name"));
        if (!n)
            continue;
        sb_metric_set(G.waiting, (double)json_integer_value(
                                     json_object_get(q, "waiting")), n);
        sb_metric_set(G.longest,
                      (double)json_integer_value(
                          json_object_get(q, "longest_wait")) / 1000.0,
                      n);
        sb_metric_set(G.breaches, (double)json_integer_value(
                                      json_object_get(q, "sla_breaches")), n);
        sb_metric_set(G.online, (double)json_integer_value(
                                    json_object_get(q, "online")), n);
        sb_metric_set(G.busy, (double)json_integer_value(
                                  json_object_get(q, "busy")), n);
    }
    json_decref(res);
}

static void on_gauge_agents(enum sb_store_status st, json_t *res,
                            const char *err, void *arg)
{
    static const char *const states[] = {"online", "away", "offline"};
    double count[3] = {0, 0, 0};
    size_t i;
    json_t *a;

    json_array_foreach(json_object_get(res, "agents"), i, a)
    {
        const char *n = json_string_value(json_object_get(a, "name"));
        const char *p = json_string_value(json_object_get(a, "presence"));
        if (!n)
            continue;
        sb_metric_set(G.active, (double)json_integer_value(
                                    json_object_get(a, "active")), n);
        sb_metric_set(G.capacity, (double)json_integer_value(
                                      json_object_get(a, "capacity")), n);
        for (int k = 0; k < 3; k++)
            if (p && strcmp(p, states[k]) == 0)
                count[k]++;
    }
    if (st == SB_STORE_OK)
        for (int k = 0; k < 3; k++)
            sb_metric_set(G.presence, count[k], states[k]);
    json_decref(res);
}

static void gauges_register(void)
{
    G.waiting = sb_metric_gauge("sb_queue_waiting",
                                "Conversations waiting in a queue", "queue");
    G.longest = sb_metric_gauge("sb_queue_longest_wait_seconds",
                                "How long the oldest waiting conversation "
                                "has waited",
                                "queue");
    G.breaches = sb_metric_gauge("sb_queue_sla_breaches",
                                 "Open conversations past the queue's "
                                 "first-response target",
                                 "queue");
    G.online = sb_metric_gauge("sb_queue_agents_online",
                               "Queue members online", "queue");
    G.busy = sb_metric_gauge("sb_queue_agents_busy",
                             "Queue members holding conversations", "queue");
    G.active = sb_metric_gauge("sb_agent_active_conversations",
                               "Conversations an agent holds", "agent");
    G.capacity = sb_metric_gauge("sb_agent_capacity",
                                 "Conversations an agent may hold", "agent");
    G.presence = sb_metric_gauge("sb_agents", "Agents by presence",
                                 "presence");
}

static void on_route_tick(uv_timer_t *t)
{
    /* Every fifth tick (5 s at the default 1 s): refresh the gauges. */
    if (!M.stopping && sb_redis_is_up(M.redis) && G.ticks++ % 5 == 0) {
        if (sb_router_queues(on_gauge_queues, NULL) < 0 ||
            sb_router_agents(on_gauge_agents, NULL) < 0)
            G.ticks = 0;
    }
    if (M.tick_running || M.stopping || !sb_redis_is_up(M.redis))
        return;
    if (sb_router_tick(sb_now_ms(), on_route_ticked, NULL) == 0)
        M.tick_running = 1;
}

static void apply_config(const struct sb_config *c)
{
    const struct sb_core_conf *cc = sb_config_get(c, "core");

    sb_log_level = sb_core_log_level(cc);
    sb_store_set_dedupe_window(cc->dedupe_window / 1000);
    {
        const char *www =
            ((const struct sb_http_conf *)sb_config_get(c, "http"))->www_dir;
        char dir[4200];
        sb_static_load(www);
        snprintf(dir, sizeof(dir), "%s/console", www);
        sb_static_mount("console", dir);
        snprintf(dir, sizeof(dir), "%s/dashboard", www);
        sb_static_mount("dashboard", dir);
    }
    sb_http_reconfigure(c);
    sb_redis_reconfigure(M.redis, sb_config_get(c, "redis"));
    sb_auth_config(c);
    sb_api_config(c);
    sb_outbound_config(c);
    if (M.http_up)
        sb_outbound_check();
}

static void on_hup(uv_signal_t *s, int signum)
{
    char err[512];
    struct sb_config *c;

    sd_notify(0, "RELOADING=1");
    c = sb_config_load(M.path, sb_core_sections(), err, sizeof(err));
    if (!c) {
        SB_ERR(MAIN_PLACE, "reload failed, keeping the running config: %s",
               err);
        sb_metric_add(M.m_reloads, 1, "failed");
    } else if (sb_config_reload_check(M.conf, c, err, sizeof(err)) < 0 ||
               sb_router_config(c, err, sizeof(err)) < 0) {
        SB_ERR(MAIN_PLACE, "reload refused, keeping the running config: %s",
               err);
        sb_metric_add(M.m_reloads, 1, "failed");
        sb_config_free(c);
    } else {
        apply_config(c);
        if (sb_notify_config(c, err, sizeof(err)) < 0)
            SB_ERR(MAIN_PLACE, "templates not reloaded, keeping the "
                   "running ones: %s", err);
        sb_channels_reload(c);
        sb_config_free(M.conf);
        M.conf = c;
        sb_metric_add(M.m_reloads, 1, "ok");
        SB_NOTICE(MAIN_PLACE, "config reloaded path=%s", M.path);
    }
    sd_notify(0, "READY=1");
}

static void on_watchdog(uv_timer_t *t)
{
    sd_notify(0, "WATCHDOG=1");
}

/* ---- command-line tools ------------------------------------------------- */

static int hash_password(void)
{
    char line[SB_PASSWORD_MAX + 2], out[SB_PWHASH_LEN];
    size_t n;

    if (isatty(0))
        fprintf(stderr, "password: ");
    if (!fgets(line, sizeof(line), stdin)) {
        fprintf(stderr, "switchboard: no password on standard input\n");
        return 1;
    }
    n = strcspn(line, "\r\n");
    line[n] = '\0';
    if (n == 0 || sb_password_hash(line, out, sizeof(out)) < 0) {
        fprintf(stderr, "switchboard: password empty or longer than %d "
                        "bytes\n", SB_PASSWORD_MAX);
        return 1;
    }
    printf("%s\n", out);
    return 0;
}

static int new_apikey(const char *id)
{
    char key[96], hash[SB_HASH_HEX_LEN + 1];

    if (sb_apikey_new(id, key, sizeof(key)) < 0) {
        fprintf(stderr, "switchboard: key id must be 1..32 of [a-z0-9]\n");
        return 1;
    }
    sb_apikey_hash(key, hash);
    printf("key = %s\nhash = %s\n", key, hash);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: switchboard -c FILE [--check | --dump-config]\n"
            "       switchboard --example-config\n"
            "       switchboard --hash-password   < password\n"
            "       switchboard --new-apikey ID\n"
            "\n"
            "  -c, --config FILE   configuration file\n"
            "      --check         validate the configuration and exit\n"
            "      --dump-config   print the effective configuration "
            "(secrets masked)\n"
            "Signals: SIGHUP reloads the configuration, SIGTERM drains "
            "and exits.\n");
}

/* ---- main ---------------------------------------------------------------------- */

static int run(void)
{
    const struct sb_core_conf *cc = sb_config_get(M.conf, "core");
    const struct sb_redis_conf *rc = sb_config_get(M.conf, "redis");
    int r;

    if (uv_loop_init(&M.loop) < 0)
        return 1;
    /* GMime's global state, before any worker thread exists */
    sb_mime_init();
    sb_worker_init(&M.loop, (size_t)cc->worker_queue);
    if (sb_httpc_init(&M.loop) < 0)
        return 1;

    M.m_reloads = sb_metric_counter("sb_config_reloads_total",
                                    "Configuration reloads by SIGHUP",
                                    "result");
    sb_metric_gauge_fn("sb_redis_up", "1 when the Redis connection is ready",
                       redis_up_fn, NULL);
    sb_metric_gauge_fn("sb_redis_pending_commands",
                       "Redis commands waiting for a reply", redis_pending_fn,
                       NULL);
    sb_metric_gauge_fn("sb_http_inflight_requests",
                       "HTTP requests dispatched and not yet answered",
                       http_inflight_fn, NULL);

    M.redis = sb_redis_new(&M.loop, rc, "main");
    sb_redis_on_state(M.redis, on_redis_state, NULL);
    sb_store_init(M.redis, rc->prefix);
    sb_auth_init(M.redis, rc->prefix);
    sb_router_init(M.redis, rc->prefix);
    sb_mailin_init(M.redis, rc->prefix);
    sb_events_start(&M.loop, rc, rc->prefix);
    sb_api_init(M.redis, is_ready);
    apply_config(M.conf);
    if (sb_notify_init(&M.loop, M.redis, M.conf) < 0)
        return 1;
    {
        char err[512];
        if (sb_router_config(M.conf, err, sizeof(err)) < 0) {
            SB_ERR(MAIN_PLACE, "routing config: %s", err);
            return 1;
        }
    }

    uv_signal_init(&M.loop, &M.sig_hup);
    uv_signal_init(&M.loop, &M.sig_term);
    uv_signal_init(&M.loop, &M.sig_int);
    uv_signal_start(&M.sig_hup, on_hup, SIGHUP);
    uv_signal_start(&M.sig_term, on_term, SIGTERM);
    uv_signal_start(&M.sig_int, on_term, SIGINT);
    uv_timer_init(&M.loop, &M.watchdog);
    uv_timer_init(&M.loop, &M.drain);
    gauges_register();
    uv_timer_init(&M.loop, &M.route_tick);
    uv_timer_start(&M.route_tick, on_route_tick,
                   (uint64_t)sb_router_tick_interval(),
                   (uint64_t)sb_router_tick_interval());
    if (sd_watchdog_enabled(0, &M.watchdog_usec) > 0 && M.watchdog_usec)
        uv_timer_start(&M.watchdog, on_watchdog, 0,
                       M.watchdog_usec / 2000 ? M.watchdog_usec / 2000 : 1);

    if (sb_channels_start(&M.loop, M.conf) < 0 ||
        sb_console_init(&M.loop, M.redis, M.conf) < 0 ||
        sb_http_start(&M.loop, M.conf, sb_api_routes()) < 0) {
        shutdown_now();
        r = 1;
    } else {
        M.http_up = 1;
        sb_outbound_check();
        notify_ready();
        r = 0;
    }

    uv_run(&M.loop, UV_RUN_DEFAULT);
    /* lws needs a second destroy and another pass of the loop to free
     * everything it owns on a foreign loop (STACK-NOTES). */
    sb_http_free();
    uv_run(&M.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&M.loop) != 0)
        SB_WARN(MAIN_PLACE, "loop closed with handles still open");
    SB_NOTICE(MAIN_PLACE, "exit code=%d", r);
    return r;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'C'},
        {"dump-config", no_argument, NULL, 'D'},
        {"example-config", no_argument, NULL, 'E'},
        {"hash-password", no_argument, NULL, 'P'},
        {"new-apikey", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, check = 0, dump = 0, r;
    char err[512];

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stderr, NULL, _IOLBF, 0);
    if (sb_crypto_init() < 0) {
        fprintf(stderr, "switchboard: libsodium failed to initialise\n");
        return 1;
    }
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': M.path = optarg; break;
        case 'C': check = 1; break;
        case 'D': dump = 1; break;
        case 'E':
            sb_config_write_example(sb_core_sections(), stdout);
            return 0;
        case 'P': return hash_password();
        case 'K': return new_apikey(optarg);
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!M.path || optind != argc) {
        usage(stderr);
        return 2;
    }
    M.conf = sb_config_load(M.path, sb_core_sections(), err, sizeof(err));
    if (!M.conf) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (sb_router_check(M.conf, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", M.path, err);
        sb_config_free(M.conf);
        return 1;
    }
    if (check) {
        printf("config ok: %s\n", M.path);
        sb_config_free(M.conf);
        return 0;
    }
    if (dump) {
        sb_config_dump(M.conf, stdout);
        sb_config_free(M.conf);
        return 0;
    }
    sb_log_level = sb_core_log_level(sb_config_get(M.conf, "core"));
    r = run();
    sb_config_free(M.conf);
    sb_static_free();
    sb_router_free();
    sb_metrics_free();
    sb_mime_shutdown();
    return r;
}
