package nano

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// How servers and clients choose the instance of a pattern a message goes
// to: among the live instances not ejected, two at random, and of those
// the one with fewer messages in flight, so that an instance that stops
// answering stops getting work as soon as its messages pile up; and how
// instances that fail again and again are ejected for a while (outlier
// detection, as Envoy does it).

// Outliers configures the outlier detection of a Server or a Client: an
// instance that fails MaxFailures times in a row (it could not be
// reached, broke the connection, or timed out; a handler's own error
// answer is not a failure) is ejected for EjectionTime times the number
// of times it was ejected, at most MaxEjectionTime, and gets no message
// meanwhile; an instance that refuses the connection is ejected at once.
// Never more than MaxEjectedPercent of a pattern's instances are ejected,
// and never all of them: ejection alone never empties a pattern. The zero
// value is the documented defaults.
type Outliers struct {
	// MaxFailures is the number of failures in a row that ejects an
	// instance. Zero means 5; negative turns ejection off.
	MaxFailures int
	// EjectionTime is how long a first ejection lasts; each further
	// ejection lasts that much longer. Zero means 30 seconds; it cannot be
	// negative.
	EjectionTime time.Duration
	// MaxEjectionTime bounds an ejection. Zero means 5 minutes; it cannot
	// be negative.
	MaxEjectionTime time.Duration
	// MaxEjectedPercent bounds the share of a pattern's instances that may
	// be ejected at once (one at least, when the pattern has two or
	// more), from 0 to 100. Zero means 50.
	MaxEjectedPercent int
}

// Defaults of Outliers.
const (
	defaultMaxFailures       = 5
	defaultEjectionTime      = 30 * time.Second
	defaultMaxEjectionTime   = 5 * time.Minute
	defaultMaxEjectedPercent = 50
)

// check refuses what makes no sense: negative times, a share outside 0 to
// 100. owner names the options struct in the error.
func (o Outliers) check(owner string) error {
	switch {
	case o.EjectionTime < 0 || o.MaxEjectionTime < 0:
		return fmt.Errorf("%w: %s.Outliers: EjectionTime and MaxEjectionTime cannot be negative", ErrInvalidOptions, owner)
	case o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100:
		return fmt.Errorf("%w: %s.Outliers.MaxEjectedPercent: %d is not a share from 0 to 100", ErrInvalidOptions, owner, o.MaxEjectedPercent)
	}
	return nil
}

// withDefaults returns o with its defaults applied.
func (o Outliers) withDefaults() Outliers {
	if o.MaxFailures == 0 {
		o.MaxFailures = defaultMaxFailures
	}
	o.EjectionTime = durationOr(o.EjectionTime, defaultEjectionTime)
	o.MaxEjectionTime = durationOr(o.MaxEjectionTime, defaultMaxEjectionTime)
	if o.MaxEjectedPercent == 0 {
		o.MaxEjectedPercent = defaultMaxEjectedPercent
	}
	return o
}

// instanceState is what servers and clients know of an instance of a
// pattern beyond its registration: the messages in flight to it and its
// record of failures. It outlives the route objects that replace each
// other as registrations renew.
type instanceState struct {
	inFlight     atomic.Int32
	ejectedUntil atomic.Int64 // Unix nanoseconds; zero when not ejected

	mu        sync.Mutex // guards failures, ejections, lastEnd
	failures  int        // failures in a row
	ejections int        // times ejected lately, for the growing ejection time
	lastEnd   int64      // when the last ejection ended, in Unix nanoseconds
}

// ejected reports whether the instance is ejected at now (Unix
// nanoseconds).
func (st *instanceState) ejected(now int64) bool {
	until := st.ejectedUntil.Load()
	return until != 0 && now < until
}

// instanceStates maps the addresses of a route's instances to their
// states. A value is never modified: a new state is added by replacing the
// map.
type instanceStates map[string]*instanceState

// state returns the state of the instance at addr of r, made on first use.
func (r *route) state(addr string) *instanceState {
	for {
		old := r.states.Load()
		if old != nil {
			if st := (*old)[addr]; st != nil {
				return st
			}
		}
		next := make(instanceStates, len(r.instances))
		if old != nil {
			for a, st := range *old {
				next[a] = st
			}
		}
		st := new(instanceState)
		next[addr] = st
		if r.states.CompareAndSwap(old, &next) {
			return st
		}
	}
}

// inheritStates gives r the states of old's instances that r still has.
func (r *route) inheritStates(old *route) {
	if old == nil {
		return
	}
	states := old.states.Load()
	if states == nil {
		return
	}
	for a := range *states {
		if !r.has(a) {
			kept := make(instanceStates, len(r.instances))
			for _, in := range r.instances {
				if st := (*states)[in.addr]; st != nil {
					kept[in.addr] = st
				}
			}
			r.states.Store(&kept)
			return
		}
	}
	r.states.Store(states)
}

// has reports whether r has an instance at addr.
func (r *route) has(addr string) bool {
	for _, in := range r.instances {
		if in.addr == addr {
			return true
		}
	}
	return false
}

// picker chooses the instances one message tries, in turn. A zero picker
// is not usable.
type picker struct {
	r      *route
	expiry int64 // the time registrations expire by (Server.now), Unix nanoseconds
	now    int64 // the time ejections end by, Unix nanoseconds
	tried  []int // indexes of the instances tried already
}

// next returns the index of the instance to try next and its state, or
// false when every live instance was tried. It takes two live instances
// not tried yet at random and returns the one with fewer messages in
// flight, passing over the ejected ones as long as any other is left.
func (p *picker) next() (int, *instanceState, bool) {
	for _, ejectedToo := range [...]bool{false, true} {
		n := 0
		for i := range p.r.instances {
			if p.eligible(i, ejectedToo) {
				n++
			}
		}
		if n == 0 {
			continue
		}
		a := p.nth(rand.IntN(n), ejectedToo)
		if n > 1 {
			j := rand.IntN(n - 1)
			b := p.nth(j, ejectedToo)
			if b == a {
				b = p.nth(n-1, ejectedToo)
			}
			if p.r.state(p.r.instances[b].addr).inFlight.Load() < p.r.state(p.r.instances[a].addr).inFlight.Load() {
				a = b
			}
		}
		p.tried = append(p.tried, a)
		return a, p.r.state(p.r.instances[a].addr), true
	}
	return 0, nil, false
}

// more reports whether a live instance is left to try.
func (p *picker) more() bool {
	for i := range p.r.instances {
		if p.eligible(i, true) {
			return true
		}
	}
	return false
}

// eligible reports whether instance i may be tried: live, not tried, and
// not ejected unless ejectedToo.
func (p *picker) eligible(i int, ejectedToo bool) bool {
	in := p.r.instances[i]
	if !in.liveAt(p.expiry) {
		return false
	}
	for _, t := range p.tried {
		if t == i {
			return false
		}
	}
	return ejectedToo || !p.r.state(in.addr).ejected(p.now)
}

// nth returns the index of the k-th eligible instance.
func (p *picker) nth(k int, ejectedToo bool) int {
	for i := range p.r.instances {
		if p.eligible(i, ejectedToo) {
			if k == 0 {
				return i
			}
			k--
		}
	}
	return -1
}

// outlierDetector applies Outliers to the instances of routes, logging
// ejections and returns, and counting them. A zero outlierDetector is not
// usable; it is safe for concurrent use.
type outlierDetector struct {
	opts      Outliers // with defaults applied
	log       *slog.Logger
	ejections atomic.Uint64 // ejections so far
}

// succeeded records that the instance at addr of r answered. An instance
// whose ejection ended is back; the log says so once.
func (d *outlierDetector) succeeded(r *route, addr string, st *instanceState) {
	st.mu.Lock()
	st.failures = 0
	until := st.ejectedUntil.Load()
	if until != 0 {
		st.ejectedUntil.Store(0)
		st.lastEnd = until
	}
	st.mu.Unlock()
	if until != 0 {
		d.log.Info("nano: instance back after ejection", "pattern", r.pattern, "address", addr)
	}
}

// failed records that the instance at addr of r failed at now, and ejects
// it when it failed MaxFailures times in a row, or at once when refused is
// true (it refused the connection), unless the pattern's share of ejected
// instances is reached. It reports whether it ejected the instance.
func (d *outlierDetector) failed(r *route, addr string, st *instanceState, now int64, refused bool, cause error) bool {
	if d.opts.MaxFailures < 0 {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.failures++
	if (!refused && st.failures < d.opts.MaxFailures) || st.ejected(now) || !d.mayEject(r, now) {
		return false
	}
	if until := st.ejectedUntil.Load(); until != 0 {
		st.lastEnd = until // an ejection that ended without a success since
	}
	if st.lastEnd != 0 && time.Duration(now-st.lastEnd) > d.opts.MaxEjectionTime {
		st.ejections = 0 // well long enough since its last ejection: start over
	}
	st.ejections++
	span := min(time.Duration(st.ejections)*d.opts.EjectionTime, d.opts.MaxEjectionTime)
	st.ejectedUntil.Store(now + int64(span))
	st.failures = 0
	d.ejections.Add(1)
	d.log.Warn("nano: instance ejected", "pattern", r.pattern, "address", addr, "for", span.String(), "ejections", st.ejections, "error", cause)
	return true
}

// mayEject reports whether one more of r's live instances may be ejected
// at now.
func (d *outlierDetector) mayEject(r *route, now int64) bool {
	live, ejected := 0, 0
	for _, in := range r.instances {
		if !in.liveAt(now) {
			continue
		}
		live++
		if states := r.states.Load(); states != nil {
			if st := (*states)[in.addr]; st != nil && st.ejected(now) {
				ejected++
			}
		}
	}
	allowed := max(live*d.opts.MaxEjectedPercent/100, min(live-1, 1))
	return ejected < min(allowed, live-1)
}

// ejectedCount is the number of r's live instances ejected at now.
func ejectedCount(r *route, now int64) int {
	states := r.states.Load()
	if states == nil {
		return 0
	}
	n := 0
	for _, in := range r.instances {
		if st := (*states)[in.addr]; st != nil && in.liveAt(now) && st.ejected(now) {
			n++
		}
	}
	return n
}

// retryAfter is the time until the earliest ejection of r's live
// instances ends, at least a second: what a client should wait before it
// tries the pattern again.
func retryAfter(r *route, now int64) time.Duration {
	wait := time.Duration(0)
	if states := r.states.Load(); states != nil {
		for _, in := range r.instances {
			if st := (*states)[in.addr]; st != nil && st.ejected(now) {
				if left := time.Duration(st.ejectedUntil.Load() - now); wait == 0 || left < wait {
					wait = left
				}
			}
		}
	}
	return max(wait.Round(time.Second), time.Second)
}
