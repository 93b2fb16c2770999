package nano

import (
	"context"
	"time"
)

// registry stores the instances of each pattern. The embedded memRegistry
// serves a single server; redisRegistry is shared by every server using the
// same Redis. Both match patterns by the rule of mirror: the longest
// whole-field prefix with a live instance wins.
type registry interface {
	// register adds the instance of reg, or renews it, until now + life:
	// ttl for the services of this library, permanentSpan for those of
	// the original.
	register(ctx context.Context, reg Registration, life, ttl time.Duration) (member, error)
	// deregister removes the instance of reg at once.
	deregister(ctx context.Context, reg Registration) error
	// lookup returns the longest pattern with live instances that is a
	// whole-field prefix of the canonical pattern p, and those instances;
	// an empty pattern when there is none.
	lookup(ctx context.Context, p string) (string, []member, error)
	// all returns the live instances of every pattern.
	all(ctx context.Context) (map[string][]member, error)
	// shared reports whether other servers change the registry too: only
	// then does a server follow its changes (redisRegistry.follow), and
	// learn from it when an instance expires.
	shared() bool
	// expire drops the instances that expired before now (Unix
	// nanoseconds); a shared registry tells every server of them.
	expire(now int64)
	// ping reports whether the registry answers.
	ping(ctx context.Context) error
	// close releases the registry's connections.
	close() error
}

// event tells the servers sharing a registry of a change, so that their
// mirrors follow it.
type event struct {
	Op             string // "register", "deregister" or "expire"
	Pattern        string
	ServiceAddress string
	Expires        int64 // of a registration, Unix milliseconds
	At             int64 // when the change was made, Unix milliseconds
}

// The original library's services register once and never renew: a
// server keeps them until they cannot be reached. Such a registration
// lives permanentSpan, as long as forever is in this package, so that
// nothing else needs to tell it from the others: it never expires, and is
// removed only by a deregistration, which a server makes when the instance
// refuses a connection or is ejected (proxy.go). Against a tombstone it
// counts as a registration made at the same time with the server's TTL
// (routeTable.merged), so that a copy read before the removal cannot bring
// it back, and a registration made after it does.
const permanentSpan = 100 * 365 * 24 * time.Hour

// permanentAt reports whether expires, in Unix nanoseconds, is that of a
// permanent registration at now.
func permanentAt(expires, now int64) bool { return expires-now > int64(permanentSpan/2) }

// memRegistry is the embedded registry: a route table with nothing behind it.
type memRegistry struct {
	t routeTable
}

func (r *memRegistry) register(_ context.Context, reg Registration, life, _ time.Duration) (member, error) {
	m := member{addr: reg.target(), expires: time.Now().Add(life)}
	r.t.merge(reg.Pattern, m)
	return m, nil
}

func (r *memRegistry) deregister(_ context.Context, reg Registration) error {
	r.t.remove(reg.Pattern, reg.target(), time.Time{})
	return nil
}

func (r *memRegistry) lookup(_ context.Context, p string) (string, []member, error) {
	now := time.Now().UnixNano()
	for _, c := range prefixes(p) {
		if rt, ok := r.t.get(c); ok {
			if ms := liveMembers(rt, now); len(ms) > 0 {
				return c, ms, nil
			}
		}
	}
	return "", nil, nil
}

func (r *memRegistry) all(context.Context) (map[string][]member, error) {
	now := time.Now().UnixNano()
	out := make(map[string][]member)
	r.t.each(func(rt *route) {
		if ms := liveMembers(rt, now); len(ms) > 0 {
			out[rt.pattern] = ms
		}
	})
	return out, nil
}

func (r *memRegistry) shared() bool { return false }

func (r *memRegistry) expire(now int64) { r.t.sweep(now) }

func (r *memRegistry) ping(context.Context) error { return nil }

func (r *memRegistry) close() error { return nil }

func liveMembers(rt *route, now int64) []member {
	var ms []member
	for _, in := range rt.instances {
		if in.liveAt(now) {
			ms = append(ms, member{addr: in.addr, expires: time.Unix(0, in.expires)})
		}
	}
	return ms
}
