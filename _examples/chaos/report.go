package main

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// printStart says what runs and what will happen to it.
func (c *chaos) printStart() {
	f := c.fleet
	var servers, instances []string
	for i, addr := range f.serverAddrs {
		servers = append(servers, serverName(i)+" "+addr)
	}
	for _, in := range f.instances {
		instances = append(instances, in.name+" at "+serverName(in.server))
	}
	faults := strings.Join(c.cfg.faults, ", ")
	if faults == "" {
		faults = "none"
	}
	fmt.Fprintf(c.out, "fleet:  redis %s; servers %s (ttl %v, resync %v, upstream timeout %v); instances of %s: %s\n",
		f.redisAddr, strings.Join(servers, ", "), c.cfg.ttl, c.cfg.resync, c.cfg.upstreamTimeout, c.cfg.pattern, strings.Join(instances, ", "))
	fmt.Fprintf(c.out, "load:   %d messages/s to the servers in turn, each bounded by %v; slow means over %v\n", c.cfg.rate, c.cfg.timeout, c.cfg.slow)
	fmt.Fprintf(c.out, "faults: %s, in turn for %v after a %v warm-up, each followed by %v of recovery\n", faults, c.cfg.duration, c.cfg.warmup, c.cfg.recovery)
}

// printRecord prints the block of the warm-up or of one fault.
func (c *chaos) printRecord(rec record) {
	var b strings.Builder
	if rec.n == 0 {
		fmt.Fprintf(&b, "\nwarm-up  %s - %s  %s\n", clock(rec.start), clock(rec.end), rec.what)
	} else {
		fmt.Fprintf(&b, "\n#%d %s  %s - %s, recovery until %s\n   %s\n", rec.n, rec.kind, clock(rec.start), clock(rec.recovered), clock(rec.end), rec.what)
	}
	if rec.err != nil {
		fmt.Fprintf(&b, "   could not: %v\n", rec.err)
	}
	fmt.Fprintf(&b, "   %-10s %6s %7s %6s %9s %9s  %s\n", "", "sent", "failed", "slow", "p50", "p99", "answered by")
	windows := []struct {
		name     string
		from, to time.Duration
	}{{"fault", rec.start, rec.recovered}, {"recovery", rec.recovered, rec.end}}
	if rec.n == 0 {
		windows = windows[:1]
		windows[0].name = "no fault"
	}
	var failures []string
	for _, w := range windows {
		s := c.stats(c.load.between(w.from, w.to))
		fmt.Fprintf(&b, "   %-10s %6d %7d %6d %9s %9s  %s\n", w.name, s.sent, s.failed, s.slow,
			latency(s.percentile(50)), latency(s.percentile(99)), c.shares(s, w.from, w.to))
		if s.failed > 0 {
			failures = append(failures, fmt.Sprintf("%-9s %s from +%.1fs to +%.1fs", w.name+":", s.failures(),
				(s.firstFailure-rec.start).Seconds(), (s.lastFailure-rec.start).Seconds()))
		}
	}
	label := "failed"
	for _, f := range failures {
		fmt.Fprintf(&b, "   %-10s %s\n", label, f)
		label = ""
	}
	fmt.Fprintf(&b, "   %-10s %s\n", "/readyz", c.readinessLine(rec.start, rec.end))
	fmt.Fprintf(&b, "   %-10s %s (at %s)\n", "routes", strings.Join(rec.routes, "; "), clock(rec.end))
	fmt.Fprint(c.out, b.String())
}

// readinessLine says how each server answered GET /readyz from from to
// to, times counted from from.
func (c *chaos) readinessLine(from, to time.Duration) string {
	at, changes := c.watch.readiness(from, to)
	var parts []string
	for i := range c.fleet.serverAddrs {
		name := serverName(i)
		part := name + " " + cmp.Or(at[name], "unknown")
		for _, ch := range changes {
			if ch.server == name {
				part += fmt.Sprintf(", %s at +%.1fs", ch.state, (ch.at - from).Seconds())
			}
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

// shares says which share of the answers from from to to each instance
// gave, naming those that ran meanwhile and gave none.
func (c *chaos) shares(s stats, from, to time.Duration) string {
	counts := maps.Clone(s.byInstance)
	for _, p := range c.fleet.processes() {
		if p.kind == "instance" && p.up.Load() && p.started < to && (!p.exited() || p.ended > from) {
			counts[p.name] += 0
		}
	}
	names := slices.Collect(maps.Keys(counts))
	sortNames(names)
	var parts []string
	for _, name := range names {
		share := 0.0
		if s.answered > 0 {
			share = 100 * float64(counts[name]) / float64(s.answered)
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", name, share))
	}
	return strings.Join(parts, "  ")
}

// stats are the figures of a set of messages.
type stats struct {
	sent, failed, slow, answered int
	latencies                    []time.Duration // sorted
	byInstance                   map[string]int  // answers per instance
	byOutcome                    map[string]map[string]int
	firstFailure, lastFailure    time.Duration // when the first and last failed message was sent
}

// stats sums up rs, leaving out the messages cut short by Ctrl-C.
func (c *chaos) stats(rs []result) stats {
	s := stats{byInstance: make(map[string]int), byOutcome: make(map[string]map[string]int)}
	for _, r := range rs {
		if r.canceled() {
			continue
		}
		s.sent++
		s.latencies = append(s.latencies, r.took)
		if r.took > c.cfg.slow {
			s.slow++
		}
		if r.ok() {
			s.answered++
			s.byInstance[r.instance]++
			continue
		}
		if s.failed == 0 || r.sent < s.firstFailure {
			s.firstFailure = r.sent
		}
		s.lastFailure = max(s.lastFailure, r.sent)
		s.failed++
		o := r.outcome()
		if s.byOutcome[o] == nil {
			s.byOutcome[o] = make(map[string]int)
		}
		s.byOutcome[o][serverName(r.server)]++
	}
	slices.Sort(s.latencies)
	return s
}

// percentile returns the p-th percentile latency, or -1 when there are
// none.
func (s stats) percentile(p int) time.Duration {
	if len(s.latencies) == 0 {
		return -1
	}
	return s.latencies[(len(s.latencies)-1)*p/100]
}

// failures lists the failures by outcome, most frequent first, each with
// the servers that answered so (or were sent to, for transport errors).
func (s stats) failures() string {
	total := func(o string) int {
		n := 0
		for _, k := range s.byOutcome[o] {
			n += k
		}
		return n
	}
	outcomes := slices.Collect(maps.Keys(s.byOutcome))
	slices.SortFunc(outcomes, func(a, b string) int { return cmp.Or(total(b)-total(a), strings.Compare(a, b)) })
	var parts []string
	for _, o := range outcomes {
		servers := slices.Sorted(maps.Keys(s.byOutcome[o]))
		var by []string
		for _, srv := range servers {
			by = append(by, fmt.Sprintf("%s %d", srv, s.byOutcome[o][srv]))
		}
		parts = append(parts, fmt.Sprintf("%s ×%d (%s)", o, total(o), strings.Join(by, ", ")))
	}
	return strings.Join(parts, ", ")
}

// printUsage prints the memory and goroutines of every process the run
// started.
func (c *chaos) printUsage() {
	fmt.Fprintf(c.out, "\nprocesses, sampled every %v: resident memory in MiB and goroutines (first, least, most, last);\n", c.cfg.sample)
	fmt.Fprintf(c.out, "the first sample before any load for the processes of the start, the last after the load ended\n")
	fmt.Fprintf(c.out, "%-9s %8s %15s %7s  %-23s  %-19s  %s\n", "process", "pid", "lived", "samples", "RSS MiB", "goroutines", "ended")
	for _, p := range c.fleet.processes() {
		u := c.watch.usageOf(p)
		rss := func(v int64) string { return fmt.Sprintf("%.1f", float64(v)/(1<<20)) }
		num := func(v int64) string { return fmt.Sprint(v) }
		how := p.how
		if how == "" {
			how = fmt.Sprintf("on its own (%v)", p.status)
		}
		fmt.Fprintf(c.out, "%-9s %8d %15s %7d  %-23s  %-19s  %s\n", p.name, p.cmd.Process.Pid,
			clock(p.started)+"-"+clock(p.ended), u.samples, u.rss.format(rss), u.goroutines.format(num), how)
	}
}

// format writes the first, least, most and last value with f, or "-"
// when there were none.
func (s series) format(f func(int64) string) string {
	if s.n == 0 {
		return "-"
	}
	return fmt.Sprintf("%s %s %s %s", f(s.first), f(s.min), f(s.max), f(s.last))
}

// printSummary prints the figures of the whole run.
func (c *chaos) printSummary(interrupted bool) {
	all := c.load.between(0, c.now())
	s := c.stats(all)
	pct := 0.0
	if s.sent > 0 {
		pct = 100 * float64(s.failed) / float64(s.sent)
	}
	fmt.Fprintf(c.out, "\nsummary: %d sent, %d failed (%.2f%%), %d slow, latency p50 %s p99 %s; %d sent over %v late",
		s.sent, s.failed, pct, s.slow, latency(s.percentile(50)), latency(s.percentile(99)), c.load.lateSends(), lateBy)
	if interrupted {
		fmt.Fprintf(c.out, "; interrupted, %d cut short", len(all)-s.sent)
	}
	fmt.Fprintln(c.out)
	if s.failed > 0 {
		fmt.Fprintf(c.out, "failed:  %s\n", s.failures())
	}
	if e := c.load.example("other"); e != "" {
		fmt.Fprintf(c.out, "other:   %s\n", e)
	}
}

// clock writes a time since the run began as m:ss.s.
func clock(d time.Duration) string {
	d = d.Round(100 * time.Millisecond)
	return fmt.Sprintf("%d:%04.1f", int(d.Minutes()), (d % time.Minute).Seconds())
}

// latency writes a latency in milliseconds below a second, else in
// seconds; "-" for none.
func latency(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// roundDuration rounds d for reading.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d < time.Second:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(10 * time.Millisecond)
}

// sortNames sorts names such as "i2" and "i10 (gone)" by the number of
// their first word.
func sortNames(names []string) {
	slices.SortFunc(names, func(a, b string) int {
		a, _, _ = strings.Cut(a, " ")
		b, _, _ = strings.Cut(b, " ")
		return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b))
	})
}
