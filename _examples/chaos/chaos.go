package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// chaos is one run: the fleet, the load on it, what watches it, and
// where it reports.
type chaos struct {
	cfg   config
	start time.Time // times count from here
	fleet *fleet
	load  *load
	watch *watcher
	out   io.Writer

	instanceFaults, serverFaults int // faults run so far, to take victims in turn
}

// record is the warm-up, or one fault and the recovery after it.
type record struct {
	n         int    // 0 for the warm-up
	kind      string // warmup, or one of allFaults
	what      string // what was done
	err       error  // what went wrong doing it
	start     time.Duration
	recovered time.Duration // the fault is over: the end of the warm-up itself
	end       time.Duration // the recovery is over
	routes    []string      // which instances each server routed to at end
}

func newChaos(cfg config, dir string, bins binaries, out io.Writer) *chaos {
	start := time.Now()
	f := newFleet(cfg, dir, bins, start)
	return &chaos{cfg: cfg, start: start, fleet: f, watch: newWatcher(f, start), out: out}
}

// now is the time since the run began.
func (c *chaos) now() time.Duration { return time.Since(c.start) }

// run drives the started fleet until the duration has passed or ctx
// ends, printing a block for the warm-up and for each fault as its
// messages settle, then the processes' usage and a summary; it ends
// every process before printing their usage.
func (c *chaos) run(ctx context.Context) {
	targets := make([]string, len(c.fleet.serverAddrs))
	for i, addr := range c.fleet.serverAddrs {
		targets[i] = "http://" + addr + "/"
	}
	body := fmt.Appendf(nil, `{"Pattern":%q}`, c.cfg.pattern)
	c.load = newLoad(targets, body, c.cfg.rate, c.cfg.timeout, c.start)
	c.printStart()

	watching, stopWatching := context.WithCancel(context.Background())
	var watchers sync.WaitGroup
	c.watch.checkReadiness()
	c.watch.sample() // before any load
	watchers.Go(func() { c.watch.watch(watching, c.cfg.sample) })

	deadline := time.Now().Add(c.cfg.duration)
	scheduled, endSchedule := context.WithDeadline(ctx, deadline)
	defer endSchedule()
	requests, cutShort := context.WithCancel(context.Background())
	defer cutShort()
	var sending sync.WaitGroup
	sending.Go(func() { c.load.run(scheduled, requests) })

	records := make(chan record, 16) // the schedule never waits for the report
	var reporting sync.WaitGroup
	reporting.Go(func() { c.report(ctx, records) })
	c.schedule(scheduled, records)
	close(records)

	sending.Wait()
	if ctx.Err() != nil {
		cutShort()
	}
	c.load.wait()
	reporting.Wait()
	if ctx.Err() == nil {
		sleep(ctx, time.Second) // for the connections the load left to close
	}
	c.watch.sample()
	stopWatching()
	watchers.Wait()

	c.fleet.stopAll(shutdownGrace)
	c.printUsage()
	c.printSummary(ctx.Err() != nil)
}

// report prints a block for each record once every message sent before
// its end has settled, or at once when ctx has ended.
func (c *chaos) report(ctx context.Context, records <-chan record) {
	for rec := range records {
		for !c.load.settled(rec.end) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
		c.printRecord(rec)
	}
}

// schedule runs the warm-up, then the faults in turn, each followed by
// the recovery time, until ctx ends; it sends the record of each as it
// ends. It starts a fault only when the fault and its recovery end
// before ctx's deadline.
func (c *chaos) schedule(ctx context.Context, records chan<- record) {
	deadline, _ := ctx.Deadline()
	warmup := record{kind: "warmup", what: "no fault", start: c.now()}
	sleep(ctx, c.cfg.warmup)
	warmup.recovered = c.now()
	warmup.end = warmup.recovered
	warmup.routes = c.watch.routes()
	records <- warmup
	for n := 1; len(c.cfg.faults) > 0 && ctx.Err() == nil; n++ {
		kind := c.cfg.faults[(n-1)%len(c.cfg.faults)]
		if time.Until(deadline) < c.length(kind)+c.cfg.recovery {
			break
		}
		rec := record{n: n, kind: kind, start: c.now()}
		rec.what, rec.err = c.inject(ctx, kind)
		rec.recovered = c.now()
		sleep(ctx, c.cfg.recovery)
		rec.end = c.now()
		rec.routes = c.watch.routes()
		records <- rec
	}
	<-ctx.Done()
}
