// Command chaos runs a small go-nano fleet on loopback and breaks it on a
// schedule, to watch how the library behaves under faults for longer than
// its tests do.
//
// It builds cmd/nano-server and testdata/instance into a temporary folder
// and starts a redis-server of its own (from PATH, on a free loopback port,
// without persistence), -servers nano servers that share it, and
// -instances instances of -pattern, each registered at the next server in
// turn. It sends -rate messages a second to the servers in turn, on
// schedule whatever the answers (an open loop), each bounded by -timeout.
// After -warmup without faults it runs the faults named by -faults one at
// a time, each followed by -recovery without faults, over and over until
// -duration ends:
//
//	kill    SIGKILL an instance; start a new one at the same server -replace-after later
//	stop    SIGSTOP an instance for -stop-for, then SIGCONT
//	term    SIGTERM an instance (it deregisters and exits); start a new one -replace-after later
//	redis   SIGKILL Redis for -redis-down, then start it again, empty, on the same port
//	server  SIGKILL a server for -server-down, then start it again on the same port
//
// Run it from the root of the repository:
//
//	go run ./_examples/chaos -duration 10m
//	go run ./_examples/chaos -duration 2m -faults stop,redis -rate 500
//
// For the warm-up and for each fault it prints one block: what it did and
// when; the messages sent during the fault and during the recovery after
// it, how many failed, by status or transport error and by server, and
// how many took longer than -slow (failed or not), with the 50th and 99th
// percentile latency; the share of the answers each instance gave; when
// each server's GET /readyz changed; and which instances each server
// routes to once the recovery has ended.
//
// Every -sample it reads the resident memory (VmRSS in /proc/PID/status,
// so on Linux only) of every process it started, and the go_goroutines
// gauge of GET /metrics of each server and instance. At the end it prints
// a table of them, per process, with the first, least, most and last
// value (the first taken before any load, the last after the load has
// stopped), so that a leak shows, then a summary line.
//
// It reports; it does not judge. It exits with 0 after a run, whatever
// failed, and with 1 only when it could not run (no redis-server on PATH,
// a build that failed, a fleet that did not come up). It stops by itself
// once -duration has passed, or on Ctrl-C, and ends every process it
// started; -keep keeps the folder with their logs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

// config is what the flags say.
type config struct {
	duration        time.Duration
	servers         int
	instances       int
	pattern         string
	rate            int
	timeout         time.Duration
	slow            time.Duration
	faults          []string
	warmup          time.Duration
	recovery        time.Duration
	replaceAfter    time.Duration
	stopFor         time.Duration
	redisDown       time.Duration
	serverDown      time.Duration
	ttl             time.Duration
	resync          time.Duration
	upstreamTimeout time.Duration
	sample          time.Duration
	keep            bool
}

// allFaults are the faults -faults may name, in their default order.
const allFaults = "kill,stop,term,redis,server"

// parseFlags reads the command line.
func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.DurationVar(&c.duration, "duration", 5*time.Minute, "how long to run, warm-up included")
	fs.IntVar(&c.servers, "servers", 2, "nano servers sharing the Redis")
	fs.IntVar(&c.instances, "instances", 3, "instances of the pattern")
	fs.StringVar(&c.pattern, "pattern", "role:echo", "the pattern the instances serve")
	fs.IntVar(&c.rate, "rate", 200, "messages sent per second, whatever the answers")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "bound of each message, answer included")
	fs.DurationVar(&c.slow, "slow", time.Second, "messages that take longer count as slow")
	faults := fs.String("faults", allFaults, "faults to run, in this order, comma-separated: some of "+allFaults)
	fs.DurationVar(&c.warmup, "warmup", 10*time.Second, "time without faults before the first")
	fs.DurationVar(&c.recovery, "recovery", 10*time.Second, "time without faults after each")
	fs.DurationVar(&c.replaceAfter, "replace-after", 5*time.Second, "kill and term: time until the new instance starts")
	fs.DurationVar(&c.stopFor, "stop-for", 15*time.Second, "stop: time between SIGSTOP and SIGCONT")
	fs.DurationVar(&c.redisDown, "redis-down", 20*time.Second, "redis: time Redis stays down")
	fs.DurationVar(&c.serverDown, "server-down", 10*time.Second, "server: time the server stays down")
	fs.DurationVar(&c.ttl, "ttl", 6*time.Second, "the servers' -ttl: registrations expire unless renewed (at a third of it)")
	fs.DurationVar(&c.resync, "resync", 2*time.Second, "the servers' -resync: full reload of their mirrors from Redis")
	fs.DurationVar(&c.upstreamTimeout, "upstream-timeout", 5*time.Second, "the servers' -upstream-timeout: bound of a proxied call, then 504")
	fs.DurationVar(&c.sample, "sample", 5*time.Second, "interval of the memory and goroutine samples")
	fs.BoolVar(&c.keep, "keep", false, "keep the work folder, with the logs of every process, and print its path")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for f := range strings.SplitSeq(*faults, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(strings.Split(allFaults, ","), f) {
			return c, fmt.Errorf("-faults: %q is none of %s", f, allFaults)
		}
		c.faults = append(c.faults, f)
	}
	var errs []error
	positive := func(name string, v int64) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be above zero", name))
		}
	}
	positive("duration", int64(c.duration))
	positive("servers", int64(c.servers))
	positive("instances", int64(c.instances))
	positive("rate", int64(c.rate))
	positive("timeout", int64(c.timeout))
	positive("ttl", int64(c.ttl))
	positive("sample", int64(c.sample))
	if c.servers > 99 || c.instances > 99 {
		errs = append(errs, errors.New("-servers and -instances are at most 99: this is a small fleet on one machine"))
	}
	return c, errors.Join(errs...)
}

// run starts the fleet, drives it through the faults until the duration
// has passed or ctx is cancelled, prints what it saw to out, and ends
// every process it started. It returns an error only when it could not
// run.
func run(ctx context.Context, cfg config, out io.Writer) error {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return errors.New("redis-server is not on PATH: the fleet's registry needs one")
	}
	dir, err := os.MkdirTemp("", "nano-chaos-")
	if err != nil {
		return err
	}
	defer func() {
		if cfg.keep {
			fmt.Fprintf(out, "\nlogs of every process kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	bins, err := build(ctx, dir, redisBin)
	if err != nil {
		return err
	}
	c := newChaos(cfg, dir, bins, out)
	defer c.fleet.stopAll(shutdownGrace)
	if err := c.fleet.start(ctx); err != nil {
		return fmt.Errorf("starting the fleet: %w", err)
	}
	c.run(ctx)
	return nil
}
