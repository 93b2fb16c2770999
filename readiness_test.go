package nano_test

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
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

// TestDrainTurnsReadinessOff: after Drain, a server's /readyz answers 503
// while it goes on routing messages, so that a load balancer stops
// sending it new ones before it shuts down.
func TestDrainTurnsReadinessOff(t *testing.T) {
	t.Parallel()
	srv, addr := startServer(t, nano.ServerOptions{})
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`, `{"Result":3}`)
	if status, body := do(t, http.MethodGet, "http://"+addr+"/readyz", "", nil); status != http.StatusOK {
		t.Fatalf("/readyz before Drain: %d %s", status, body)
	}
	srv.Drain()
	if status, body := do(t, http.MethodGet, "http://"+addr+"/readyz", "", nil); status != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz after Drain: %d %s; want 503 saying it drains", status, body)
	}
	if status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`); status != http.StatusOK || body != `{"Result":3}` {
		t.Errorf("a message after Drain: %d %s; want it routed", status, body)
	}
	if status, _ := do(t, http.MethodGet, "http://"+addr+"/healthz", "", nil); status != http.StatusOK {
		t.Errorf("/healthz after Drain: %d; want 200", status)
	}
}

// TestServiceRefusedForGood: a service whose registration the server
// refuses for good (a wrong token) says so on /readyz, instead of
// "not registered yet".
func TestServiceRefusedForGood(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{Token: "right"})
	_, svcAddr := startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum}, func(o *nano.ServiceOptions) { o.Token = "wrong" })
	var status int
	var body string
	eventually(t, "the service says it was refused", func() bool {
		status, body = do(t, http.MethodGet, "http://"+svcAddr+"/readyz", "", nil)
		return strings.Contains(body, "refused")
	})
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "role:math,cmd:sum") {
		t.Errorf("/readyz of a refused service: %d %s; want 503 naming the pattern", status, body)
	}
}
