package nano_test

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// TestReadinessFollowsRedis kills the server's Redis and starts it again:
// /readyz turns 503 within 3 s (the server asks Redis every second) and
// 200 again within 5 s of the restart.
func TestReadinessFollowsRedis(t *testing.T) {
	t.Parallel()
	r := newRedis(t)
	opts := redisOptions(t, r)
	opts.RegistryTimeout = 500 * time.Millisecond
	_, addr := startServer(t, opts)
	_, redisPort, _ := net.SplitHostPort(r.Addr)
	readyz := func() (int, string) { return do(t, http.MethodGet, "http://"+addr+"/readyz", "", nil) }
	if status, body := readyz(); status != http.StatusOK {
		t.Fatalf("/readyz with Redis up: %d %s", status, body)
	}
	for _, step := range []struct {
		name   string
		act    func(*testing.T)
		status int
		within time.Duration
	}{
		{"Redis killed", r.kill, http.StatusServiceUnavailable, 3 * time.Second},
		{"Redis restarted", r.restart, http.StatusOK, 5 * time.Second},
	} {
		step.act(t)
		start := time.Now()
		status, body := readyz()
		for ; status != step.status && time.Since(start) < step.within+time.Second; status, body = readyz() {
			time.Sleep(20 * time.Millisecond)
		}
		took := time.Since(start)
		t.Logf("%s: /readyz %d after %v", step.name, status, took.Round(time.Millisecond))
		if status != step.status || took > step.within {
			t.Fatalf("%s: /readyz %d %s after %v; want %d within %v", step.name, status, body, took.Round(time.Millisecond), step.status, step.within)
		}
		if status != http.StatusOK {
			checkNoAddress(t, errorBody(t, body), redisPort)
		}
	}
}
