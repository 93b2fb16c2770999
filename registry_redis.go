package nano

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis/v8"
)

// redisRegistry keeps one sorted set per pattern,
// prefix + "pattern:" + pattern, whose members are the instances'
// host:port addresses scored by their expiry in Unix milliseconds. Changes
// are announced on the channel prefix + "events". It touches no other key,
// unless original is set (ServerOptions.OriginalKeys): it then also keeps
// the original library's string key per pattern, named by the pattern.
type redisRegistry struct {
	rdb      redis.UniversalClient
	prefix   string // namespace of every key, e.g. "nano:"
	original bool   // keep the original's keys too
}

// newRedisRegistry connects to Redis and checks that it answers.
func newRedisRegistry(ctx context.Context, opts *redis.UniversalOptions, prefix string, original bool, log *slog.Logger) (*redisRegistry, error) {
	routeRedisLog(log)
	o := *opts
	rdb := newUniversalClient(&o)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("%w: redis %s: %v", ErrRegistryUnavailable, strings.Join(o.Addrs, ","), err)
	}
	return &redisRegistry{rdb: rdb, prefix: prefix, original: original}, nil
}

// go-redis writes lines of its own (a broken connection dropped, a
// subscription made again) through one logger per process. The first
// server with a Redis registry gives it redisLog, which passes the lines
// on to the Logger of the most recent such server, at warning level, so
// that a JSON log stays JSON.
var (
	redisLog     redisLogger
	redisLogOnce sync.Once
)

// routeRedisLog makes go-redis's lines go to log.
func routeRedisLog(log *slog.Logger) {
	redisLog.log.Store(log)
	redisLogOnce.Do(func() { redis.SetLogger(&redisLog) })
}

// redisLogger is go-redis's logger: it passes each line on to a
// *slog.Logger. It is safe for concurrent use.
type redisLogger struct {
	log atomic.Pointer[slog.Logger]
}

// Printf logs a line of go-redis's.
func (l *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if log := l.log.Load(); log != nil {
		log.WarnContext(ctx, "nano: "+fmt.Sprintf(format, v...)) // go-redis's lines start with "redis: "
	}
}

// newUniversalClient is redis.NewUniversalClient, except that a Cluster
// client learns the slots from CLUSTER NODES: go-redis v8 cannot read the
// CLUSTER SLOTS answer of Redis 7 and later.
func newUniversalClient(o *redis.UniversalOptions) redis.UniversalClient {
	if o.MasterName != "" || len(o.Addrs) <= 1 {
		return redis.NewUniversalClient(o)
	}
	co := o.Cluster()
	co.ClusterSlots = func(ctx context.Context) ([]redis.ClusterSlot, error) { return clusterSlots(ctx, o) }
	return redis.NewClusterClient(co)
}

// clusterSlots asks the seed nodes in turn for CLUSTER NODES.
func clusterSlots(ctx context.Context, o *redis.UniversalOptions) ([]redis.ClusterSlot, error) {
	var errs []error
	for _, addr := range o.Addrs {
		so := o.Simple()
		so.Addr = addr
		c := redis.NewClient(so)
		text, err := c.ClusterNodes(ctx).Result()
		c.Close()
		if err == nil {
			return parseClusterNodes(text), nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// parseClusterNodes reads the slots served by each healthy master, with
// its replicas, from the text of CLUSTER NODES: one node per line, as
// "id ip:port@cport[,hostname] flags master-id ping pong epoch link slot...".
func parseClusterNodes(text string) []redis.ClusterSlot {
	type node struct {
		id, addr string
		slots    []string
	}
	var masters []node
	replicas := make(map[string][]redis.ClusterNode) // by master id
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || strings.Contains(f[2], "fail") || strings.Contains(f[2], "noaddr") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		addr, _, _ = strings.Cut(addr, ",")
		switch {
		case strings.Contains(f[2], "master"):
			masters = append(masters, node{f[0], addr, f[8:]})
		case strings.Contains(f[2], "slave"), strings.Contains(f[2], "replica"):
			replicas[f[3]] = append(replicas[f[3]], redis.ClusterNode{ID: f[0], Addr: addr})
		}
	}
	var slots []redis.ClusterSlot
	for _, m := range masters {
		nodes := append([]redis.ClusterNode{{ID: m.id, Addr: m.addr}}, replicas[m.id]...)
		for _, r := range m.slots {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			start, err1 := strconv.Atoi(lo)
			end, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil {
				slots = append(slots, redis.ClusterSlot{Start: start, End: end, Nodes: nodes})
			}
		}
	}
	return slots
}

func (r *redisRegistry) key(pattern string) string { return r.prefix + "pattern:" + pattern }
func (r *redisRegistry) channel() string           { return r.prefix + "events" }

// registerScript adds or renews an instance, drops the expired ones,
// makes the set expire with its last member (never while it has a
// permanent one) and announces the change, in one atomic step: events
// reach the servers in the order the changes were made. KEYS[1] is the
// pattern's set; ARGV holds the expiry (ms), the address, now (ms), the
// TTL (ms), the channel, the event and the score from which a member is
// permanent.
var registerScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZCOUNT', KEYS[1], ARGV[7], '+inf') > 0 then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
`)

// deregisterScript removes an instance and announces it, atomically. A
// set left without permanent members expires again with its last one.
// KEYS[1] is the pattern's set; ARGV holds the address, the channel, the
// event and the score from which a member is permanent.
var deregisterScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 and redis.call('ZCOUNT', KEYS[1], ARGV[4], '+inf') == 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', KEYS[1], last[2])
  end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`)

// originalSetScript writes the original library's key of a pattern,
// KEYS[1], with the address ARGV[1]: with no expiry when ARGV[2] is 0,
// else for ARGV[2] milliseconds. An address with no expiry (a service of
// the original, which would not register again) is replaced only by
// another with none. It is a script of its own, with that one key: in a
// Cluster, the key is in another slot than the pattern's set.
var originalSetScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and ARGV[2] ~= '0' and redis.call('PTTL', KEYS[1]) == -1 then
  return 0
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
`)

// originalDelScript deletes the original library's key of a pattern,
// KEYS[1], if it holds the address ARGV[1].
var originalDelScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// permanentScore is the lowest score of a permanent member at now.
func permanentScore(now time.Time) int64 { return now.Add(permanentSpan / 2).UnixMilli() }

func (r *redisRegistry) register(ctx context.Context, reg Registration, life, ttl time.Duration) (member, error) {
	now := time.Now()
	m := member{addr: reg.ServiceAddress, expires: now.Add(life)}
	ev, _ := json.Marshal(event{Op: "register", Pattern: reg.Pattern, ServiceAddress: m.addr, Expires: m.expires.UnixMilli()})
	err := registerScript.Run(ctx, r.rdb, []string{r.key(reg.Pattern)},
		m.expires.UnixMilli(), m.addr, now.UnixMilli(), ttl.Milliseconds(), r.channel(), ev, permanentScore(now)).Err()
	if err != nil {
		return m, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	if r.original {
		px := ttl.Milliseconds()
		if life != ttl {
			px = 0
		}
		if err := originalSetScript.Run(ctx, r.rdb, []string{reg.Pattern}, m.addr, px).Err(); err != nil {
			return m, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
		}
	}
	return m, nil
}

func (r *redisRegistry) deregister(ctx context.Context, reg Registration) error {
	ev, _ := json.Marshal(event{Op: "deregister", Pattern: reg.Pattern, ServiceAddress: reg.ServiceAddress})
	err := deregisterScript.Run(ctx, r.rdb, []string{r.key(reg.Pattern)}, reg.ServiceAddress, r.channel(), ev, permanentScore(time.Now())).Err()
	if err == nil && r.original {
		err = originalDelScript.Run(ctx, r.rdb, []string{reg.Pattern}, reg.ServiceAddress).Err()
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	return nil
}

// lookup asks for the live members of every whole-field prefix of p in one
// pipeline: one round trip whatever the number of fields.
func (r *redisRegistry) lookup(ctx context.Context, p string) (string, []member, error) {
	candidates := prefixes(p)
	results, err := r.liveMembers(ctx, candidates, r.key)
	if err != nil {
		return "", nil, err
	}
	if r.original {
		if err := r.originalMembers(ctx, candidates, results); err != nil {
			return "", nil, err
		}
	}
	for i, ms := range results { // longest first
		if len(ms) > 0 {
			return candidates[i], ms, nil
		}
	}
	return "", nil, nil
}

func (r *redisRegistry) all(ctx context.Context) (map[string][]member, error) {
	keys, err := r.keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	// Batches go in parallel pipelines, so that decoding one overlaps with
	// Redis answering the next.
	const batch, parallel = 5000, 4
	results := make([][][]member, (len(keys)+batch-1)/batch)
	errs := make([]error, len(results))
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for b := range results {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			lo := b * batch
			results[b], errs[b] = r.liveMembers(ctx, keys[lo:min(lo+batch, len(keys))], func(k string) string { return k })
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make(map[string][]member, len(keys))
	prefix := r.key("")
	for b, ms := range results {
		for i, m := range ms {
			if len(m) == 0 {
				continue
			}
			// A copy, not a substring: the mirror keeps it, and should not
			// keep the key's prefix too.
			if p, err := parsePattern(strings.Clone(strings.TrimPrefix(keys[b*batch+i], prefix))); err == nil {
				out[p] = m
			}
		}
	}
	return out, nil
}

// liveMembers reads the unexpired members of the sets of names, in one
// pipeline.
func (r *redisRegistry) liveMembers(ctx context.Context, names []string, key func(string) string) ([][]member, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	cmds := make([]*redis.ZSliceCmd, len(names))
	_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, n := range names {
			cmds[i] = pipe.ZRangeByScoreWithScores(ctx, key(n), &redis.ZRangeBy{Min: "(" + now, Max: "+inf"})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	out := make([][]member, len(names))
	for i, cmd := range cmds {
		for _, z := range cmd.Val() {
			addr, ok := z.Member.(string)
			if ok && dialAddr(addr) == nil {
				out[i] = append(out[i], member{addr: addr, expires: time.UnixMilli(int64(z.Score))})
			}
		}
	}
	return out, nil
}

// originalMembers adds to results, the members of each pattern of names,
// the address in the original library's key of the pattern, unless it is
// there already: with no expiry (the key has none, as those of the
// original's servers), it is permanent; else it expires with the key.
func (r *redisRegistry) originalMembers(ctx context.Context, names []string, results [][]member) error {
	gets := make([]*redis.StringCmd, len(names))
	ttls := make([]*redis.DurationCmd, len(names))
	_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, n := range names {
			gets[i] = pipe.Get(ctx, n)
			ttls[i] = pipe.PTTL(ctx, n)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		if _, wrongType := errors.AsType[redis.Error](err); !wrongType {
			return fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
		}
	}
	now := time.Now()
	for i := range names {
		addr, err := gets[i].Result()
		if err != nil || dialAddr(addr) != nil || slices.ContainsFunc(results[i], func(m member) bool { return m.addr == addr }) {
			continue // no key, not a string, not an address, or known
		}
		var expires time.Time
		switch ttl, err := ttls[i].Result(); {
		case err != nil:
			continue
		case ttl == -1: // PTTL answers -1 for a key without expiry
			expires = now.Add(permanentSpan)
		case ttl > 0:
			expires = now.Add(ttl)
		default:
			continue // expired meanwhile
		}
		results[i] = append(results[i], member{addr: addr, expires: expires})
	}
	return nil
}

// keys lists the pattern keys, on every master of a cluster.
func (r *redisRegistry) keys(ctx context.Context) ([]string, error) {
	match := escapeGlob(r.key("")) + "*"
	var (
		mu   sync.Mutex // guards keys
		keys []string
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, match, 5000).Iterator()
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

func (r *redisRegistry) shared() bool { return true }

// expire does nothing: lookups skip expired members, and registerScript
// removes them.
func (r *redisRegistry) expire(int64) {}

// watch subscribes to the registry's events. go-redis reconnects a broken
// subscription by itself; missed runs on every (re)subscription, when
// messages may have been missed.
func (r *redisRegistry) watch(stop <-chan struct{}, apply func(event), missed func()) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps := r.rdb.Subscribe(ctx, r.channel())
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(ctx, 1024)
	for {
		select {
		case <-stop:
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					missed()
				}
			case *redis.Message:
				var ev event
				if json.Unmarshal([]byte(m.Payload), &ev) == nil {
					apply(ev)
				}
			}
		}
	}
}

func (r *redisRegistry) ping(ctx context.Context) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	return nil
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
