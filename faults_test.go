package nano_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// Fault tests: replicas, killed instances, several servers, Redis and
// server outages. Each starts its own Redis, servers and instances; the
// figures they log are quoted in docs/operations.md.

// replicaOptions are server options for the fault tests: a Redis of the
// test's own, and a short TTL so that expiry shows within seconds.
func replicaOptions(t *testing.T, r *redisProc) nano.ServerOptions {
	opts := redisOptions(t, r)
	opts.TTL = 2 * time.Second
	opts.ResyncInterval = 500 * time.Millisecond
	return opts
}

// idService serves pattern answering {"ID": id}, registered at serverAddr.
func idService(t *testing.T, serverAddr, pattern, id string) string {
	t.Helper()
	answer := []byte(`{"ID":"` + id + `"}`)
	_, addr := startService(t, serverAddr, map[string]nano.HandlerFunc{
		pattern: func([]byte) ([]byte, error) { return answer, nil },
	})
	return addr
}

// startInstance runs testdata/instance as a process serving pattern with
// id, registered at serverAddr, and returns it once it listens.
func startInstance(t *testing.T, bin, serverAddr, pattern, id string) *program {
	t.Helper()
	p := startProgram(t, bin, "NANO_SERVER="+serverAddr, "NANO_PATTERN="+pattern, "NANO_ID="+id)
	p.waitOutput(t, "listening ")
	return p
}

// tally sends msg to the servers in turn, n times in all, and counts the
// answers by ID and the failures. before, if not nil, runs before each
// request, in the same goroutine.
func tally(t *testing.T, servers []string, msg string, n int, before func(i int)) (ids map[string]int, failures []string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	ids = make(map[string]int)
	for i := range n {
		if before != nil {
			before(i)
		}
		resp, err := client.Post("http://"+servers[i%len(servers)]+"/", "application/json", strings.NewReader(msg))
		if err != nil {
			failures = append(failures, err.Error())
			continue
		}
		body := readAll(resp)
		var a struct{ ID string }
		if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &a) != nil {
			failures = append(failures, fmt.Sprintf("%d %s", resp.StatusCode, body))
			continue
		}
		ids[a.ID]++
	}
	return ids, failures
}

// liveInstances counts the unexpired instances of pattern in Redis.
func liveInstances(t *testing.T, r *redisProc, opts nano.ServerOptions, pattern string) int64 {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	n, err := rdb.ZCount(context.Background(), patternKey(t, rdb, opts.KeyPrefix, pattern), "("+now, "+inf").Result()
	if err != nil {
		return -1
	}
	return n
}

// patternKey finds the key of a pattern's set in the registry under
// prefix: prefix{shard}pattern:<pattern>. It is "" when there is none.
func patternKey(t *testing.T, rdb *redis.Client, prefix, pattern string) string {
	t.Helper()
	keys, err := rdb.Keys(context.Background(), nano.EscapeGlob(prefix)+"{*}pattern:"+nano.EscapeGlob(pattern)).Result()
	if err != nil || len(keys) > 1 {
		t.Fatalf("keys of %q: %q %v", pattern, keys, err)
	}
	if len(keys) == 0 {
		return ""
	}
	return keys[0]
}

// resolveCount returns how many instances the server at addr resolves
// pattern to.
func resolveCount(t *testing.T, addr, pattern string) int {
	t.Helper()
	status, body := do(t, http.MethodGet, "http://"+addr+"/resolve?pattern="+pattern, "", nil)
	if status != http.StatusOK {
		return 0
	}
	var res struct {
		Instances []struct{ ServiceAddress string }
	}
	json.Unmarshal([]byte(body), &res)
	return len(res.Instances)
}

// TestReplicasShareTheLoad: two servers on one Redis, two instances of a
// pattern; requests through both servers, and Act calls, reach both.
func TestReplicasShareTheLoad(t *testing.T) {
	r := newRedis(t)
	opts := replicaOptions(t, r)
	_, a := startServer(t, opts)
	_, b := startServer(t, opts)
	idService(t, a, "role:echo", "one")
	idService(t, b, "role:echo", "two")
	eventually(t, "both servers know both instances", func() bool {
		return resolveCount(t, a, "role:echo") == 2 && resolveCount(t, b, "role:echo") == 2
	})

	ids, failures := tally(t, []string{a, b}, `{"Pattern":"role:echo"}`, 200, nil)
	t.Logf("through two servers: %v, %d failures", ids, len(failures))
	if len(failures) > 0 || ids["one"] < 50 || ids["two"] < 50 {
		t.Fatalf("200 requests spread as %v with failures %q; want both instances to take a fair share", ids, failures)
	}

	c := newClient(t, nano.ClientOptions{Server: a})
	acts := map[string]int{}
	for range 100 {
		answer, err := c.Act([]byte(`{"Pattern":"role:echo"}`), "role:echo")
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ ID string }
		json.Unmarshal(answer, &got)
		acts[got.ID]++
	}
	t.Logf("Act: %v", acts)
	if acts["one"] < 25 || acts["two"] < 25 {
		t.Fatalf("100 Act calls spread as %v; want both instances to take a fair share", acts)
	}
}

// TestInstanceKilled kills one of two instance processes between two
// requests of a steady loop: the requests go on without failing (the
// kept connections to the dead instance are found closed before a message
// is written on them), and the dead instance leaves the registry once its
// registration expires. A message in flight when an instance dies may
// fail: see TestProxyDeliversAtMostOnce.
func TestInstanceKilled(t *testing.T) {
	bin := buildProgram(t, ".", "./testdata/instance")
	r := newRedis(t)
	opts := replicaOptions(t, r)
	_, addr := startServer(t, opts)
	victim := startInstance(t, bin, addr, "role:echo", "victim")
	startInstance(t, bin, addr, "role:echo", "survivor")
	eventually(t, "both instances registered", func() bool { return liveInstances(t, r, opts, "role:echo") == 2 })

	var killedAt time.Time
	ids, failures := tally(t, []string{addr}, `{"Pattern":"role:echo"}`, 2000, func(i int) {
		if i == 500 {
			victim.kill(t)
			killedAt = time.Now()
		}
	})
	var gone time.Duration
	eventually(t, "the dead instance leaves the registry", func() bool {
		gone = time.Since(killedAt)
		return liveInstances(t, r, opts, "role:echo") == 1
	})
	t.Logf("instance killed after 500 of 2000 requests: answers %v, %d failed; gone from Redis %v after the kill (TTL %v)",
		ids, len(failures), gone.Round(10*time.Millisecond), opts.TTL)
	if len(failures) > 0 {
		t.Fatalf("%d requests failed: %q", len(failures), failures[:min(5, len(failures))])
	}
	if ids["victim"] == 0 || ids["survivor"] < 1500 {
		t.Fatalf("answers %v: want the victim's before the kill and the survivor's after", ids)
	}
}

// TestRegistrationReachesOtherServers: a registration and a
// deregistration through server A reach server B through the registry's
// change stream, without B reading the registry again.
func TestRegistrationReachesOtherServers(t *testing.T) {
	r := newRedis(t)
	opts := replicaOptions(t, r)
	opts.ResyncInterval = time.Hour // only the changes can tell B
	_, a := startServer(t, opts)
	_, b := startServer(t, opts)
	svc := idService(t, "127.0.0.1:1", "role:echo", "x")

	reg := fmt.Sprintf(`{"Pattern":"role:echo","ServiceAddress":%q}`, svc)
	start := time.Now()
	if status, body := post(t, "http://"+a+"/register", reg); status != 200 {
		t.Fatalf("register through A: %d %s", status, body)
	}
	eventually(t, "B routes the pattern", func() bool { return resolveCount(t, b, "role:echo") == 1 })
	registered := time.Since(start)

	start = time.Now()
	if status, body := post(t, "http://"+a+"/deregister", reg); status != 200 {
		t.Fatalf("deregister through A: %d %s", status, body)
	}
	eventually(t, "B forgets the pattern", func() bool { return resolveCount(t, b, "role:echo") == 0 })
	t.Logf("through A, seen by B: registration after %v, deregistration after %v",
		registered.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestRedisOutage stops Redis for a few seconds under a request loop:
// known patterns keep routing, the server reports not ready and refuses
// writes with 503, and registrations come back once Redis does.
func TestRedisOutage(t *testing.T) {
	r := newRedis(t)
	opts := redisOptions(t, r)
	opts.TTL = 3 * time.Second
	opts.ResyncInterval = 300 * time.Millisecond
	opts.RegistryTimeout = 500 * time.Millisecond
	_, addr := startServer(t, opts)
	idService(t, addr, "role:echo", "one")
	idService(t, addr, "role:echo", "two")
	eventually(t, "both instances registered", func() bool { return liveInstances(t, r, opts, "role:echo") == 2 })

	var sawNotReady, sawWrite503 bool
	stopAt, restartAt := 200, 1200
	ids, failures := tally(t, []string{addr}, `{"Pattern":"role:echo"}`, 2500, func(i int) {
		switch {
		case i == stopAt:
			r.kill(t)
		case i == restartAt:
			r.restart(t)
		case i > stopAt && i < restartAt && i%100 == 0:
			status, _ := do(t, http.MethodGet, "http://"+addr+"/readyz", "", nil)
			sawNotReady = sawNotReady || status == http.StatusServiceUnavailable
			status, body := post(t, "http://"+addr+"/register", `{"Pattern":"role:new","ServiceAddress":"127.0.0.1:1"}`)
			sawWrite503 = sawWrite503 || status == http.StatusServiceUnavailable
			if _, port, _ := net.SplitHostPort(r.Addr); status == http.StatusServiceUnavailable && strings.Contains(body, port) {
				t.Errorf("the 503 names the registry's address: %s", body)
			}
		}
	})
	t.Logf("Redis down for requests %d to %d of 2500: answers %v, %d failed", stopAt, restartAt, ids, len(failures))
	if len(failures) > 0 {
		t.Fatalf("%d requests failed: %q", len(failures), failures[:min(5, len(failures))])
	}
	if !sawNotReady || !sawWrite503 {
		t.Fatalf("during the outage: /readyz 503 seen %v, /register 503 seen %v; want both", sawNotReady, sawWrite503)
	}
	eventually(t, "the services registered again in the restarted Redis", func() bool {
		return liveInstances(t, r, opts, "role:echo") == 2
	})
	eventually(t, "the server is ready again", func() bool {
		status, _ := do(t, http.MethodGet, "http://"+addr+"/readyz", "", nil)
		return status == http.StatusOK
	})
}

// TestServerRestart restarts the only nano server (embedded registry, so
// it comes back empty): Act keeps working from its cache meanwhile, and
// the services register again by heartbeat.
func TestServerRestart(t *testing.T) {
	opts := nano.ServerOptions{TTL: 900 * time.Millisecond, Logger: testLogger()}
	first, err := nano.NewServerWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t)
	addr := l.Addr().String()
	go first.Serve(l)
	idService(t, addr, "role:echo", "one")
	waitAnswer(t, addr, `{"Pattern":"role:echo"}`, `{"ID":"one"}`)
	c := newClient(t, nano.ClientOptions{Server: addr, PeerTTL: 200 * time.Millisecond})
	act := func() error {
		_, err := c.Act([]byte(`{"Pattern":"role:echo"}`), "role:echo")
		return err
	}
	if err := act(); err != nil {
		t.Fatal(err)
	}

	first.Shutdown(context.Background())
	for i := range 20 { // past PeerTTL: the client cannot refresh, and keeps its peers
		if err := act(); err != nil {
			t.Fatalf("Act %d with the server down: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	second, err := nano.NewServerWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go second.Serve(l2)
	t.Cleanup(func() { second.Shutdown(context.Background()) })
	waitAnswer(t, addr, `{"Pattern":"role:echo"}`, `{"ID":"one"}`)
	if err := act(); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownDeregisters: a service that shuts down leaves the registry
// at once, not after its TTL.
func TestShutdownDeregisters(t *testing.T) {
	r := newRedis(t)
	opts := redisOptions(t, r) // TTL 30 s
	_, addr := startServer(t, opts)
	svc, _ := startService(t, addr, map[string]nano.HandlerFunc{"role:echo": sumZero})
	eventually(t, "registered", func() bool { return liveInstances(t, r, opts, "role:echo") == 1 })
	if err := svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := liveInstances(t, r, opts, "role:echo"); n != 0 {
		t.Fatalf("%d instances left in Redis after Shutdown", n)
	}
	if status, _ := post(t, "http://"+addr+"/", `{"Pattern":"role:echo"}`); status != http.StatusNotFound {
		t.Fatalf("the server still routes to a shut-down service: %d", status)
	}
}
