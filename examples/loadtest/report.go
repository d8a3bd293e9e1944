package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// target is a ratio the issue sets for a configuration.
type target struct {
	minRatio  float64 // requests/s gatehouse/baseline
	maxP99    float64 // p99 gatehouse/baseline, 0: none
	maxRSSMiB float64 // gatehouse peak RSS, 0: none
	noFetches bool    // no JWKS fetch during the load
}

var targets = map[string]target{
	"one-rs256":    {minRatio: 0.95, maxP99: 1.1},
	"pool-rs256":   {minRatio: 0.9, maxRSSMiB: 40},
	"cold-rs256":   {minRatio: 0.6},
	"cold-es256":   {minRatio: 0.45},
	"badsig-rs256": {minRatio: 1, noFetches: true},
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func col(ms []measurement, f func(measurement) float64) []float64 {
	out := make([]float64, len(ms))
	for i, m := range ms {
		out[i] = f(m)
	}
	return out
}

func ratios(b, g []measurement, f func(measurement) float64) []float64 {
	out := make([]float64, len(b))
	for i := range b {
		if d := f(b[i]); d > 0 {
			out[i] = f(g[i]) / d
		}
	}
	return out
}

func rps(m measurement) float64 { return m.rps }
func p50(m measurement) float64 { return float64(m.p50) }
func p99(m measurement) float64 { return float64(m.p99) }
func cpu(m measurement) float64 { return float64(m.cpuPerReq) }
func rss(m measurement) float64 { return float64(m.rssKiB) / 1024 }

// report prints the medians as a Markdown table, then the targets.
func report(w io.Writer, o *options, cfgs []config, results map[string][2][]measurement) {
	fmt.Fprintf(w, "\n%d round(s) × %s measured (+%s warm-up), %d connections, medians over rounds; ratio = median of per-round gatehouse/baseline\n\n",
		o.rounds, o.duration, o.warmup, o.conns)
	if len(o.env) > 0 {
		fmt.Fprintf(w, "gatehouse environment: %s\n\n", strings.Join(o.env, " "))
	}
	fmt.Fprintln(w, "| configuration | proxy | req/s | p50 | p99 | CPU/req | peak RSS | ratio req/s | ratio p99 | ratio CPU/req | JWKS fetches | cache hits | bad answers |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, c := range cfgs {
		r := results[c.name]
		b, g := r[0], r[1]
		for which, ms := range [][]measurement{b, g} {
			var bad, fetches int64
			exhausted := false
			for _, m := range ms {
				bad += m.unexpected
				fetches += m.fetches
				exhausted = exhausted || m.exhausted
			}
			ratio, rp99, rcpu, fs, hits := "", "", "", "", ""
			if which == 1 {
				ratio = fmt.Sprintf("**%.2f×**", median(ratios(b, g, rps)))
				rp99 = fmt.Sprintf("%.2f×", median(ratios(b, g, p99)))
				rcpu = fmt.Sprintf("%.2f×", median(ratios(b, g, cpu)))
				fs = fmt.Sprint(fetches)
				if hr := median(col(ms, func(m measurement) float64 { return m.hitRatio })); hr >= 0 {
					hits = fmt.Sprintf("%.1f%%", 100*hr)
				}
			}
			name := c.name
			if exhausted {
				name += " (tokens ran out)"
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %s | %.1f MiB | %s | %s | %s | %s | %s | %d |\n",
				name, proxyName(which), median(col(ms, rps)),
				fmtDur(time.Duration(median(col(ms, p50)))), fmtDur(time.Duration(median(col(ms, p99)))),
				fmtDur(time.Duration(median(col(ms, cpu)))), median(col(ms, rss)), ratio, rp99, rcpu, fs, hits, bad)
		}
	}
	fmt.Fprintln(w)
	for _, c := range cfgs {
		t, ok := targets[c.name]
		if !ok {
			fmt.Fprintf(w, "- %s: %s (reported, not targeted)\n", c.name, c.note)
			continue
		}
		b, g := results[c.name][0], results[c.name][1]
		var checks []string
		met := true
		rr := median(ratios(b, g, rps))
		checks = append(checks, fmt.Sprintf("req/s %.2f× (target ≥ %.2f×)", rr, t.minRatio))
		met = met && rr >= t.minRatio
		if t.maxP99 > 0 {
			rp := median(ratios(b, g, p99))
			checks = append(checks, fmt.Sprintf("p99 %.2f× (target ≤ %.2f×)", rp, t.maxP99))
			met = met && rp <= t.maxP99
		}
		if t.maxRSSMiB > 0 {
			mr := median(col(g, rss))
			checks = append(checks, fmt.Sprintf("peak RSS %.1f MiB (target ≤ %.0f MiB)", mr, t.maxRSSMiB))
			met = met && mr <= t.maxRSSMiB
		}
		if t.noFetches {
			var f int64
			for _, m := range g {
				f += m.fetches
			}
			checks = append(checks, fmt.Sprintf("JWKS fetches during load %d (target 0)", f))
			met = met && f == 0
		}
		verdict := "met"
		if !met {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "- %s: %s — %s: %s\n", c.name, c.note, verdict, strings.Join(checks, ", "))
	}
}
