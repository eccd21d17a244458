/* metrics — counters, gauges and latency histograms in Prometheus text form.
 *
 * Series are identified by a name and a label string written by the caller
 * ('route="calls_create",status="201"'); label values are twigate's own
 * route names, statuses and codes, never user input. The one metrics struct
 * is created by main and shared by every thread; all calls are thread-safe. */
#ifndef TWIGATE_METRICS_H
#define TWIGATE_METRICS_H

#include <stddef.h>

typedef struct metrics metrics;

/* Distinct series kept; beyond it new series are dropped (and counted in
 * twigate_metrics_dropped_total), since labels come from bounded sets. */
#define METRICS_MAX_SERIES 2048

metrics *metrics_create(void);
void     metrics_destroy(metrics *m);   /* accepts NULL */

void metrics_inc(metrics *m, const char *name, const char *labels, double v);
void metrics_gauge(metrics *m, const char *name, const char *labels, double v);
/* Sets a counter from a monotonic count kept elsewhere (e.g. the store's). */
void metrics_counter_set(metrics *m, const char *name, const char *labels, double v);
/* Histogram of seconds with fixed buckets from 0.5 ms to 30 s. */
void metrics_observe(metrics *m, const char *name, const char *labels, double seconds);
/* The exposition text (caller frees), with HELP/TYPE lines from the
 * descriptions registered in metrics.c. */
char *metrics_render(metrics *m, size_t *len);

#endif
