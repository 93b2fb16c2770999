package nano_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// Tests of how servers sharing a Redis learn of each other's changes: from
// the registry's change streams, which hold new instances, deregistrations
// and expiries, not renewals; the registry is read whole only at start.

// TestRenewalsAreNotChanges: a service renewing its registration again and
// again writes one change, and another server reads the registry once, at
// start, however many renewals and checks pass; it still learns of the
// registration, and of the expiry of one that is not renewed, within a
// TTL.
func TestRenewalsAreNotChanges(t *testing.T) {
	t.Parallel()
	opts := redisOptions(t, testRedis)
	opts.TTL = 600 * time.Millisecond
	opts.ResyncInterval = 100 * time.Millisecond // checks, not readings
	_, a := startServer(t, opts)
	proxy := newRedisLink(t, testRedis.Addr, "scan", "zrangebyscore")
	optsB := opts
	optsB.Redis = &redis.UniversalOptions{Addrs: []string{proxy.addr}}
	_, b := startServer(t, optsB)

	startService(t, a, map[string]nano.HandlerFunc{"role:renewed": sumZero})
	waitListed(t, b, 1)
	lookups := proxy.count("zrangebyscore")
	time.Sleep(5 * opts.TTL / 3) // five renewals, sixteen checks
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	defer rdb.Close()
	key := patternKey(t, rdb, opts.KeyPrefix, "role:renewed")
	changes := strings.TrimSuffix(key, "pattern:role:renewed") + "changes"
	entries, err := rdb.XRange(context.Background(), changes, "-", "+").Result()
	if err != nil || len(entries) != 1 || entries[0].Values["op"] != "register" {
		t.Errorf("the changes after five renewals: %v, %v; want the one registration", entries, err)
	}
	if n := proxy.count("scan"); n != 1 {
		t.Errorf("server B scanned the registry %d times; want once, at start", n)
	}
	if n := proxy.count("zrangebyscore") - lookups; n != 0 {
		t.Errorf("server B read pattern sets %d times while only renewals happened; want none", n)
	}

	// A registration nobody renews expires, and B learns of it.
	registerAt(t, a, "role:forgotten", "127.0.0.1:1")
	waitListed(t, b, 2)
	eventually(t, "B forgets the registration nobody renews", func() bool {
		return resolveCount(t, b, "role:forgotten") == 0
	})
	waitListed(t, b, 1)
}

// TestReadAgainAfterLosingTrack: a server cut off from Redis while the
// changes it had not read were trimmed from the stream, as when it falls
// further behind than the stream keeps, reads the registry again once it
// is back: it learns what was registered meanwhile and drops what was
// deregistered.
func TestReadAgainAfterLosingTrack(t *testing.T) {
	t.Parallel()
	opts := redisOptions(t, testRedis)
	opts.ResyncInterval = -1 // no epoch checks: only the stream can tell B
	_, a := startServer(t, opts)
	link := newRedisLink(t, testRedis.Addr)
	optsB := opts
	optsB.Redis = &redis.UniversalOptions{Addrs: []string{link.addr}}
	_, b := startServer(t, optsB)

	// Four patterns of one shard, so that the changes B misses and the
	// one after them are in one stream.
	var ps []string
	for i := 0; len(ps) < 4; i++ {
		if p := fmt.Sprintf("role:p%d", i); fnvShard(p) == fnvShard("role:p0") {
			ps = append(ps, p)
		}
	}
	stays, goes, added, after := ps[0], ps[1], ps[2], ps[3]
	registerAt(t, a, stays, "127.0.0.1:1")
	registerAt(t, a, goes, "127.0.0.1:2")
	waitListed(t, b, 2)

	link.cut()
	post(t, "http://"+a+"/deregister", fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":"127.0.0.1:2"}`, goes))
	registerAt(t, a, added, "127.0.0.1:3")
	// The stream forgets those two changes, as a full one does.
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	defer rdb.Close()
	changes := strings.TrimSuffix(patternKey(t, rdb, opts.KeyPrefix, stays), "pattern:"+stays) + "changes"
	if err := rdb.XTrimMaxLen(context.Background(), changes, 0).Err(); err != nil {
		t.Fatal(err)
	}
	registerAt(t, a, after, "127.0.0.1:4")
	link.mend()

	want := []string{stays, added, after}
	slices.Sort(want)
	var got []string
	eventually(t, "B lists what the registry holds", func() bool {
		got = listed(t, b)
		return slices.Equal(got, want)
	})
}

// listed returns the patterns the server at addr lists in GET /services,
// which reads its mirror and nothing else.
func listed(t *testing.T, addr string) []string {
	t.Helper()
	status, body := do(t, http.MethodGet, "http://"+addr+"/services", "", nil)
	var l struct{ Patterns []struct{ Pattern string } }
	if status != http.StatusOK || json.Unmarshal([]byte(body), &l) != nil {
		return nil
	}
	var out []string
	for _, p := range l.Patterns {
		out = append(out, p.Pattern)
	}
	return out
}

// TestResolvePastTheFirstTTL: a server following a shared registry hears
// of no renewal, yet /resolve gives an instance that renews an expiry
// ahead, long after its first registration would have run out, so that
// clients go on calling it directly.
func TestResolvePastTheFirstTTL(t *testing.T) {
	t.Parallel()
	opts := redisOptions(t, testRedis)
	opts.TTL = 300 * time.Millisecond
	_, a := startServer(t, opts)
	_, b := startServer(t, opts) // hears of the registration, not of the renewals
	startService(t, a, map[string]nano.HandlerFunc{"role:renewing": sumZero})
	waitListed(t, b, 1)
	time.Sleep(3 * opts.TTL)
	status, body := do(t, http.MethodGet, "http://"+b+"/resolve?pattern=role:renewing", "", nil)
	var res struct{ Instances []struct{ Expires time.Time } }
	if err := json.Unmarshal([]byte(body), &res); status != http.StatusOK || err != nil || len(res.Instances) != 1 {
		t.Fatalf("/resolve: %d %s", status, body)
	}
	if !res.Instances[0].Expires.After(time.Now()) {
		t.Errorf("/resolve gives an expiry in the past, %v, for an instance that renews", res.Instances[0].Expires)
	}
}

// TestNoHandlerLeavesTheRegistry: an instance that answers that it has no
// handler for a pattern it is registered for leaves the registry, not only
// this server's mirror, so that no server keeps sending it messages.
func TestNoHandlerLeavesTheRegistry(t *testing.T) {
	t.Parallel()
	opts := redisOptions(t, testRedis)
	_, addr := startServer(t, opts)
	_, stranger := startService(t, addr, map[string]nano.HandlerFunc{"role:other": sumZero})
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitRegistered(t, addr, "role:math,cmd:sum")
	registerAt(t, addr, "role:math,cmd:sum", stranger) // registered for a pattern it does not handle
	waitInstances(t, addr, "role:math,cmd:sum", 2)
	for range 20 {
		if status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`); status != http.StatusOK {
			t.Fatalf("%d %s; want the message answered by the instance that handles it", status, body)
		}
	}
	eventually(t, "the registry forgets the instance without the handler", func() bool {
		return liveInstances(t, testRedis, opts, "role:math,cmd:sum") == 1
	})
}
