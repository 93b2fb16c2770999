package nano

import (
	"context"
	"crypto/rand"
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

// redisRegistry keeps the registry in Redis, under prefix, in the layout
// described at shards. It touches no other key, unless original is set
// (ServerOptions.OriginalKeys): it then also keeps the original library's
// string key per pattern, named by the pattern.
type redisRegistry struct {
	rdb      redis.UniversalClient
	prefix   string        // namespace of every key, e.g. "nano:"
	original bool          // keep the original's keys too
	timeout  time.Duration // bound of the calls made in the background
	epoch    string        // this server's candidate for a shard's epoch
	opts     redis.UniversalOptions
}

// newRedisRegistry connects to Redis and checks that it answers.
func newRedisRegistry(ctx context.Context, opts *redis.UniversalOptions, prefix string, original bool, timeout time.Duration, log *slog.Logger) (*redisRegistry, error) {
	routeRedisLog(log)
	o := *opts
	rdb := newUniversalClient(&o)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("%w: redis %s: %v", ErrRegistryUnavailable, strings.Join(o.Addrs, ","), err)
	}
	return &redisRegistry{rdb: rdb, prefix: prefix, original: original, timeout: timeout, epoch: rand.Text(), opts: o}, nil
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

// The registry's keys are spread over shards: a pattern belongs to shard
// shardOf(pattern), and every key of a shard carries the shard's hash tag,
// prefix + "{k}", so that in a Cluster a shard's keys share one slot and
// each change is one atomic script on one node:
//
//	prefix{k}pattern:<pattern>  sorted set: the instances' addresses, scored by expiry (ms)
//	prefix{k}deadlines          sorted set: "<pattern>\n<address>" of every instance that
//	                            expires, scored by its expiry: what the reaper looks at
//	prefix{k}changes            stream: registrations of new instances, deregistrations and
//	                            expiries, in the order they were made; renewals are not in it
//	prefix{k}seq                counter: the number of the shard's last change; each entry of
//	                            the stream carries its number, so that a server that finds
//	                            one missing knows it lost track
//	prefix{k}epoch              string: made with the shard's first change, so that a Redis
//	                            that lost its data is told from one that did not
//
// A server reads every pattern once, at start, then follows the streams from
// where the reading began (XREAD): the work it causes grows with the changes,
// not with the registry. It reads everything again only when it may have
// missed a change: a change's number is not the one after the last it read
// (the stream was trimmed past it, or Redis lost changes), or a shard's
// epoch changed.
const shards = 16

// changesMaxLen bounds each shard's stream, roughly (MAXLEN ~): a server
// that falls further behind reads the whole registry again.
const changesMaxLen = 10_000

// shardOf is the shard of pattern p: FNV-1a of its bytes.
func shardOf(p string) int {
	h := uint32(2166136261)
	for i := 0; i < len(p); i++ {
		h ^= uint32(p[i])
		h *= 16777619
	}
	return int(h % shards)
}

func (r *redisRegistry) tag(k int) string       { return r.prefix + "{" + strconv.Itoa(k) + "}" }
func (r *redisRegistry) key(p string) string    { return r.tag(shardOf(p)) + "pattern:" + p }
func (r *redisRegistry) deadlines(k int) string { return r.tag(k) + "deadlines" }
func (r *redisRegistry) changes(k int) string   { return r.tag(k) + "changes" }
func (r *redisRegistry) epochKey(k int) string  { return r.tag(k) + "epoch" }
func (r *redisRegistry) seqKey(k int) string    { return r.tag(k) + "seq" }
func (r *redisRegistry) shardKeys(p string) []string {
	k := shardOf(p)
	return []string{r.key(p), r.deadlines(k), r.changes(k), r.epochKey(k), r.seqKey(k)}
}

// registerScript adds or renews an instance and records its deadline (a
// permanent instance has none); the set never expires while it has a
// permanent member, else with the TTL. Only an instance the set did not
// hold, or one that became permanent or stopped being so, is a change
// written to the stream: a renewal is not. KEYS: the set, the deadlines,
// the stream, the epoch, the change counter. ARGV: the expiry (ms), the
// address, the TTL (ms), the score from which a member is permanent, the pattern, the
// stream's length bound, an epoch to set if there is none.
var registerScript = redis.NewScript(`
local old = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local member = ARGV[5] .. '\n' .. ARGV[2]
local permanent = tonumber(ARGV[1]) >= tonumber(ARGV[4])
if permanent then
  redis.call('ZREM', KEYS[2], member)
else
  redis.call('ZADD', KEYS[2], ARGV[1], member)
end
if redis.call('ZCOUNT', KEYS[1], ARGV[4], '+inf') > 0 then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if not old or (tonumber(old) >= tonumber(ARGV[4])) ~= permanent then
  redis.call('SET', KEYS[4], ARGV[7], 'NX')
  local n = redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'n', n, 'op', 'register', 'p', ARGV[5], 'a', ARGV[2], 'e', ARGV[1])
  return 1
end
return 0
`)

// deregisterScript removes an instance and writes the change. A set left
// without permanent members expires again with its last one. KEYS as
// registerScript's; ARGV: the address, the pattern, the score from which a
// member is permanent, the stream's length bound, an epoch to set if there
// is none.
var deregisterScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2] .. '\n' .. ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 and redis.call('ZCOUNT', KEYS[1], ARGV[3], '+inf') == 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', KEYS[1], last[2])
  end
end
redis.call('SET', KEYS[4], ARGV[5], 'NX')
local n = redis.call('INCR', KEYS[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'n', n, 'op', 'deregister', 'p', ARGV[2], 'a', ARGV[1])
return 1
`)

// reapScript removes the instances of a shard whose deadline passed, at
// most ARGV[2] of them, and writes each expiry to the stream. KEYS: the
// deadlines, the stream, the change counter. ARGV: now (ms), the limit, the stream's length
// bound, the prefix of the shard's set keys. The sets it touches are the
// shard's, in the same slot.
var reapScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  local nl = string.find(m, '\n', 1, true)
  redis.call('ZREM', KEYS[1], m)
  if nl then
    local p, a = string.sub(m, 1, nl - 1), string.sub(m, nl + 1)
    local set = ARGV[4] .. p
    local score = redis.call('ZSCORE', set, a)
    if not score or tonumber(score) <= tonumber(ARGV[1]) then
      redis.call('ZREM', set, a)
      local n = redis.call('INCR', KEYS[3])
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'n', n, 'op', 'expire', 'p', p, 'a', a)
    end
  end
end
return #due
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
	m := member{addr: reg.target(), expires: now.Add(life)}
	err := registerScript.Run(ctx, r.rdb, r.shardKeys(reg.Pattern),
		m.expires.UnixMilli(), m.addr, ttl.Milliseconds(), permanentScore(now), reg.Pattern, changesMaxLen, r.epoch).Err()
	if err != nil {
		return m, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	if r.original && !reg.TLS { // the original's processes would call it over plain HTTP
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
	err := deregisterScript.Run(ctx, r.rdb, r.shardKeys(reg.Pattern),
		reg.target(), reg.Pattern, permanentScore(time.Now()), changesMaxLen, r.epoch).Err()
	if err == nil && r.original && !reg.TLS {
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
	for b, ms := range results {
		for i, m := range ms {
			if len(m) == 0 {
				continue
			}
			// A copy, not a substring: the mirror keeps it, and should not
			// keep the key's prefix too.
			if p, ok := r.patternOf(keys[b*batch+i]); ok {
				if p, err := parsePattern(strings.Clone(p)); err == nil {
					out[p] = m
				}
			}
		}
	}
	return out, nil
}

// patternOf returns the pattern of a set's key.
func (r *redisRegistry) patternOf(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, r.prefix+"{")
	if !ok {
		return "", false
	}
	_, p, ok := strings.Cut(rest, "}pattern:")
	return p, ok
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
			if ok && validTarget(addr) == nil {
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
	match := escapeGlob(r.prefix) + "{*}pattern:*"
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

// expire removes the instances whose deadline passed, in every shard, and
// writes their expiry to the streams, from which every server learns it.
// Every server runs it; the scripts are atomic, so an instance expires once.
func (r *redisRegistry) expire(now int64) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	ms := time.Unix(0, now).UnixMilli()
	_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for k := range shards {
			// EVALSHA: the scripts are loaded by the first registration;
			// a Redis that lost them is given them again below.
			reapScript.EvalSha(ctx, pipe, []string{r.deadlines(k), r.changes(k), r.seqKey(k)}, ms, 1000, changesMaxLen, r.tag(k)+"pattern:")
		}
		return nil
	})
	if err != nil && strings.Contains(err.Error(), "NOSCRIPT") {
		reapScript.Load(ctx, r.rdb)
	}
}

// position is where a server stands in a shard's changes: the ID of the
// last entry it read, and that change's number.
type position struct {
	id string
	n  int64
}

// positionScript returns a shard's last change: the ID of its entry
// ("0-0" if the stream has none) and its number. KEYS: the stream, the
// change counter.
var positionScript = redis.NewScript(`
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = '0-0'
if last[1] then
  id = last[1][1]
end
return {id, redis.call('GET', KEYS[2]) or '0'}
`)

// positions returns where each shard's changes end now.
func (r *redisRegistry) positions(ctx context.Context) ([]position, error) {
	cmds := make([]*redis.Cmd, shards)
	_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for k := range shards {
			// EVAL, not EVALSHA: it runs at start and after a loss only.
			cmds[k] = positionScript.Eval(ctx, pipe, []string{r.changes(k), r.seqKey(k)})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	out := make([]position, shards)
	for k, cmd := range cmds {
		v, _ := cmd.Slice()
		if len(v) != 2 {
			return nil, fmt.Errorf("%w: unexpected answer %v", ErrRegistryUnavailable, v)
		}
		id, _ := v[0].(string)
		n, _ := v[1].(string)
		out[k].id = id
		out[k].n, _ = strconv.ParseInt(n, 10, 64)
	}
	return out, nil
}

// epochs returns each shard's epoch ("" where there is none).
func (r *redisRegistry) epochs(ctx context.Context) ([]string, error) {
	cmds := make([]*redis.StringCmd, shards)
	_, err := r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for k := range shards {
			cmds[k] = pipe.Get(ctx, r.epochKey(k))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	out := make([]string, shards)
	for k, cmd := range cmds {
		out[k] = cmd.Val()
	}
	return out, nil
}

// idMillis is the time of a stream entry's ID ("ms-seq").
func idMillis(id string) int64 {
	m, _, _ := strings.Cut(id, "-")
	ms, _ := strconv.ParseInt(m, 10, 64)
	return ms
}

// follow reads the changes of the shards, from the positions ids, and
// hands each to apply, until stop is closed. In a Cluster each shard is
// read on its own (a command's keys must share a slot); elsewhere one
// XREAD reads them all. When a change's number is not the one after the
// last read, changes were missed: reload is called, and the changes are
// followed from where they stood before it. lostData tells reload that the
// numbers went back, as when Redis lost its data, rather than forward, as
// when a stream was trimmed past a server that fell behind.
//
// The reads wait on connections of their own, closed when stop is
// closed: a read waiting for changes neither holds a connection the
// server's other calls need nor delays its shutdown.
func (r *redisRegistry) follow(stop <-chan struct{}, start []position, apply func(event), reload func(ctx context.Context, lostData bool) error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := r.opts
	reader := newUniversalClient(&o)
	go func() {
		select {
		case <-stop:
		case <-ctx.Done():
		}
		cancel()
		reader.Close()
	}()
	var groups [][]int
	if _, cluster := reader.(*redis.ClusterClient); cluster {
		for k := range shards {
			groups = append(groups, []int{k})
		}
	} else {
		all := make([]int, shards)
		for k := range all {
			all[k] = k
		}
		groups = [][]int{all}
	}
	var wg sync.WaitGroup
	var reloading sync.Mutex // one reload at a time
	for _, g := range groups {
		wg.Go(func() { r.followGroup(ctx, reader, g, start, apply, reload, &reloading) })
	}
	wg.Wait()
}

// followBlock is how long one XREAD waits for changes.
const followBlock = 2 * time.Second

// followBatch is the most changes one XREAD returns.
const followBatch = 1000

func (r *redisRegistry) followGroup(ctx context.Context, reader redis.UniversalClient, shardsOf []int, start []position, apply func(event), reload func(ctx context.Context, lostData bool) error, reloading *sync.Mutex) {
	pos := make(map[int]position, len(shardsOf))
	for _, k := range shardsOf {
		pos[k] = start[k]
	}
	args := &redis.XReadArgs{Streams: make([]string, 2*len(shardsOf)), Count: followBatch, Block: followBlock}
	retry := firstRetry
	lost, lostData := false, false
	for ctx.Err() == nil {
		if lost {
			reloading.Lock()
			err := r.reloadGroup(ctx, shardsOf, pos, func(ctx context.Context) error { return reload(ctx, lostData) })
			reloading.Unlock()
			if err != nil {
				sleep(ctx, retry)
				retry = min(2*retry, followBlock)
				continue
			}
			lost, lostData = false, false
		}
		for i, k := range shardsOf {
			args.Streams[i] = r.changes(k)
			args.Streams[len(shardsOf)+i] = pos[k].id
		}
		streams, err := reader.XRead(ctx, args).Result()
		switch {
		case errors.Is(err, redis.Nil): // nothing changed while blocked
			retry = firstRetry
			continue
		case err != nil:
			sleep(ctx, retry)
			retry = min(2*retry, followBlock)
			continue
		}
		retry = firstRetry
		for _, st := range streams {
			k := r.shardOfStream(st.Stream)
			for _, m := range st.Messages {
				ev, n, ok := decodeChange(m)
				if n != pos[k].n+1 {
					lost = true // a change is missing: read everything again
					lostData = lostData || n <= pos[k].n
					break
				}
				if ok {
					apply(ev)
				}
				pos[k] = position{m.ID, n}
			}
		}
	}
}

// reloadGroup reads the registry again for a group that missed changes:
// it takes the changes' positions first, so that every change made during
// the reading is applied after it.
func (r *redisRegistry) reloadGroup(ctx context.Context, shardsOf []int, pos map[int]position, reload func(ctx context.Context) error) error {
	now, err := r.positions(ctx)
	if err != nil {
		return err
	}
	if err := reload(ctx); err != nil {
		return err
	}
	for _, k := range shardsOf {
		pos[k] = now[k]
	}
	return nil
}

// shardOfStream is the shard of a stream's key.
func (r *redisRegistry) shardOfStream(key string) int {
	rest, _ := strings.CutPrefix(key, r.prefix+"{")
	n, _, _ := strings.Cut(rest, "}")
	k, _ := strconv.Atoi(n)
	return k
}

// decodeChange reads an entry of a stream: the change, its number, and
// whether it is one a server applies.
func decodeChange(m redis.XMessage) (event, int64, bool) {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	n, _ := strconv.ParseInt(str("n"), 10, 64)
	ev := event{Op: str("op"), Pattern: str("p"), ServiceAddress: str("a"), At: idMillis(m.ID)}
	if e := str("e"); e != "" {
		ev.Expires, _ = strconv.ParseInt(e, 10, 64)
	}
	return ev, n, ev.Op != "" && ev.Pattern != ""
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
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
