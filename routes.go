package nano

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// instance is one address registered for a pattern. It is kept small: a
// server mirrors every instance of the registry.
type instance struct {
	addr    string // host:port
	expires int64  // Unix nanoseconds: it leaves the registry then unless renewed
}

func newInstance(addr string, expires time.Time) instance {
	return instance{addr: addr, expires: expires.UnixNano()}
}

// liveAt reports whether the instance has not expired at now (Unix
// nanoseconds).
func (in instance) liveAt(now int64) bool { return now < in.expires }

// route is a registered pattern and its instances. A change of instances
// replaces the route in its table, so a reader never sees a slice being
// modified; the states of the instances (balance.go) carry over.
type route struct {
	pattern   string
	instances []instance                     // never empty in a table
	states    atomic.Pointer[instanceStates] // made on first use
	refresh   int64                          // clients: when to resolve the pattern again, in Unix nanoseconds
}

// live reports whether the route has an instance that has not expired at
// now (Unix nanoseconds).
func (r *route) live(now int64) bool {
	for _, in := range r.instances {
		if in.liveAt(now) {
			return true
		}
	}
	return false
}

// liveCount is the number of r's instances live at now.
func (r *route) liveCount(now int64) int {
	n := 0
	for _, in := range r.instances {
		if in.liveAt(now) {
			n++
		}
	}
	return n
}

// member is an instance as a registry reports it.
type member struct {
	addr    string
	expires time.Time
}

// routeTable maps patterns to routes, mirroring a registry. Writers
// replace routes; readers need no lock beyond the mirror's. A zero
// routeTable is empty and ready to use; it is safe for concurrent use.
type routeTable struct {
	mu   sync.Mutex           // serializes writers, so that no change is lost; guards gone
	m    mirror[*route]       // pattern -> route
	gone map[string]time.Time // pattern + " " + addr -> tombstone, see remove
	ttl  time.Duration        // a server's TTL: see permanentSpan
}

// lookup returns the route of the longest pattern that is a whole-field
// prefix of the canonical pattern p.
func (t *routeTable) lookup(p string) (*route, bool) {
	_, r, ok := t.m.lookup(p)
	return r, ok
}

// get returns the route of exactly the pattern p.
func (t *routeTable) get(p string) (*route, bool) { return t.m.get(p) }

// merge adds members to the route of pattern p, or extends the expiry of
// those it has. A member removed with a tombstone is skipped unless it
// expires after the tombstone: it was read before the removal. It reports
// whether an address was new.
func (t *routeTable) merge(p string, members ...member) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, _ := t.m.get(p)
	r, added := t.merged(p, old, members)
	if r != nil {
		t.m.insert(p, r)
	}
	return added
}

// mergeAll merges the members of many patterns at once, as a reading of
// the whole registry does:
// one lock for all of them. It returns the addresses that were new, by
// pattern (nil when none was).
func (t *routeTable) mergeAll(all map[string][]member) map[string][]string {
	var added map[string][]string
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m.update(func(get func(string) (*route, bool), insert func(string, *route)) {
		for p, members := range all {
			old, _ := get(p)
			r, isNew := t.merged(p, old, members)
			if r == nil {
				continue
			}
			insert(p, r)
			if isNew {
				if added == nil {
					added = make(map[string][]string)
				}
				for _, mb := range members {
					if old == nil || !old.has(mb.addr) {
						added[p] = append(added[p], mb.addr)
					}
				}
			}
		}
	})
	return added
}

// merged returns the route that replaces old (nil if none) once members
// are merged into it, or nil if it has no instance; and whether an address
// was new. The caller holds t.mu.
func (t *routeTable) merged(p string, old *route, members []member) (*route, bool) {
	r := t.successor(p, old)
	if old != nil {
		r.instances = slices.Clone(old.instances)
	}
	added := false
	now := time.Now().UnixNano()
	for _, mb := range members {
		if until, ok := t.gone[p+" "+mb.addr]; ok {
			e := mb.expires.UnixNano()
			if permanentAt(e, now) {
				e += int64(t.ttl - permanentSpan) // as if registered then with the TTL
			}
			if e <= until.UnixNano() {
				continue
			}
		}
		i := slices.IndexFunc(r.instances, func(in instance) bool { return in.addr == mb.addr })
		switch {
		case i < 0:
			r.instances = append(r.instances, newInstance(mb.addr, mb.expires))
			added = true
		case mb.expires.UnixNano() > r.instances[i].expires:
			r.instances[i].expires = mb.expires.UnixNano()
		}
	}
	if len(r.instances) == 0 {
		return nil, false
	}
	r.inheritStates(old)
	return r, added
}

// successor returns a new, empty route to replace old (which may be nil),
// carrying on its refresh time; the caller gives it instances, then
// calls inheritStates.
func (t *routeTable) successor(p string, old *route) *route {
	r := &route{pattern: p}
	if old != nil {
		r.refresh = old.refresh
	}
	return r
}

// set replaces the route of pattern p.
func (t *routeTable) set(r *route) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m.insert(r.pattern, r)
}

// replace sets r as the route of its pattern if the route there is still
// old.
func (t *routeTable) replace(old, r *route) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.m.get(r.pattern); ok && cur == old {
		t.m.insert(r.pattern, r)
	}
}

// remove drops the instance at addr from the route of pattern p, and the
// route once it has no instance left. It reports whether it was there.
//
// With a non-zero tombstone, merge then ignores the instance's members
// that expire by the tombstone: copies of the registry read before the
// removal (a reading of the registry, a change, a lookup) cannot bring it back; a
// registration made after it, which expires later, can.
func (t *routeTable) remove(p, addr string, tombstone time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !tombstone.IsZero() {
		if t.gone == nil {
			t.gone = make(map[string]time.Time)
		}
		t.gone[p+" "+addr] = tombstone
	}
	return t.removeLocked(p, func(in instance) bool { return in.addr == addr }) > 0
}

// renewAll extends to until the expiry of every instance that would
// expire sooner.
func (t *routeTable) renewAll(until time.Time) {
	t.m.each(func(p string, _ *route) {
		t.mu.Lock()
		defer t.mu.Unlock()
		old, ok := t.m.get(p) // the current route, not the snapshot's
		if !ok {
			return
		}
		r := t.successor(p, old)
		r.instances = slices.Clone(old.instances)
		for i := range r.instances {
			r.instances[i].expires = max(r.instances[i].expires, until.UnixNano())
		}
		r.inheritStates(old)
		t.m.insert(p, r)
	})
}

// drop removes the route of pattern p if it is still old, or whatever it
// is when old is nil.
func (t *routeTable) drop(p string, old *route) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m.deleteIf(p, func(cur *route) bool { return old != nil && cur != old })
}

// sweepTombstones forgets the tombstones that ended before now (Unix
// nanoseconds).
func (t *routeTable) sweepTombstones(now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, until := range t.gone {
		if now > until.UnixNano() {
			delete(t.gone, k)
		}
	}
}

// reconcile makes the table hold the instances of all, and only them: it
// merges them (as mergeAll does) and drops the other instances that
// confirm says are still absent. confirm is called with the table locked,
// so that no change lands between its answer and the removal: an instance
// added after all was read, and confirmed, stays. It returns the addresses
// added and dropped, by pattern.
func (t *routeTable) reconcile(all map[string][]member, confirm func(absent map[string][]string) map[string][]string) (added, removed map[string][]string) {
	added = t.mergeAll(all)
	t.mu.Lock()
	defer t.mu.Unlock()
	absent := make(map[string][]string)
	t.m.each(func(p string, r *route) {
		for _, in := range r.instances {
			if !slices.ContainsFunc(all[p], func(m member) bool { return m.addr == in.addr }) {
				absent[p] = append(absent[p], in.addr)
			}
		}
	})
	for p, addrs := range confirm(absent) {
		n := t.removeLocked(p, func(in instance) bool { return slices.Contains(addrs, in.addr) })
		if n > 0 {
			if removed == nil {
				removed = make(map[string][]string)
			}
			removed[p] = addrs
		}
	}
	return added, removed
}

// mergeAfterRemoval merges a member that is known to come after any
// removal of it the table holds a tombstone of: the tombstone goes.
func (t *routeTable) mergeAfterRemoval(p string, mb member) bool {
	t.mu.Lock()
	delete(t.gone, p+" "+mb.addr)
	t.mu.Unlock()
	return t.merge(p, mb)
}

// sweep drops the instances that expired before now (Unix nanoseconds)
// and returns them, by pattern, and forgets the tombstones that ended.
func (t *routeTable) sweep(now int64) map[string][]string {
	t.sweepTombstones(now)
	var expired map[string][]string
	t.m.each(func(p string, r *route) {
		if !slices.ContainsFunc(r.instances, func(in instance) bool { return !in.liveAt(now) }) {
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		var gone []string
		t.removeLocked(p, func(in instance) bool {
			if in.liveAt(now) {
				return false
			}
			gone = append(gone, in.addr)
			return true
		})
		if len(gone) > 0 {
			if expired == nil {
				expired = make(map[string][]string)
			}
			expired[p] = gone
		}
	})
	return expired
}

// removeLocked drops the instances of pattern p for which drop is true and
// returns how many. The caller holds t.mu.
func (t *routeTable) removeLocked(p string, drop func(instance) bool) int {
	old, ok := t.m.get(p)
	if !ok {
		return 0
	}
	kept := slices.DeleteFunc(slices.Clone(old.instances), drop)
	switch n := len(old.instances) - len(kept); {
	case n == 0:
		return 0
	case len(kept) == 0:
		t.m.deleteIf(p, func(cur *route) bool { return cur != old })
		return n
	default:
		r := t.successor(p, old)
		r.instances = kept
		r.inheritStates(old)
		t.m.insert(p, r)
		return n
	}
}

// each calls fn for every route, in pattern order.
func (t *routeTable) each(fn func(*route)) {
	t.m.each(func(_ string, r *route) { fn(r) })
}

// len returns the number of patterns in the table.
func (t *routeTable) len() int { return t.m.len() }
