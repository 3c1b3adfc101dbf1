/* test_metrics.c - unit tests for the Prometheus registry and exposition.
 *
 * Covers labelled counters, the per-family series cap with its "_overflow"
 * series, HELP and label-value escaping, cumulative histogram buckets,
 * number formatting, scrape-time gauges, the process_* figures, programmer
 * errors (abort), and finally lints a full rendering with the real
 * `promtool check metrics`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"
#include "util.h"

static char *render(void)
{
    struct sb_buf b;

    sb_buf_init(&b, 0);
    sb_metrics_render(&b);
    return sb_buf_steal(&b, NULL);
}

/* Number of lines in text that start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);

    for (const char *p = text; p && *p;) {
        if (strncmp(p, prefix, pl) == 0)
            n++;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return n;
}

/* The value on the line that starts with "sample " (sample includes the
 * labels); fails the test when the line is missing. */
static double sample_value(const char *text, const char *sample)
{
    char *key = sb_asprintf("\n%s ", sample);
    const char *p = strstr(text, key);
    double v;

    if (!p) {
        print_error("missing sample: %s\n", sample);
        free(key);
        fail();
    }
    v = strtod(p + strlen(key), NULL);
    free(key);
    return v;
}

static int teardown(void **state)
{
    sb_metrics_free();
    return 0;
}

static void test_counter_labels(void **state)
{
    struct sb_metric *c =
        sb_metric_counter("t_requests_total", "Requests.", "route,status");
    struct sb_metric *plain =
        sb_metric_counter("t_plain_total", "Plain.", NULL);
    char *out;

    out = render();
    /* an unlabelled counter shows 0 before its first event */
    assert_non_null(strstr(out, "\nt_plain_total 0\n"));
    assert_int_equal(count_lines(out, "t_requests_total{"), 0);
    free(out);

    sb_metric_add(c, 1, "a", "200");
    sb_metric_add(c, 2, "a", "200");
    sb_metric_add(c, 1, "b", "500");
    sb_metric_add(c, -5, "a", "200"); /* counters never go down */
    sb_metric_add(c, NAN, "a", "200");
    /* ("ab","c") and ("a","bc") are different series */
    sb_metric_add(c, 1, "ab", "c");
    sb_metric_add(c, 10, "a", "bc");
    sb_metric_add(plain, 0.5);
    sb_metric_add(NULL, 1.0, "ignored");

    out = render();
    assert_non_null(strstr(out, "# HELP t_requests_total Requests.\n"
                                "# TYPE t_requests_total counter\n"));
    assert_non_null(
        strstr(out, "\nt_requests_total{route=\"a\",status=\"200\"} 3\n"));
    assert_non_null(
        strstr(out, "\nt_requests_total{route=\"b\",status=\"500\"} 1\n"));
    assert_non_null(
        strstr(out, "\nt_requests_total{route=\"ab\",status=\"c\"} 1\n"));
    assert_non_null(
        strstr(out, "\nt_requests_total{route=\"a\",status=\"bc\"} 10\n"));
    assert_int_equal(count_lines(out, "t_requests_total{"), 4);
    assert_non_null(strstr(out, "\nt_plain_total 0.5\n"));
    /* series appear in creation order */
    assert_true(strstr(out, "route=\"a\",status=\"200\"") <
                strstr(out, "route=\"b\",status=\"500\""));
    free(out);
}

static void test_gauge(void **state)
{
    struct sb_metric *g = sb_metric_gauge("t_queue_depth", "Depth.", "queue");
    char *out;

    sb_metric_set(g, 7, "sales");
    sb_metric_add(g, -2, "sales"); /* gauges may go down */
    sb_metric_set(g, 3, "support");
    sb_metric_set(g, 4, "support");
    out = render();
    assert_non_null(strstr(out, "# TYPE t_queue_depth gauge\n"));
    assert_non_null(strstr(out, "\nt_queue_depth{queue=\"sales\"} 5\n"));
    assert_non_null(strstr(out, "\nt_queue_depth{queue=\"support\"} 4\n"));
    free(out);
}

static void test_overflow_cap(void **state)
{
    struct sb_metric *c = sb_metric_counter("t_paths_total", "Paths.", "path");
    char path[32];
    char *out;

    for (int i = 0; i < 1500; i++) {
        snprintf(path, sizeof(path), "/p/%d", i);
        sb_metric_add(c, 1, path);
    }
    /* existing series keep counting after the cap */
    sb_metric_add(c, 1, "/p/0");
    sb_metric_add(c, 1, "/p/999");
    /* a label value that is literally "_overflow" shares that series */
    sb_metric_add(c, 1, "_overflow");
    out = render();
    assert_int_equal(count_lines(out, "t_paths_total{"), 1001);
    assert_int_equal(count_lines(out, "t_paths_total{path=\"_overflow\"}"), 1);
    assert_true(sample_value(out, "t_paths_total{path=\"_overflow\"}") ==
                501.0);
    assert_true(sample_value(out, "t_paths_total{path=\"/p/0\"}") == 2.0);
    assert_true(sample_value(out, "t_paths_total{path=\"/p/999\"}") == 2.0);
    assert_null(strstr(out, "path=\"/p/1000\""));
    free(out);
}

static void test_escaping(void **state)
{
    struct sb_metric *c = sb_metric_counter(
        "t_escape_total", "Back\\slash and\nnew line \"quoted\".", "v");
    char *out;

    sb_metric_add(c, 1, "q\"u\\o\nte");
    sb_metric_add(c, 1, "bad\xff utf8 \xc3\xa9");
    sb_metric_add(c, 1, (const char *)NULL);
    out = render();
    assert_non_null(strstr(out, "# HELP t_escape_total Back\\\\slash and\\nnew "
                                "line \"quoted\".\n"));
    assert_non_null(
        strstr(out, "\nt_escape_total{v=\"q\\\"u\\\\o\\nte\"} 1\n"));
    /* invalid UTF-8 is written as text, valid multibyte kept */
    assert_non_null(
        strstr(out, "\nt_escape_total{v=\"bad\\\\xff utf8 \xc3\xa9\"} 1\n"));
    assert_non_null(strstr(out, "\nt_escape_total{v=\"\"} 1\n"));
    free(out);
}

static void test_histogram(void **state)
{
    static const double b[] = {0.1, 1, 10};
    struct sb_metric *h =
        sb_metric_histogram("t_latency_seconds", "Latency.", "op", b, 3);
    double vals[] = {0.05, 0.1, 0.5, 5, 50};
    double sum = 0;
    char *out;

    for (size_t i = 0; i < SB_ARRAY_LEN(vals); i++) {
        sb_metric_observe(h, vals[i], "send");
        sum += vals[i];
    }
    sb_metric_observe(h, NAN, "send"); /* ignored */
    sb_metric_observe(h, 0.2, "recv");
    out = render();
    assert_non_null(strstr(out, "# TYPE t_latency_seconds histogram\n"));
    assert_non_null(
        strstr(out, "\nt_latency_seconds_bucket{op=\"send\",le=\"0.1\"} 2\n"
                    "t_latency_seconds_bucket{op=\"send\",le=\"1\"} 3\n"
                    "t_latency_seconds_bucket{op=\"send\",le=\"10\"} 4\n"
                    "t_latency_seconds_bucket{op=\"send\",le=\"+Inf\"} 5\n"));
    assert_true(sample_value(out, "t_latency_seconds_sum{op=\"send\"}") == sum);
    assert_non_null(strstr(out, "\nt_latency_seconds_count{op=\"send\"} 5\n"));
    assert_non_null(
        strstr(out, "\nt_latency_seconds_bucket{op=\"recv\",le=\"0.1\"} 0\n"
                    "t_latency_seconds_bucket{op=\"recv\",le=\"1\"} 1\n"));
    assert_non_null(strstr(out, "\nt_latency_seconds_count{op=\"recv\"} 1\n"));
    free(out);
}

static void test_histogram_default_buckets(void **state)
{
    struct sb_metric *h = sb_metric_histogram(
        "t_http_request_duration_seconds", "HTTP latency.", NULL,
        sb_metric_latency_buckets, sb_metric_latency_nbuckets);
    char *out;

    assert_int_equal(sb_metric_latency_nbuckets, 14);
    assert_true(sb_metric_latency_buckets[0] == 0.0005);
    assert_true(sb_metric_latency_buckets[13] == 10);
    sb_metric_observe(h, 0.0005);
    sb_metric_observe(h, 0.003);
    sb_metric_observe(h, 11);
    out = render();
    assert_int_equal(count_lines(out, "t_http_request_duration_seconds_bucket"),
                     15);
    assert_non_null(strstr(
        out, "\nt_http_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(
        out, "\nt_http_request_duration_seconds_bucket{le=\"0.0025\"} 1\n"));
    assert_non_null(strstr(
        out, "\nt_http_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
    assert_non_null(
        strstr(out, "\nt_http_request_duration_seconds_bucket{le=\"10\"} 2\n"));
    assert_non_null(strstr(
        out, "\nt_http_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
    free(out);
}

static void test_numbers(void **state)
{
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {3, "3"},
        {-42, "-42"},
        {0.1, "0.1"},
        {1.5, "1.5"},
        {123456789012, "123456789012"},
        {1e20, "1e+20"},
        {2.5e-7, "2.5e-07"},
        {1.0 / 3.0, "0.3333333333333333"},
        {0.1 + 0.2, "0.30000000000000004"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
    };
    struct sb_metric *g = sb_metric_gauge("t_number", "Numbers.", "i");
    char label[16], *out;

    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        snprintf(label, sizeof(label), "%zu", i);
        sb_metric_set(g, cases[i].v, label);
    }
    out = render();
    for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
        char *line =
            sb_asprintf("\nt_number{i=\"%zu\"} %s\n", i, cases[i].text);
        if (!strstr(out, line))
            print_error("missing: %s", line + 1);
        assert_non_null(strstr(out, line));
        free(line);
    }
    free(out);
}

static double gauge_value(void *arg)
{
    int *calls = arg;

    (*calls)++;
    return 12.25;
}

static void test_gauge_fn(void **state)
{
    int calls = 0;
    char *out;

    sb_metric_gauge_fn("t_connections", "Open connections.", gauge_value,
                       &calls);
    assert_int_equal(calls, 0);
    out = render();
    assert_int_equal(calls, 1);
    assert_non_null(strstr(out, "# HELP t_connections Open connections.\n"
                                "# TYPE t_connections gauge\n"
                                "t_connections 12.25\n"));
    free(out);
    out = render();
    assert_int_equal(calls, 2);
    free(out);
}

static void test_process(void **state)
{
    char *out = render();
    double now = (double)sb_now_ms() / 1000.0;
    double start;

    assert_non_null(strstr(out, "# TYPE process_cpu_seconds_total counter\n"));
    assert_true(sample_value(out, "process_cpu_seconds_total") >= 0);
    assert_true(sample_value(out, "process_resident_memory_bytes") > 0);
    assert_true(sample_value(out, "process_virtual_memory_bytes") >
                sample_value(out, "process_resident_memory_bytes"));
    assert_true(sample_value(out, "process_open_fds") >= 3);
    assert_true(sample_value(out, "process_max_fds") >= 64);
    start = sample_value(out, "process_start_time_seconds");
    assert_true(start <= now + 2 && start > now - 3600);
    free(out);
}

/* Run fn in a child; it must abort. */
static void expect_abort(void (*fn)(void))
{
    pid_t pid = fork();
    int st;

    assert_true(pid >= 0);
    if (pid == 0) {
        /* keep the child's expected error line out of the test output */
        if (!freopen("/dev/null", "w", stderr))
            _exit(2);
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) != 0));
}

static void bad_name(void)
{
    sb_metric_counter("bad-name_total", "x", NULL);
}

static void bad_label(void)
{
    sb_metric_counter("ok_total", "x", "a,b c");
}

static void dup_name(void)
{
    sb_metric_counter("dup_total", "x", NULL);
    sb_metric_gauge("dup_total", "x", NULL);
}

static void histo_le(void)
{
    sb_metric_histogram("h_seconds", "x", "le", NULL, 0);
}

static void wrong_type(void)
{
    struct sb_metric *c = sb_metric_counter("wt_total", "x", NULL);
    sb_metric_observe(c, 1.0);
}

static void test_programmer_errors(void **state)
{
    expect_abort(bad_name);
    expect_abort(bad_label);
    expect_abort(dup_name);
    expect_abort(histo_le);
    expect_abort(wrong_type);
}

/* ---- promtool -------------------------------------------------------- */

static void register_sample_families(void)
{
    static const double size_buckets[] = {256, 1024, 65536};
    struct sb_metric *req =
        sb_metric_counter("sb_http_requests_total",
                          "HTTP requests by route and status.", "route,status");
    struct sb_metric *lat = sb_metric_histogram(
        "sb_http_request_duration_seconds", "HTTP request latency.", "route",
        sb_metric_latency_buckets, sb_metric_latency_nbuckets);
    struct sb_metric *size =
        sb_metric_histogram("sb_message_size_bytes", "Message sizes.", NULL,
                            size_buckets, SB_ARRAY_LEN(size_buckets));
    struct sb_metric *q = sb_metric_gauge(
        "sb_queue_waiting", "Conversations waiting per queue.", "queue");
    struct sb_metric *sent =
        sb_metric_counter("sb_notifications_sent_total",
                          "Notifications by channel.\nSecond "
                          "line with a back\\slash.",
                          "channel");
    static int calls;

    sb_metric_add(req, 1, "/api/v1/notifications", "202");
    sb_metric_add(req, 3, "/healthz", "200");
    sb_metric_add(req, 1, "weird \"route\"\\\n", "404");
    sb_metric_observe(lat, 0.0042, "/api/v1/notifications");
    sb_metric_observe(lat, 12.5, "/healthz");
    sb_metric_observe(size, 300);
    sb_metric_set(q, 4, "sales");
    sb_metric_set(q, 0.5, "support");
    sb_metric_add(sent, 2, "sms");
    sb_metric_add(sent, 1, "email");
    sb_metric_gauge_fn("sb_ws_connections", "Open WebSocket connections.",
                       gauge_value, &calls);
    sb_metric_counter("sb_redis_reconnects_total", "Redis reconnects.", NULL);
}

static void test_promtool(void **state)
{
    char dir[] = "/tmp/sb-metrics-XXXXXX";
    char *path, *cmd, *out;
    char buf[4096];
    size_t n;
    FILE *f, *p;
    int st;

    if (access("/usr/bin/promtool", X_OK) != 0) {
        print_message("promtool not installed: skipping the lint test\n");
        skip();
    }
    register_sample_families();
    out = render();
    assert_non_null(mkdtemp(dir));
    path = sb_asprintf("%s/metrics.txt", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(out, 1, strlen(out), f), strlen(out));
    assert_int_equal(fclose(f), 0);

    cmd = sb_asprintf("/usr/bin/promtool check metrics < '%s' 2>&1", path);
    p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(buf, 1, sizeof(buf) - 1, p);
    buf[n] = '\0';
    st = pclose(p);
    if (n > 0 || st != 0)
        print_error("promtool exit=%d output:\n%s\n--- input:\n%s", st, buf,
                    out);
    unlink(path);
    rmdir(dir);
    free(cmd);
    free(path);
    free(out);
    assert_int_equal(st, 0);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_counter_labels, teardown),
        cmocka_unit_test_teardown(test_gauge, teardown),
        cmocka_unit_test_teardown(test_overflow_cap, teardown),
        cmocka_unit_test_teardown(test_escaping, teardown),
        cmocka_unit_test_teardown(test_histogram, teardown),
        cmocka_unit_test_teardown(test_histogram_default_buckets, teardown),
        cmocka_unit_test_teardown(test_numbers, teardown),
        cmocka_unit_test_teardown(test_gauge_fn, teardown),
        cmocka_unit_test_teardown(test_process, teardown),
        cmocka_unit_test_teardown(test_programmer_errors, teardown),
        cmocka_unit_test_teardown(test_promtool, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
