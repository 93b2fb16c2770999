package nano_test

import (
	"context"
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
	proxy := newCountingProxy(t, testRedis.Addr, "scan", "zrangebyscore")
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
