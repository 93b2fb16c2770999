package main

import (
	"context"
	"fmt"
	"time"
)

// The faults: each does its harm, waits, undoes it, and says what it did.

// length is how long a fault lasts, at least.
func (c *chaos) length(kind string) time.Duration {
	switch kind {
	case "stop":
		return c.cfg.stopFor
	case "redis":
		return c.cfg.redisDown
	case "server":
		return c.cfg.serverDown
	}
	return c.cfg.replaceAfter
}

// inject runs one fault and returns once it is over (the instance
// replaced, Redis or the server back), saying what it did.
func (c *chaos) inject(ctx context.Context, kind string) (string, error) {
	switch kind {
	case "kill":
		return c.replaceInstance(ctx, false)
	case "term":
		return c.replaceInstance(ctx, true)
	case "stop":
		return c.pauseInstance(ctx)
	case "redis":
		return c.restartRedis(ctx)
	case "server":
		return c.restartServer(ctx)
	}
	return "", fmt.Errorf("no fault %q", kind)
}

// replaceInstance ends an instance, with SIGTERM if graceful (it
// deregisters and exits) or else with SIGKILL (as a crash or the OOM
// killer would), then starts a new one at the same server -replace-after
// later, as a supervisor would.
func (c *chaos) replaceInstance(ctx context.Context, graceful bool) (string, error) {
	slot, victim := c.fleet.victim(c.instanceFaults)
	c.instanceFaults++
	if victim == nil {
		return "no instance left to end", fmt.Errorf("every instance has exited")
	}
	began := time.Now()
	var what string
	if graceful {
		took, killed := victim.terminate(c.cfg.timeout)
		victim.how = fmt.Sprintf("SIGTERM (fault), exited in %v", roundDuration(took))
		what = fmt.Sprintf("SIGTERM %s (at %s), exited in %v", victim.name, serverName(victim.server), roundDuration(took))
		if killed {
			victim.how = fmt.Sprintf("SIGTERM (fault); SIGKILL %v later", c.cfg.timeout)
			what = fmt.Sprintf("SIGTERM %s (at %s), still running after %v: SIGKILL", victim.name, serverName(victim.server), c.cfg.timeout)
		}
	} else {
		victim.kill("SIGKILL (fault)")
		what = fmt.Sprintf("SIGKILL %s (at %s)", victim.name, serverName(victim.server))
	}
	if !sleep(ctx, c.cfg.replaceAfter-time.Since(began)) {
		return what + "; the run ended before a new instance started", nil
	}
	next, err := c.fleet.startInstance(ctx, victim.server)
	if err != nil {
		return what + "; no new instance", err
	}
	c.fleet.replace(slot, next)
	return fmt.Sprintf("%s; %s started at %s %v later", what, next.name, serverName(next.server), roundDuration(time.Since(began))), nil
}

// pauseInstance stops an instance with SIGSTOP, as a long pause of its
// machine would, and lets it go on with SIGCONT -stop-for later.
func (c *chaos) pauseInstance(ctx context.Context) (string, error) {
	_, victim := c.fleet.victim(c.instanceFaults)
	c.instanceFaults++
	if victim == nil {
		return "no instance left to stop", fmt.Errorf("every instance has exited")
	}
	victim.pause()
	sleep(ctx, c.cfg.stopFor)
	victim.resume()
	return fmt.Sprintf("SIGSTOP %s (at %s), SIGCONT %v later", victim.name, serverName(victim.server), c.cfg.stopFor), nil
}

// restartRedis kills Redis and starts it again, empty, on the same port
// -redis-down later.
func (c *chaos) restartRedis(ctx context.Context) (string, error) {
	old := c.fleet.currentRedis()
	old.kill("SIGKILL (fault)")
	what := fmt.Sprintf("SIGKILL %s", old.name)
	if !sleep(ctx, c.cfg.redisDown) {
		return what + "; the run ended before it restarted", nil
	}
	began := time.Now()
	p, err := c.fleet.startRedis(ctx)
	if err != nil {
		return what + "; no restart", err
	}
	return fmt.Sprintf("%s; %s started empty on the same port %v later, answering in %v", what, p.name, c.cfg.redisDown, roundDuration(time.Since(began))), nil
}

// restartServer kills a server, the servers in turn, and starts it again
// on the same port -server-down later.
func (c *chaos) restartServer(ctx context.Context) (string, error) {
	i := c.serverFaults % len(c.fleet.serverAddrs)
	c.serverFaults++
	old := c.fleet.server(i)
	old.kill("SIGKILL (fault)")
	what := fmt.Sprintf("SIGKILL %s (%s)", old.name, c.fleet.serverAddrs[i])
	if !sleep(ctx, c.cfg.serverDown) {
		return what + "; the run ended before it restarted", nil
	}
	began := time.Now()
	p, err := c.fleet.startServer(ctx, i)
	if err != nil {
		return what + "; no restart", err
	}
	return fmt.Sprintf("%s; %s started on the same port %v later, answering in %v", what, p.name, c.cfg.serverDown, roundDuration(time.Since(began))), nil
}
