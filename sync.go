package nano

import (
	"context"
	"math"
	"slices"
	"time"
)

// How a Server keeps its mirror in step with the registry. With the
// embedded registry, the mirror is the registry's copy, and a sweep drops
// the instances whose registration expired. With Redis, a server reads the
// registry once, then follows its changes (registry_redis.go): new
// instances, deregistrations, and expiries, which the servers find by
// turns (the reaper, run with each sweep) and write as changes too, so
// that a renewal costs the other servers nothing. It checks now and then
// that Redis did not lose the registry, and reads it again if it did.

// maintain runs the sweeps and the checks until Shutdown, which also
// cancels a reading in progress.
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
	var check, ping <-chan time.Time
	if s.reg.shared() && s.opts.ResyncInterval > 0 {
		t := time.NewTicker(s.opts.ResyncInterval)
		defer t.Stop()
		check = t.C
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
			s.sweep()
			if at := s.reconcileAt.Load(); at != 0 && time.Now().UnixNano() > at {
				if s.reloadLogged(ctx) == nil {
					s.reconcileAt.CompareAndSwap(at, 0)
				}
			}
		case <-ping:
			s.checkRegistry(ctx)
		case <-check:
			s.checkEpochs(ctx)
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
// adds and renews, and never removes.
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
	s.logAdded(added)
}

// logAdded logs the registrations that neither a request nor a change
// told of first.
func (s *Server) logAdded(added map[string][]string) {
	for p, addrs := range added {
		for _, a := range addrs {
			s.log.Info("nano: service registered", "pattern", p, "address", a)
		}
	}
}

// reload reads the registry again when the server missed changes (the
// follower calls it). When Redis lost its data, the services register
// again within a TTL: the mirror only takes what is there now, and is made
// the registry's copy a TTL later (see lostData). Otherwise it is made the
// registry's copy at once. A change made meanwhile is applied after it
// (the changes are followed from where they stood before the reading).
func (s *Server) reload(ctx context.Context, lostData bool) error {
	if lostData {
		s.lostData(ctx)
		return nil
	}
	return s.reconcile(ctx)
}

// reconcile makes the mirror the registry's copy: it merges every live
// instance and drops those the registry no longer has.
func (s *Server) reconcile(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*s.opts.RegistryTimeout)
	defer cancel()
	all, err := s.reg.all(ctx)
	if err != nil {
		s.setReady(false, err)
		return err
	}
	s.setReady(true, nil)
	added, removed := s.routes.reconcile(all, func(absent map[string][]string) map[string][]string {
		return s.stillAbsent(ctx, absent)
	})
	s.logAdded(added)
	for p, addrs := range removed {
		for _, a := range addrs {
			s.log.Info("nano: service deregistered", "pattern", p, "address", a)
		}
	}
	s.log.Info("nano: registry read again", "patterns", len(all))
	return nil
}

func (s *Server) reloadLogged(ctx context.Context) error {
	err := s.reconcile(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Debug("nano: reading the registry failed", "error", err)
	}
	return err
}

// stillAbsent returns the instances of absent that the registry does not
// hold now either: an instance registered after the reading began, and
// already in the mirror, is not dropped. When the registry cannot be
// asked, nothing is.
func (s *Server) stillAbsent(ctx context.Context, absent map[string][]string) map[string][]string {
	if s.redis == nil || len(absent) == 0 {
		return absent
	}
	patterns := make([]string, 0, len(absent))
	for p := range absent {
		patterns = append(patterns, p)
	}
	live, err := s.redis.liveMembers(ctx, patterns, s.redis.key)
	if err != nil {
		return nil
	}
	out := make(map[string][]string)
	for i, p := range patterns {
		for _, a := range absent[p] {
			if !slices.ContainsFunc(live[i], func(m member) bool { return m.addr == a }) {
				out[p] = append(out[p], a)
			}
		}
	}
	return out
}

// checkEpochs tells whether Redis lost the registry since the server
// last looked: a shard's epoch changed or is gone. The services register
// again within a TTL, as their renewals find themselves missing; so the
// server merges what is there now, and reads the registry again a TTL
// later, dropping then what did not come back.
func (s *Server) checkEpochs(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RegistryTimeout)
	defer cancel()
	now, err := s.redis.epochs(ctx)
	if err != nil {
		return // checkRegistry tells of it
	}
	lost := false
	for k, e := range now {
		if s.epochs[k] != "" && e != s.epochs[k] {
			lost = true
		}
		s.epochs[k] = e // a shard whose epoch is gone tells of the loss once
	}
	if lost {
		s.lostData(ctx)
	}
}

// lostData follows a Redis that lost the registry: it merges what is
// there now, keeps the rest of the mirror, and has the maintenance loop
// read the registry again a TTL later, when the services that are alive
// have registered again.
func (s *Server) lostData(ctx context.Context) {
	if s.reconcileAt.Load() == 0 {
		s.log.Warn("nano: the registry lost its data (Redis restarted empty?); keeping the mirror until the services register again")
	}
	s.resyncLogged(ctx)
	// One reading a TTL after the first sign of the loss: later signs do
	// not put it off.
	s.reconcileAt.CompareAndSwap(0, time.Now().Add(s.opts.TTL).UnixNano())
}

// apply follows a change another server (or this one) made.
func (s *Server) apply(ev event) {
	p, err := parsePattern(ev.Pattern)
	if err != nil || validTarget(ev.ServiceAddress) != nil {
		return
	}
	// A copy read before the removal cannot bring the instance back; a
	// registration made after it can (see routeTable.remove).
	tombstone := time.UnixMilli(ev.At).Add(s.opts.TTL)
	switch ev.Op {
	case "register":
		// A registration read from the changes comes after every removal
		// read before it: it lifts the tombstone (the registering
		// server's clock set its expiry, Redis's the tombstone's time).
		if s.routes.mergeAfterRemoval(p, member{ev.ServiceAddress, time.UnixMilli(ev.Expires)}) {
			s.log.Info("nano: service registered", "pattern", p, "address", ev.ServiceAddress)
		}
	case "deregister":
		if s.routes.remove(p, ev.ServiceAddress, tombstone) {
			s.log.Info("nano: service deregistered", "pattern", p, "address", ev.ServiceAddress)
		}
	case "expire":
		if s.routes.remove(p, ev.ServiceAddress, tombstone) {
			s.log.Info("nano: registration expired", "pattern", p, "address", ev.ServiceAddress)
		}
	}
}

// sweep drops the expired instances. With the embedded registry, it drops
// them from the registry and the mirror; with Redis, it reaps the
// registry, and the mirror learns of the expiries as changes.
func (s *Server) sweep() {
	wall := time.Now().UnixNano()
	if s.reg.shared() {
		if s.ready.Load() && wall > s.reapAfter.Load() {
			s.reg.expire(wall)
		}
		s.routes.sweepTombstones(wall)
		return
	}
	s.reg.expire(wall)
	for p, addrs := range s.routes.sweep(s.now()) {
		for _, a := range addrs {
			s.log.Info("nano: registration expired", "pattern", p, "address", a)
		}
	}
}

// now is the time the mirror's instances expire by, in Unix nanoseconds.
// With Redis, the mirror holds an instance until the registry says it
// expired (a renewal is not announced, so the expiry the mirror knows is
// not the instance's), and now is the earliest time there is. While the
// registry cannot be reached, services cannot renew their registrations,
// so expiry stops too: the mirror keeps routing what it knows, and an
// instance that is really gone is dropped when it refuses a connection.
func (s *Server) now() int64 {
	if !s.ready.Load() || s.reg.shared() {
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
		// Nor does this server reap the registry before then: the
		// deadlines in Redis passed while nobody could renew.
		s.reapAfter.Store(time.Now().Add(s.opts.TTL).UnixNano())
		s.ready.Store(true)
		s.log.Info("nano: registry reachable again", "failed_registrations", s.failedRegistrations.Swap(0))
		return
	}
	s.failedRegistrations.Store(0)
	s.ready.Store(false)
	s.log.Warn("nano: registry unreachable; routing from the mirror", "error", cause)
}
