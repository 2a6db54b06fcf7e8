/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvdex-replay's outputs: one CSV row per run, a markdown table with one row
 * per configuration (runs that differ only in the seed are grouped: mean and
 * [min-max]), and one PNG chart per headline metric drawn by gnuplot from
 * .dat files that are kept next to it (with the .gp script) so a chart can
 * be redrawn or restyled without rerunning anything.
 */
#include "perf/replay/replay.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void
replay_csv_header(FILE *f)
{
	fprintf(f, "workload,router,evict,workers,capacity_tokens,rate,order,seed,x,requests,"
		   "hit_rate,index_hit_rate,ideal_hit_rate,ttft_p50_ms,ttft_p95_ms,ttft_p99_ms,"
		   "ttft_mean_ms,e2e_p50_ms,e2e_p95_ms,e2e_p99_ms,e2e_mean_ms,queue_p50_ms,"
		   "req_per_s,tok_per_s,imbalance,busy_cv,route_ns_mean,route_ns_p99,"
		   "decide_ns_mean,evict_calls,evicted_blocks,evict_ns_per_call,"
		   "evict_ns_per_block,publish_ns_mean,lookups,events,publishes,load_reports,"
		   "lookups_per_s,events_per_s,dropped_blocks,sim_s,wall_s\n");
}

void
replay_csv_row(FILE *f, const struct replay_row *w)
{
	const struct replay_result *r = &w->r;

	fprintf(f,
		"%s,%s,%s,%u,%llu,%g,%s,%llu,\"%s\",%zu,%.5f,%.5f,%.5f,%.2f,%.2f,%.2f,%.2f,%.2f,"
		"%.2f,%.2f,%.2f,%.2f,%.4f,%.1f,%.4f,%.4f,%.0f,%.0f,%.0f,%llu,%llu,%.0f,%.1f,%.0f,"
		"%llu,%llu,%llu,%llu,%.0f,%.0f,%llu,%.3f,%.3f\n",
		w->workload, w->router, w->evict, w->workers,
		(unsigned long long)w->capacity_tokens, w->rate, w->order,
		(unsigned long long)w->seed, w->x, r->requests, r->hit_rate, r->index_hit_rate,
		r->ideal_hit_rate, r->ttft_p50, r->ttft_p95, r->ttft_p99, r->ttft_mean, r->e2e_p50,
		r->e2e_p95, r->e2e_p99, r->e2e_mean, r->queue_p50, r->req_per_s, r->tok_per_s,
		r->imbalance, r->busy_cv, r->route_ns_mean, r->route_ns_p99, r->decide_ns_mean,
		(unsigned long long)r->evict_calls, (unsigned long long)r->evicted_blocks,
		r->evict_ns_per_call, r->evict_ns_per_block, r->publish_ns_mean,
		(unsigned long long)r->lookups, (unsigned long long)r->events,
		(unsigned long long)r->publishes, (unsigned long long)r->load_reports,
		r->lookups_per_s, r->events_per_s, (unsigned long long)r->dropped_blocks,
		r->sim_ms / 1000.0, r->wall_s);
	fflush(f);
}

/* ---- Grouping over seeds ------------------------------------------------------------ */

static bool
same_config(const struct replay_row *a, const struct replay_row *b)
{
	return strcmp(a->workload, b->workload) == 0 && strcmp(a->router, b->router) == 0 &&
	       strcmp(a->evict, b->evict) == 0 && a->workers == b->workers &&
	       a->capacity_tokens == b->capacity_tokens && a->rate == b->rate &&
	       strcmp(a->order, b->order) == 0 && strcmp(a->x, b->x) == 0;
}

struct agg {
	double mean, min, max;
	unsigned n;
};

typedef double (*metric_fn)(const struct replay_result *r);

static double
m_hit(const struct replay_result *r)
{
	return r->hit_rate;
}
static double
m_idx_hit(const struct replay_result *r)
{
	return r->index_hit_rate;
}
static double
m_ttft50(const struct replay_result *r)
{
	return r->ttft_p50 / 1000.0;
}
static double
m_ttft95(const struct replay_result *r)
{
	return r->ttft_p95 / 1000.0;
}
static double
m_e2e50(const struct replay_result *r)
{
	return r->e2e_p50 / 1000.0;
}
static double
m_e2e95(const struct replay_result *r)
{
	return r->e2e_p95 / 1000.0;
}
static double
m_e2e99(const struct replay_result *r)
{
	return r->e2e_p99 / 1000.0;
}
static double
m_rps(const struct replay_result *r)
{
	return r->req_per_s;
}
static double
m_imb(const struct replay_result *r)
{
	return r->imbalance;
}
static double
m_route(const struct replay_result *r)
{
	return r->route_ns_mean / 1000.0;
}
static double
m_decide(const struct replay_result *r)
{
	return r->decide_ns_mean / 1000.0;
}
static double
m_evict(const struct replay_result *r)
{
	return r->evict_ns_per_call / 1000.0;
}
static double
m_lps(const struct replay_result *r)
{
	return r->lookups_per_s;
}
static double
m_eps(const struct replay_result *r)
{
	return r->events_per_s;
}

/* Aggregate metric m over the rows with the configuration of rows[i]. */
static struct agg
aggregate(const struct replay_row *rows, size_t n, size_t i, metric_fn m)
{
	struct agg a = {0.0, INFINITY, -INFINITY, 0};

	for (size_t j = 0; j < n; j++) {
		if (same_config(&rows[i], &rows[j])) {
			double v = m(&rows[j].r);

			a.mean += v;
			a.min = v < a.min ? v : a.min;
			a.max = v > a.max ? v : a.max;
			a.n++;
		}
	}
	a.mean /= a.n ? a.n : 1;
	return a;
}

/* Is rows[i] the first row of its configuration? */
static bool
first_of_config(const struct replay_row *rows, size_t i)
{
	for (size_t j = 0; j < i; j++) {
		if (same_config(&rows[i], &rows[j])) {
			return false;
		}
	}
	return true;
}

static void
md_cell(FILE *f, struct agg a, const char *fmt)
{
	fputs(" ", f);
	fprintf(f, fmt, a.mean);
	if (a.n > 1) {
		fputs(" [", f);
		fprintf(f, fmt, a.min);
		fputs("–", f);
		fprintf(f, fmt, a.max);
		fputs("]", f);
	}
	fputs(" |", f);
}

void
replay_markdown(FILE *f, const struct replay_row *rows, size_t n, const char *xname)
{
	bool hx = xname != NULL && xname[0] != '\0';

	fprintf(f,
		"| workload |%s router | evict | workers | cap (tok) | seeds | hit rate | "
		"index hit | TTFT p50 (s) | TTFT p95 (s) | E2E p50 (s) | E2E p95 (s) | "
		"E2E p99 (s) | req/s | imbalance | route µs | evict µs/call |\n",
		hx ? " x |" : "");
	fprintf(f,
		"|---|%s---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		"---:|---:|\n",
		hx ? "---|" : "");
	for (size_t i = 0; i < n; i++) {
		struct agg a = aggregate(rows, n, i, m_hit);

		if (!first_of_config(rows, i)) {
			continue;
		}
		fprintf(f, "| %s |", rows[i].workload);
		if (hx) {
			fprintf(f, " %s |", rows[i].x);
		}
		fprintf(f, " %s | %s | %u | %llu | %u |", rows[i].router, rows[i].evict,
			rows[i].workers, (unsigned long long)rows[i].capacity_tokens, a.n);
		md_cell(f, a, "%.3f");
		md_cell(f, aggregate(rows, n, i, m_idx_hit), "%.3f");
		md_cell(f, aggregate(rows, n, i, m_ttft50), "%.2f");
		md_cell(f, aggregate(rows, n, i, m_ttft95), "%.2f");
		md_cell(f, aggregate(rows, n, i, m_e2e50), "%.2f");
		md_cell(f, aggregate(rows, n, i, m_e2e95), "%.2f");
		md_cell(f, aggregate(rows, n, i, m_e2e99), "%.2f");
		md_cell(f, (struct agg){aggregate(rows, n, i, m_rps).mean, 0, 0, 1}, "%.2f");
		md_cell(f, (struct agg){aggregate(rows, n, i, m_imb).mean, 0, 0, 1}, "%.2f");
		md_cell(f, (struct agg){aggregate(rows, n, i, m_route).mean, 0, 0, 1}, "%.1f");
		md_cell(f, (struct agg){aggregate(rows, n, i, m_evict).mean, 0, 0, 1}, "%.1f");
		fputs("\n", f);
	}
	fprintf(f, "\nOverheads (mean over runs): ");
	if (n > 0) {
		double lps = 0, eps = 0, dec = 0;

		for (size_t i = 0; i < n; i++) {
			lps += m_lps(&rows[i].r) / n;
			eps += m_eps(&rows[i].r) / n;
			dec += m_decide(&rows[i].r) / n;
		}
		fprintf(f,
			"policy step %.2f µs per decision; %.0f index lookups/s and %.0f "
			"events/s sustained by the replay.\n",
			dec, lps, eps);
	}
}

/* ---- Charts ------------------------------------------------------------------------------ */

struct chart {
	const char *name;
	const char *ylabel;
	metric_fn m;
};

static const struct chart charts[] = {
	{"hit_rate", "token hit rate", m_hit},
	{"ttft_p50", "TTFT p50 (s)", m_ttft50},
	{"e2e_p50", "end-to-end latency p50 (s)", m_e2e50},
	{"e2e_p95", "end-to-end latency p95 (s)", m_e2e95},
	{"throughput", "requests/s", m_rps},
	{"imbalance", "busy time max/mean", m_imb},
};

static void
series_name(const struct replay_row *r, char *buf, size_t len)
{
	snprintf(buf, len, "%s+%s", r->router, r->evict);
}

/* Distinct series (router+evict) in order of first appearance. */
static size_t
list_series(const struct replay_row *rows, size_t n, char (*names)[40], size_t cap)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		char s[40];
		bool found = false;

		series_name(&rows[i], s, sizeof(s));
		for (size_t j = 0; j < k && !found; j++) {
			found = strcmp(names[j], s) == 0;
		}
		if (!found && k < cap) {
			snprintf(names[k++], sizeof(names[0]), "%s", s);
		}
	}
	return k;
}

/* <dir>/<chart>-<series>.dat: one line per x: label mean min max. */
static int
write_dat(const char *path, const struct replay_row *rows, size_t n, const char *series,
	  metric_fn m, bool by_series)
{
	FILE *f = fopen(path, "w");

	if (f == NULL) {
		return -errno;
	}
	for (size_t i = 0; i < n; i++) {
		char s[40];
		struct agg a;

		series_name(&rows[i], s, sizeof(s));
		if ((!by_series && strcmp(s, series) != 0) || !first_of_config(rows, i)) {
			continue;
		}
		a = aggregate(rows, n, i, m);
		fprintf(f, "\"%s\" %g %g %g\n", by_series ? s : rows[i].x, a.mean, a.min, a.max);
	}
	fclose(f);
	return 0;
}

static int
write_chart(const char *dir, const struct chart *c, const struct replay_row *rows, size_t n,
	    const char *xname, char (*series)[40], size_t ns)
{
	bool sweep = xname != NULL && xname[0] != '\0';
	char path[512], dat[512];
	FILE *gp;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/%s.gp", dir, c->name);
	gp = fopen(path, "w");
	if (gp == NULL) {
		return -errno;
	}
	fprintf(gp,
		"# kvdex-replay chart: gnuplot %s.gp\nset terminal png size 900,540\n"
		"set output '%s.png'\nset ylabel '%s'\nset grid ytics\nset key outside right\n"
		"set yrange [0:*]\nset offsets 0.3, 0.3, 0, 0\n",
		c->name, c->name, c->ylabel);
	if (!sweep) {
		snprintf(dat, sizeof(dat), "%s/%s.dat", dir, c->name);
		rc = write_dat(dat, rows, n, "", c->m, true);
		fprintf(gp,
			"set xlabel 'router+eviction'\nset style fill solid 0.5\nset boxwidth 0.6\n"
			"plot '%s.dat' using 0:2:xtic(1) with boxes notitle, "
			"'' using 0:2:3:4 with yerrorbars lc rgb 'black' pt 0 notitle\n",
			c->name);
	} else {
		fprintf(gp, "set xlabel '%s'\nplot ", xname);
		for (size_t k = 0; k < ns && rc == 0; k++) {
			snprintf(dat, sizeof(dat), "%s/%s-%s.dat", dir, c->name, series[k]);
			rc = write_dat(dat, rows, n, series[k], c->m, false);
			fprintf(gp,
				"%s'%s-%s.dat' using 0:2:3:4:xtic(1) with yerrorlines lw 2 title "
				"'%s'",
				k ? ", " : "", c->name, series[k], series[k]);
		}
		fputs("\n", gp);
	}
	fclose(gp);
	if (rc < 0) {
		return rc;
	}
	snprintf(path, sizeof(path), "cd '%s' && gnuplot %s.gp", dir, c->name);
	return system(path) == 0 ? 0 : -EIO;
}

int
replay_charts(const char *dir, const struct replay_row *rows, size_t n, const char *xname)
{
	char series[32][40];
	size_t ns = list_series(rows, n, series, 32);
	int made = 0;

	if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
		fprintf(stderr, "kvdex-replay: gnuplot not found: no charts (apt-get install "
				"gnuplot-nox)\n");
		return 0;
	}
	for (size_t i = 0; i < sizeof(charts) / sizeof(charts[0]); i++) {
		int rc = write_chart(dir, &charts[i], rows, n, xname, series, ns);

		if (rc < 0) {
			fprintf(stderr, "kvdex-replay: chart %s: %s\n", charts[i].name,
				strerror(-rc));
			return rc;
		}
		made++;
	}
	return made;
}
