/* metrics.c - Prometheus counters, gauges and histograms, text exposition.
 *
 * A process-wide registry of metric families, kept in registration order so
 * the exposition is stable. Each family owns its series (one per distinct set
 * of label values) in creation order plus a small open-addressing hash table
 * of series indices keyed by the label values, so an update - which happens
 * on every HTTP request - is one hash over the values, a probe or two and a
 * strcmp per label, with no allocation once the series exists. Series are
 * capped per family; past the cap updates land in the "_overflow" series.
 * Rendering follows the text format 0.0.4 and appends the usual process_*
 * figures read from /proc. Everything runs on the loop thread: no locks.
 */
#include "metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define MAX_LABELS 8      /* label names per family */
#define MAX_SERIES 1000   /* distinct label sets per family */
#define MAX_VALUE_LEN 256 /* longer label values are truncated */
#define OVERFLOW_VALUE "_overflow"

enum metric_type {
    METRIC_COUNTER,
    METRIC_GAUGE,
    METRIC_HISTOGRAM,
    METRIC_GAUGE_FN,
};

/* One set of label values. values[i] points into the same allocation. For a
 * histogram, counts[] holds per-bucket (not cumulative) counts, the last slot
 * being +Inf; cumulation happens at render time. */
struct metric_series {
    char **values;
    double value; /* counter/gauge value, histogram sum */
    uint64_t count;
    uint64_t counts[];
};

struct sb_metric {
    char *name;
    char *help;
    enum metric_type type;
    size_t nlabels;
    char *labels[MAX_LABELS];
    double *buckets; /* histogram upper bounds, without +Inf */
    size_t nbuckets;
    sb_metric_fn *fn;
    void *fn_arg;
    struct metric_series **series; /* creation order */
    size_t nseries;
    size_t aseries;
    uint32_t *slots; /* hash table: series index + 1, 0 = empty */
    size_t nslots;   /* power of two */
    struct metric_series *overflow; /* one of series[], once needed */
    struct sb_metric *next;
};

static struct {
    struct sb_metric *head;
    struct sb_metric *tail;
    double start_time;   /* seconds since the epoch, 0 until known */
    int start_from_proc; /* start_time came from /proc, not our clock */
} reg;

const double sb_metric_latency_buckets[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,    1,     2.5,  5,     10,
};
const size_t sb_metric_latency_nbuckets =
    SB_ARRAY_LEN(sb_metric_latency_buckets);

/* ---- registration ---------------------------------------------------- */

static void die(const char *what, const char *name)
{
    SB_ERR("core.metrics", "programmer error: %s name=%s", what,
           name ? name : "(null)");
    abort();
}

static int name_ok(const char *s, int colon)
{
    if (!s || !*s)
        return 0;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '_' || (colon && c == ':');
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static struct sb_metric *find_family(const char *name)
{
    for (struct sb_metric *m = reg.head; m; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

static void record_start_time(void)
{
    if (reg.start_time == 0)
        reg.start_time = (double)sb_now_ms() / 1000.0;
}

static struct metric_series *series_new(struct sb_metric *m,
                                        const char *const *vals)
{
    size_t nc = m->type == METRIC_HISTOGRAM ? m->nbuckets + 1 : 0;
    size_t textlen = 0;
    struct metric_series *s;
    char *p;

    for (size_t i = 0; i < m->nlabels; i++)
        textlen += strnlen(vals[i], MAX_VALUE_LEN) + 1;
    s = sb_calloc(1, sizeof(*s) + nc * sizeof(uint64_t));
    s->values = sb_malloc(m->nlabels * sizeof(char *) + textlen);
    p = (char *)(s->values + m->nlabels);
    for (size_t i = 0; i < m->nlabels; i++) {
        size_t n = strnlen(vals[i], MAX_VALUE_LEN);
        memcpy(p, vals[i], n);
        p[n] = '\0';
        s->values[i] = p;
        p += n + 1;
    }
    return s;
}

static void series_free(struct metric_series *s)
{
    if (!s)
        return;
    free(s->values);
    free(s);
}

/* FNV-1a over the (truncated) values, each followed by a 0 byte so that
 * ("ab","c") and ("a","bc") differ. */
static uint32_t values_hash(size_t n, const char *const *vals)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = (const unsigned char *)vals[i];
        for (size_t j = 0; j < MAX_VALUE_LEN && p[j]; j++) {
            h ^= p[j];
            h *= 16777619u;
        }
        h *= 16777619u; /* the 0 byte after the value */
    }
    return h;
}

static int values_equal(const struct metric_series *s, size_t n,
                        const char *const *vals)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(s->values[i], vals[i], MAX_VALUE_LEN) != 0)
            return 0;
    return 1;
}

static void slots_insert(struct sb_metric *m, uint32_t h, size_t idx)
{
    size_t mask = m->nslots - 1;

    for (size_t i = h & mask;; i = (i + 1) & mask) {
        if (m->slots[i] == 0) {
            m->slots[i] = (uint32_t)idx + 1;
            return;
        }
    }
}

static void slots_grow(struct sb_metric *m)
{
    size_t n = m->nslots ? m->nslots * 2 : 16;

    free(m->slots);
    m->slots = sb_calloc(n, sizeof(uint32_t));
    m->nslots = n;
    for (size_t i = 0; i < m->nseries; i++)
        slots_insert(
            m,
            values_hash(m->nlabels, (const char *const *)m->series[i]->values),
            i);
}

static struct metric_series *series_add(struct sb_metric *m, uint32_t h,
                                        const char *const *vals)
{
    struct metric_series *s = series_new(m, vals);

    if (m->nseries == m->aseries) {
        m->aseries = m->aseries ? m->aseries * 2 : 4;
        m->series = sb_realloc(m->series, m->aseries * sizeof(*m->series));
    }
    m->series[m->nseries++] = s;
    /* keep the load factor at or under one half */
    if (m->nseries * 2 > m->nslots)
        slots_grow(m);
    else
        slots_insert(m, h, m->nseries - 1);
    return s;
}

static struct sb_metric *family_new(const char *name, const char *help,
                                    const char *labels, enum metric_type type)
{
    struct sb_metric *m;

    if (!name_ok(name, 1))
        die("invalid metric name", name);
    if (find_family(name))
        die("metric registered twice", name);
    m = sb_calloc(1, sizeof(*m));
    m->name = sb_strdup(name);
    m->help = sb_strdup(help ? help : "");
    m->type = type;
    if (labels && *labels) {
        const char *p = labels;
        for (;;) {
            const char *end = strchr(p, ',');
            size_t n = end ? (size_t)(end - p) : strlen(p);
            char *l;

            if (m->nlabels == MAX_LABELS)
                die("too many labels", name);
            l = sb_strndup(p, n);
            m->labels[m->nlabels++] = l;
            if (!name_ok(l, 0) || strncmp(l, "__", 2) == 0 ||
                (type == METRIC_HISTOGRAM && strcmp(l, "le") == 0))
                die("invalid label name", l);
            for (size_t i = 0; i + 1 < m->nlabels; i++)
                if (strcmp(m->labels[i], l) == 0)
                    die("duplicate label name", l);
            if (!end)
                break;
            p = end + 1;
        }
    }
    return m;
}

static struct sb_metric *family_link(struct sb_metric *m)
{
    record_start_time();
    if (reg.tail)
        reg.tail->next = m;
    else
        reg.head = m;
    reg.tail = m;
    /* A family without labels has exactly one series: expose it from the
     * start (a counter reads 0 before the first event). */
    if (m->nlabels == 0 && m->type != METRIC_GAUGE_FN)
        series_add(m, values_hash(0, NULL), NULL);
    return m;
}

struct sb_metric *sb_metric_counter(const char *name, const char *help,
                                    const char *labels)
{
    return family_link(family_new(name, help, labels, METRIC_COUNTER));
}

struct sb_metric *sb_metric_gauge(const char *name, const char *help,
                                  const char *labels)
{
    return family_link(family_new(name, help, labels, METRIC_GAUGE));
}

struct sb_metric *sb_metric_histogram(const char *name, const char *help,
                                      const char *labels, const double *buckets,
                                      size_t nbuckets)
{
    struct sb_metric *m = family_new(name, help, labels, METRIC_HISTOGRAM);

    /* an explicit trailing +Inf is the implicit one */
    if (nbuckets > 0 && isinf(buckets[nbuckets - 1]) &&
        buckets[nbuckets - 1] > 0)
        nbuckets--;
    for (size_t i = 0; i < nbuckets; i++)
        if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
            die("histogram buckets must be finite and ascending", name);
    m->buckets = sb_malloc((nbuckets ? nbuckets : 1) * sizeof(double));
    if (nbuckets)
        memcpy(m->buckets, buckets, nbuckets * sizeof(double));
    m->nbuckets = nbuckets;
    return family_link(m);
}

struct sb_metric *sb_metric_gauge_fn(const char *name, const char *help,
                                     sb_metric_fn *fn, void *arg)
{
    struct sb_metric *m = family_new(name, help, NULL, METRIC_GAUGE_FN);

    if (!fn)
        die("gauge_fn without a function", name);
    m->fn = fn;
    m->fn_arg = arg;
    return family_link(m);
}

void sb_metrics_free(void)
{
    struct sb_metric *m = reg.head;

    while (m) {
        struct sb_metric *next = m->next;
        for (size_t i = 0; i < m->nseries; i++)
            series_free(m->series[i]);
        free(m->series);
        free(m->slots);
        for (size_t i = 0; i < m->nlabels; i++)
            free(m->labels[i]);
        free(m->buckets);
        free(m->name);
        free(m->help);
        free(m);
        m = next;
    }
    reg.head = NULL;
    reg.tail = NULL;
}

/* ---- updates --------------------------------------------------------- */

static struct metric_series *series_find(const struct sb_metric *m, uint32_t h,
                                         const char *const *vals)
{
    size_t mask = m->nslots - 1;

    for (size_t i = h & mask; m->nslots; i = (i + 1) & mask) {
        uint32_t slot = m->slots[i];
        if (slot == 0)
            break;
        if (values_equal(m->series[slot - 1], m->nlabels, vals))
            return m->series[slot - 1];
    }
    return NULL;
}

/* Find or create the series for the label values in ap. Past the cap every
 * new label set shares the one overflow series (itself one more series, so
 * a family holds at most MAX_SERIES + 1). */
static struct metric_series *series_lookup(struct sb_metric *m, va_list ap)
{
    const char *vals[MAX_LABELS];
    struct metric_series *s;
    uint32_t h;

    if (m->nlabels == 0)
        return m->series[0];
    for (size_t i = 0; i < m->nlabels; i++) {
        const char *v = va_arg(ap, const char *);
        vals[i] = v ? v : "";
    }
    h = values_hash(m->nlabels, vals);
    s = series_find(m, h, vals);
    if (s)
        return s;
    if (m->nseries < MAX_SERIES)
        return series_add(m, h, vals);
    if (!m->overflow) {
        for (size_t i = 0; i < m->nlabels; i++)
            vals[i] = OVERFLOW_VALUE;
        h = values_hash(m->nlabels, vals);
        m->overflow = series_find(m, h, vals);
        if (!m->overflow)
            m->overflow = series_add(m, h, vals);
        SB_WARN("core.metrics",
                "series cap reached, using _overflow metric=%s cap=%d", m->name,
                MAX_SERIES);
    }
    return m->overflow;
}

void sb_metric_add(struct sb_metric *m, double v, ...)
{
    struct metric_series *s;
    va_list ap;

    if (!m)
        return;
    if (m->type != METRIC_COUNTER && m->type != METRIC_GAUGE)
        die("sb_metric_add on a histogram or gauge_fn", m->name);
    /* a counter never goes down; NaN would poison it for good */
    if (m->type == METRIC_COUNTER && !(v >= 0))
        return;
    va_start(ap, v);
    s = series_lookup(m, ap);
    va_end(ap);
    s->value += v;
}

void sb_metric_set(struct sb_metric *m, double v, ...)
{
    struct metric_series *s;
    va_list ap;

    if (!m)
        return;
    if (m->type != METRIC_GAUGE)
        die("sb_metric_set on a non-gauge", m->name);
    va_start(ap, v);
    s = series_lookup(m, ap);
    va_end(ap);
    s->value = v;
}

void sb_metric_observe(struct sb_metric *m, double v, ...)
{
    struct metric_series *s;
    size_t i;
    va_list ap;

    if (!m)
        return;
    if (m->type != METRIC_HISTOGRAM)
        die("sb_metric_observe on a non-histogram", m->name);
    if (isnan(v))
        return;
    va_start(ap, v);
    s = series_lookup(m, ap);
    va_end(ap);
    for (i = 0; i < m->nbuckets && v > m->buckets[i]; i++)
        ;
    s->counts[i]++;
    s->count++;
    s->value += v;
}

/* ---- rendering ------------------------------------------------------- */

/* Integers as integers; other values in the shortest %g form that reads back
 * to the same double (at most %.17g, which always does). */
static void fmt_number(char *out, size_t outlen, double v)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
    } else if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, outlen, "%lld", (long long)v);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(out, outlen, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

static void put_number(struct sb_buf *out, double v)
{
    char num[64];

    fmt_number(num, sizeof(num), v);
    sb_buf_appends(out, num);
}

static void put_help(struct sb_buf *out, const char *help)
{
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            sb_buf_append(out, "\\\\", 2);
        else if (*p == '\n')
            sb_buf_append(out, "\\n", 2);
        else
            sb_buf_append(out, p, 1);
    }
}


/* Label values must be valid UTF-8 for the scraper: a byte that is not is
 * written as the text \xHH (its backslash escaped). */
static void put_label_value(struct sb_buf *out, const char *v)
{
    const unsigned char *p = (const unsigned char *)v;
    const unsigned char *end = p + strlen(v);

    while (*p) {
        size_t n = sb_utf8_seq(p, (size_t)(end - p), NULL);
        if (n == 0) {
            sb_buf_printf(out, "\\\\x%02x", *p);
            p++;
        } else if (*p == '\\') {
            sb_buf_append(out, "\\\\", 2);
            p++;
        } else if (*p == '"') {
            sb_buf_append(out, "\\\"", 2);
            p++;
        } else if (*p == '\n') {
            sb_buf_append(out, "\\n", 2);
            p++;
        } else {
            sb_buf_append(out, p, n);
            p += n;
        }
    }
}

/* name{l1="v1",...,extra="extra_value"} - extra is the histogram's le. */
static void put_sample_name(struct sb_buf *out, const struct sb_metric *m,
                            const char *suffix, const struct metric_series *s,
                            const char *extra, const char *extra_value)
{
    int any = 0;

    sb_buf_appends(out, m->name);
    sb_buf_appends(out, suffix);
    for (size_t i = 0; i < m->nlabels; i++) {
        sb_buf_appends(out, any ? "," : "{");
        sb_buf_appends(out, m->labels[i]);
        sb_buf_appends(out, "=\"");
        put_label_value(out, s->values[i]);
        sb_buf_appends(out, "\"");
        any = 1;
    }
    if (extra) {
        sb_buf_appends(out, any ? "," : "{");
        sb_buf_printf(out, "%s=\"%s\"", extra, extra_value);
        any = 1;
    }
    if (any)
        sb_buf_appends(out, "}");
    sb_buf_appends(out, " ");
}

static void put_header(struct sb_buf *out, const char *name, const char *help,
                       const char *type)
{
    sb_buf_printf(out, "# HELP %s ", name);
    put_help(out, help);
    sb_buf_printf(out, "\n# TYPE %s %s\n", name, type);
}

static void render_series(struct sb_buf *out, const struct sb_metric *m,
                          const struct metric_series *s)
{
    if (m->type != METRIC_HISTOGRAM) {
        put_sample_name(out, m, "", s, NULL, NULL);
        put_number(out, s->value);
        sb_buf_appends(out, "\n");
        return;
    }
    uint64_t cum = 0;
    char le[64];
    for (size_t i = 0; i <= m->nbuckets; i++) {
        cum += s->counts[i];
        if (i < m->nbuckets)
            fmt_number(le, sizeof(le), m->buckets[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        put_sample_name(out, m, "_bucket", s, "le", le);
        sb_buf_printf(out, "%llu\n", (unsigned long long)cum);
    }
    put_sample_name(out, m, "_sum", s, NULL, NULL);
    put_number(out, s->value);
    sb_buf_appends(out, "\n");
    put_sample_name(out, m, "_count", s, NULL, NULL);
    sb_buf_printf(out, "%llu\n", (unsigned long long)s->count);
}

static void render_family(struct sb_buf *out, const struct sb_metric *m)
{
    static const char *const types[] = {
        [METRIC_COUNTER] = "counter",
        [METRIC_GAUGE] = "gauge",
        [METRIC_HISTOGRAM] = "histogram",
        [METRIC_GAUGE_FN] = "gauge",
    };

    put_header(out, m->name, m->help, types[m->type]);
    if (m->type == METRIC_GAUGE_FN) {
        sb_buf_printf(out, "%s ", m->name);
        put_number(out, m->fn(m->fn_arg));
        sb_buf_appends(out, "\n");
        return;
    }
    for (size_t i = 0; i < m->nseries; i++)
        render_series(out, m, m->series[i]);
}

/* ---- process figures ------------------------------------------------- */

static int read_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    size_t n;

    if (!f)
        return -1;
    n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0 ? 0 : -1;
}

/* Fields of /proc/self/stat after the command name, numbered as in proc(5):
 * f[0] is field 3 (state). */
static int proc_stat_fields(unsigned long long *f, size_t nf)
{
    char buf[1024];
    char *p;
    size_t i;

    if (read_file("/proc/self/stat", buf, sizeof(buf)) < 0)
        return -1;
    p = strrchr(buf, ')');
    if (!p)
        return -1;
    p += 2; /* ") " */
    for (i = 0; i < nf && *p; i++) {
        char *end;
        if (i == 0) { /* state is a letter */
            f[0] = 0;
            p = strchr(p, ' ');
            if (!p)
                return -1;
            p++;
            continue;
        }
        f[i] = strtoull(p, &end, 10);
        if (end == p)
            return -1;
        p = end;
        while (*p == ' ')
            p++;
    }
    return i == nf ? 0 : -1;
}

static double proc_boot_time(void)
{
    char buf[8192];
    const char *p;

    if (read_file("/proc/stat", buf, sizeof(buf)) < 0)
        return 0;
    p = strstr(buf, "\nbtime ");
    if (!p)
        return 0;
    return strtod(p + 7, NULL);
}

static void render_process(struct sb_buf *out)
{
    unsigned long long f[20]; /* fields 3 .. 22 */
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    char buf[256];
    struct rlimit rl;
    DIR *d;

    if (proc_stat_fields(f, SB_ARRAY_LEN(f)) == 0 && tck > 0) {
        /* utime is field 14, stime 15, starttime 22 */
        double cpu = (double)(f[14 - 3] + f[15 - 3]) / (double)tck;
        put_header(out, "process_cpu_seconds_total",
                   "Total user and system CPU time spent in seconds.",
                   "counter");
        sb_buf_appends(out, "process_cpu_seconds_total ");
        put_number(out, cpu);
        sb_buf_appends(out, "\n");
        if (!reg.start_from_proc) {
            double btime = proc_boot_time();
            if (btime > 0) {
                reg.start_time = btime + (double)f[22 - 3] / (double)tck;
                reg.start_from_proc = 1;
            }
        }
    }
    if (read_file("/proc/self/statm", buf, sizeof(buf)) == 0 && page > 0) {
        unsigned long long size = 0, resident = 0;
        if (sscanf(buf, "%llu %llu", &size, &resident) == 2) {
            put_header(out, "process_virtual_memory_bytes",
                       "Virtual memory size in bytes.", "gauge");
            sb_buf_printf(out, "process_virtual_memory_bytes %llu\n",
                          size * (unsigned long long)page);
            put_header(out, "process_resident_memory_bytes",
                       "Resident memory size in bytes.", "gauge");
            sb_buf_printf(out, "process_resident_memory_bytes %llu\n",
                          resident * (unsigned long long)page);
        }
    }
    d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        put_header(out, "process_open_fds", "Number of open file descriptors.",
                   "gauge");
        sb_buf_printf(out, "process_open_fds %ld\n", n);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        put_header(out, "process_max_fds",
                   "Maximum number of open file descriptors.", "gauge");
        sb_buf_appends(out, "process_max_fds ");
        if (rl.rlim_cur == RLIM_INFINITY)
            sb_buf_appends(out, "+Inf\n");
        else
            sb_buf_printf(out, "%llu\n", (unsigned long long)rl.rlim_cur);
    }
    record_start_time();
    put_header(out, "process_start_time_seconds",
               "Start time of the process since unix epoch in seconds.",
               "gauge");
    sb_buf_appends(out, "process_start_time_seconds ");
    put_number(out, reg.start_time);
    sb_buf_appends(out, "\n");
}

void sb_metrics_render(struct sb_buf *out)
{
    for (const struct sb_metric *m = reg.head; m; m = m->next)
        render_family(out, m);
    render_process(out);
}
