/* metrics.h - Prometheus counters, gauges and histograms, text exposition.
 *
 * Metric families are registered once at start-up (on the loop thread) and
 * updated only on the loop thread: no locks. A family has a fixed list of
 * label names; each distinct set of label values is a series, created on first
 * use. The number of series per family is capped (max_series, default 1000):
 * past the cap updates land in one series whose label values are all
 * "_overflow", so hostile input (odd paths) cannot grow memory.
 *
 * Exposition follows the Prometheus text format 0.0.4: HELP and TYPE lines,
 * label values escaped (\\, \", \n), histograms with cumulative _bucket{le=},
 * _sum and _count; `promtool check metrics` accepts the output.
 */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <stddef.h>

#include "util.h"

struct sb_metric;

/* labels: comma-separated label names ("route,status") or NULL for none.
 * Names must be valid Prometheus names (programmer error otherwise: abort).
 * Returned families live until sb_metrics_free(). */
struct sb_metric *sb_metric_counter(const char *name, const char *help,
                                    const char *labels);
struct sb_metric *sb_metric_gauge(const char *name, const char *help,
                                  const char *labels);
/* buckets: ascending upper bounds, +Inf is implicit. Copied. */
struct sb_metric *sb_metric_histogram(const char *name, const char *help,
                                      const char *labels,
                                      const double *buckets, size_t nbuckets);

/* Label values follow v, as many as the family has label names; values are
 * borrowed for the call. Counters only go up (v >= 0). */
void sb_metric_add(struct sb_metric *m, double v, ...);
void sb_metric_set(struct sb_metric *m, double v, ...);     /* gauges */
void sb_metric_observe(struct sb_metric *m, double v, ...); /* histograms */

/* A gauge whose value is computed at scrape time (no labels). */
typedef double sb_metric_fn(void *arg);
struct sb_metric *sb_metric_gauge_fn(const char *name, const char *help,
                                     sb_metric_fn *fn, void *arg);

/* Append the whole exposition to out; includes process_* figures
 * (process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds) read from /proc/self. */
void sb_metrics_render(struct sb_buf *out);

/* Default latency buckets in seconds, 0.0005 .. 10. */
extern const double sb_metric_latency_buckets[];
extern const size_t sb_metric_latency_nbuckets;

void sb_metrics_free(void);

#endif
