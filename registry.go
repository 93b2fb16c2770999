package nano

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/go-redis/redis/v8"
)

// Registration is the body of POST /register: the pattern a service
// handles and where it is reached. Services also describe themselves with it
// in the "Service" field of a ServiceRequest answer.
//
// ServiceAddress and ServerAddress are host:port, as the original library
// sent them; the ports are repeated in ServicePort and ServerPort.
type Registration struct {
	Pattern        string `json:"Pattern"`
	ServiceAddress string `json:"ServiceAddress"`
	ServicePort    int    `json:"ServicePort"`
	ServerAddress  string `json:"ServerAddress"`
	ServerPort     int    `json:"ServerPort"`
}

// normalize validates a registration received from the network and returns
// it with a canonical pattern and ServiceAddress as host:port. A
// ServiceAddress without a port takes ServicePort.
func (r Registration) normalize() (Registration, error) {
	p, err := parsePattern(r.Pattern)
	if err != nil {
		return r, err
	}
	r.Pattern = p
	addr := r.ServiceAddress
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(strings.Trim(addr, "[]"), strconv.Itoa(r.ServicePort))
	}
	host, port, err := splitHostPort(addr)
	if err == nil && port == 0 {
		err = fmt.Errorf("%q has port 0", addr)
	}
	if err != nil {
		return r, fmt.Errorf("%w: ServiceAddress: %v", ErrInvalidMessage, err)
	}
	r.ServiceAddress = net.JoinHostPort(host, strconv.Itoa(port))
	r.ServicePort = port
	return r, nil
}

// splitHostPort splits "host:port" with a port from 0 to 65535. It rejects
// empty hosts, URLs and paths.
func splitHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q has no host", addr)
	}
	if len(host) > 255 || strings.ContainsAny(host, "/?#@ \t\r\n") || hasControl(host) {
		return "", 0, fmt.Errorf("%q is not a host:port address", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no valid port (1-65535)", addr)
	}
	return host, port, nil
}

// dialAddr checks an address to connect to: host:port with a port other
// than 0.
func dialAddr(addr string) error {
	_, port, err := splitHostPort(addr)
	if err == nil && port == 0 {
		err = fmt.Errorf("%q has port 0", addr)
	}
	return err
}

// registry stores registrations. The embedded memRegistry serves a single
// server; redisRegistry is shared by every server using the same Redis.
// Both match patterns by the same rule as mirror: the longest whole-field
// prefix wins.
type registry interface {
	// register stores r, replacing the registration of the same pattern.
	register(ctx context.Context, r Registration) error
	// lookup returns the registration whose pattern is the longest
	// whole-field prefix of the canonical pattern p.
	lookup(ctx context.Context, p string) (Registration, bool, error)
	// all returns every registration.
	all(ctx context.Context) ([]Registration, error)
	// close releases the registry's connections.
	close() error
}

// memRegistry is the embedded registry: a mirror with nothing behind it.
type memRegistry struct {
	m mirror[Registration]
}

func (r *memRegistry) register(_ context.Context, reg Registration) error {
	r.m.insert(reg.Pattern, reg)
	return nil
}

func (r *memRegistry) lookup(_ context.Context, p string) (Registration, bool, error) {
	_, reg, ok := r.m.lookup(p)
	return reg, ok, nil
}

func (r *memRegistry) all(context.Context) ([]Registration, error) {
	var regs []Registration
	r.m.each(func(_ string, reg Registration) { regs = append(regs, reg) })
	return regs, nil
}

func (r *memRegistry) close() error { return nil }

// redisRegistry keeps one key per pattern, prefix + "pattern:" + pattern,
// holding the registration as JSON. It touches no other key.
type redisRegistry struct {
	rdb    redis.UniversalClient
	prefix string // namespace of every key, e.g. "nano:"
}

// newRedisRegistry connects to Redis and checks that it answers.
func newRedisRegistry(ctx context.Context, opts *redis.UniversalOptions, prefix string) (*redisRegistry, error) {
	o := *opts
	rdb := redis.NewUniversalClient(&o)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("%w: redis %s: %v", ErrRegistryUnavailable, strings.Join(o.Addrs, ","), err)
	}
	return &redisRegistry{rdb: rdb, prefix: prefix}, nil
}

func (r *redisRegistry) key(pattern string) string { return r.prefix + "pattern:" + pattern }

func (r *redisRegistry) register(ctx context.Context, reg Registration) error {
	v, err := json.Marshal(reg)
	if err != nil {
		return err
	}
	if err := r.rdb.Set(ctx, r.key(reg.Pattern), v, 0).Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	return nil
}

// lookup asks for every whole-field prefix of p in one pipeline: one round
// trip whatever the number of fields.
func (r *redisRegistry) lookup(ctx context.Context, p string) (Registration, bool, error) {
	candidates := prefixes(p)
	cmds := make([]*redis.StringCmd, len(candidates))
	_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, c := range candidates {
			cmds[i] = pipe.Get(ctx, r.key(c))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Registration{}, false, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	for _, cmd := range cmds { // longest first
		v, err := cmd.Bytes()
		if err != nil {
			continue // redis.Nil: no such pattern
		}
		if reg, ok := r.decode(v); ok {
			return reg, true, nil
		}
	}
	return Registration{}, false, nil
}

func (r *redisRegistry) all(ctx context.Context) ([]Registration, error) {
	keys, err := r.keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	regs := make([]Registration, 0, len(keys))
	const batch = 1000
	for len(keys) > 0 {
		n := min(batch, len(keys))
		cmds := make([]*redis.StringCmd, n)
		_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i, k := range keys[:n] {
				cmds[i] = pipe.Get(ctx, k)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
		}
		for _, cmd := range cmds {
			if v, err := cmd.Bytes(); err == nil {
				if reg, ok := r.decode(v); ok {
					regs = append(regs, reg)
				}
			}
		}
		keys = keys[n:]
	}
	return regs, nil
}

// keys lists the pattern keys, on every master of a cluster.
func (r *redisRegistry) keys(ctx context.Context) ([]string, error) {
	match := escapeGlob(r.prefix+"pattern:") + "*"
	var (
		mu   sync.Mutex // guards keys
		keys []string
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, match, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			keys = append(keys, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
		return keys, err
	}
	return keys, scan(ctx, r.rdb)
}

// decode reads a stored registration; entries that are not valid are
// skipped, as if absent.
func (r *redisRegistry) decode(v []byte) (Registration, bool) {
	var reg Registration
	if json.Unmarshal(v, &reg) != nil {
		return reg, false
	}
	reg, err := reg.normalize()
	return reg, err == nil
}

func (r *redisRegistry) close() error { return r.rdb.Close() }

// escapeGlob escapes the characters SCAN MATCH treats specially.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\^-`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}
