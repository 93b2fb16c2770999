package nano

import (
	"context"
	"math"
	"time"
)

// How a Server keeps its mirror in step with the registry: events from
// other servers as they happen, a full resync now and then, and a sweep
// that drops the instances whose registration expired.

// maintain runs the resyncs and the sweeps until Shutdown, which also
// cancels a resync in progress.
func (s *Server) maintain() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	sweep := time.NewTicker(min(time.Second, s.opts.TTL/10))
	defer sweep.Stop()
	var resync, ping <-chan time.Time
	if s.reg.shared() && s.opts.ResyncInterval > 0 {
		t := time.NewTicker(s.opts.ResyncInterval)
		defer t.Stop()
		resync = t.C
	}
	if s.reg.shared() {
		t := time.NewTicker(readinessInterval)
		defer t.Stop()
		ping = t.C
	}
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-sweep.C:
			s.sweep(s.now())
		case <-ping:
			s.checkRegistry(ctx)
		case <-resync:
			s.resyncLogged(ctx)
		case <-s.resyncNow:
			s.resyncLogged(ctx)
		}
	}
}

// readinessInterval is how often a server asks a shared registry whether
// it answers, so that /readyz follows it within about twice that.
const readinessInterval = time.Second

// checkRegistry asks the registry whether it answers, within a second at
// most, and records the answer.
func (s *Server) checkRegistry(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, min(s.opts.RegistryTimeout, readinessInterval))
	defer cancel()
	err := s.reg.ping(ctx)
	if ctx.Err() == context.Canceled && err != nil { // shutting down
		return
	}
	s.setReady(err == nil, err)
}

// resync merges every live instance of the registry into the mirror. It
// adds and renews, and never removes: instances leave the mirror when they
// expire or are deregistered, so that a registry that lost its data (a
// Redis restarted empty) does not take routes away until the services
// have registered again.
func (s *Server) resync(ctx context.Context) (added map[string][]string, err error) {
	all, err := s.reg.all(ctx)
	if err != nil {
		s.setReady(false, err)
		return nil, err
	}
	added = s.routes.mergeAll(all)
	s.setReady(true, nil)
	return added, nil
}

func (s *Server) resyncLogged(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.opts.RegistryTimeout)
	defer cancel()
	added, err := s.resync(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Debug("nano: resync failed", "error", err)
	}
	// Registrations that neither the request nor an event told of first.
	for p, addrs := range added {
		for _, a := range addrs {
			s.log.Info("nano: service registered", "pattern", p, "address", a)
		}
	}
}

// requestResync asks the maintenance loop for a resync soon, as after the
// subscription to events was (re)established and events may have been
// missed.
func (s *Server) requestResync() {
	select {
	case s.resyncNow <- struct{}{}:
	default: // one is pending already
	}
}

// apply follows a change another server (or this one) made.
func (s *Server) apply(ev event) {
	p, err := parsePattern(ev.Pattern)
	if err != nil || dialAddr(ev.ServiceAddress) != nil {
		return
	}
	switch ev.Op {
	case "register":
		if s.routes.merge(p, member{ev.ServiceAddress, time.UnixMilli(ev.Expires)}) {
			s.log.Info("nano: service registered", "pattern", p, "address", ev.ServiceAddress)
		}
	case "deregister":
		if s.routes.remove(p, ev.ServiceAddress, time.Now().Add(s.opts.TTL)) {
			s.log.Info("nano: service deregistered", "pattern", p, "address", ev.ServiceAddress)
		}
	}
}

// sweep drops the expired instances from the mirror, and from a
// registry that does not drop them by itself.
func (s *Server) sweep(now int64) {
	s.reg.expire(now)
	for p, addrs := range s.routes.sweep(now) {
		for _, a := range addrs {
			s.log.Info("nano: registration expired", "pattern", p, "address", a)
		}
	}
}

// now is the time registrations expire by, in Unix nanoseconds. While the
// registry cannot be reached, services cannot renew their registrations,
// so expiry stops (now is the earliest time there is): the mirror keeps
// routing what it knows, and an instance that is really gone is dropped
// when it refuses a connection.
func (s *Server) now() int64 {
	if !s.ready.Load() {
		return math.MinInt64
	}
	return time.Now().UnixNano()
}

// setReady records whether the registry answers, logging the changes.
func (s *Server) setReady(ready bool, cause error) {
	if cause != nil {
		s.metrics.registryErrors.Add(1)
	}
	if s.ready.Load() == ready {
		return
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if s.ready.Load() == ready {
		return
	}
	if ready {
		// Services could not renew while the registry was away: give them
		// one TTL to do so before anything they registered expires. Only
		// then does expiry resume.
		s.routes.renewAll(time.Now().Add(s.opts.TTL))
		s.ready.Store(true)
		s.log.Info("nano: registry reachable again", "failed_registrations", s.failedRegistrations.Swap(0))
		return
	}
	s.failedRegistrations.Store(0)
	s.ready.Store(false)
	s.log.Warn("nano: registry unreachable; routing from the mirror", "error", cause)
}
