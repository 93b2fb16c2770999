package nano_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

func TestServerRoutesByLongestWholeFieldPrefix(t *testing.T) {
	for _, reg := range registries {
		t.Run(reg.name, func(t *testing.T) {
			_, addr := startServer(t, reg.opts(t))
			startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
			startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum,return:zero": sumZero})
			startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:positive": positive})
			waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`, `{"Result":3}`)
			waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum,return:zero","Left":1,"Right":2}`, `{"Result":0}`)
			waitAnswer(t, addr, `{"Pattern":"role:math,cmd:positive","Value":1}`, `{"Result":true}`)

			tests := []struct {
				msg, want string
			}{
				{`{"Pattern":"role:math,cmd:sum","Left":2,"Right":5}`, `{"Result":7}`},
				{`{"Pattern":"role:math,cmd:sum,extra:1","Left":2,"Right":5}`, `{"Result":7}`},
				{`{"Pattern":"role:math,cmd:sum,return:zeros","Left":2,"Right":5}`, `{"Result":7}`},
				{`{"Pattern":"role:math,cmd:sum,return:zero","Left":2,"Right":5}`, `{"Result":0}`},
				{`{"Pattern":"role:math,cmd:sum,return:zero,x:y","Left":2,"Right":5}`, `{"Result":0}`},
				{`{"Pattern":" role:math , cmd:sum ","Left":2,"Right":5}`, `{"Result":7}`},
				{`{"Pattern":"role:math,cmd:positive","Value":-4}`, `{"Result":false}`},
			}
			for _, tt := range tests {
				status, body := post(t, "http://"+addr+"/", tt.msg)
				if status != http.StatusOK || body != tt.want {
					t.Errorf("%s: got %d %s; want 200 %s", tt.msg, status, body, tt.want)
				}
			}
		})
	}
}

// TestServerNeverMatchesInsideAField is the case the original got wrong:
// its cache matched by characters, so "role:math,cmd:summary" reached the
// sum service once the cache held "role:math,cmd:sum".
func TestServerNeverMatchesInsideAField(t *testing.T) {
	for _, reg := range registries {
		t.Run(reg.name, func(t *testing.T) {
			_, addr := startServer(t, reg.opts(t))
			startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
			waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
			for i := range 3 {
				status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:summary","Left":1,"Right":1}`)
				if status != http.StatusNotFound {
					t.Fatalf("request %d: got %d %s; want 404", i+1, status, body)
				}
				if msg := errorBody(t, body); !strings.Contains(msg, "role:math,cmd:summary") {
					t.Errorf("404 message %q does not name the pattern", msg)
				}
			}
		})
	}
}

func TestServerErrorStatuses(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{MaxBodyBytes: 1 << 10, UpstreamTimeout: 300 * time.Millisecond})
	release := make(chan struct{})
	startService(t, addr, map[string]nano.HandlerFunc{
		"role:math,cmd:sum": sum,
		"role:fail":         func([]byte) ([]byte, error) { return nil, errors.New("disk full") },
		"role:teapot": func([]byte) ([]byte, error) {
			return nil, &nano.Error{Status: http.StatusTeapot, Message: "short and stout"}
		},
		"role:panic": func([]byte) ([]byte, error) { panic("boom") },
		"role:odd":   func([]byte) ([]byte, error) { return nil, &nano.Error{Status: 42, Message: "odd status"} },
		"role:ok":    func([]byte) ([]byte, error) { return nil, &nano.Error{Status: 200, Message: "not ok"} },
		"role:slow":  func([]byte) ([]byte, error) { <-release; return []byte(`{}`), nil },
	})
	t.Cleanup(func() { close(release) })
	waitRegistered(t, addr, "role:math,cmd:sum", "role:fail", "role:teapot", "role:panic", "role:odd", "role:ok", "role:slow")

	// A registration whose service is not listening.
	deadPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	status, body := post(t, "http://"+addr+"/register",
		fmt.Sprintf(`{"Pattern":"role:gone","ServiceAddress":"127.0.0.1:%d","ServicePort":%d}`, deadPort, deadPort))
	if status != http.StatusOK {
		t.Fatalf("register: %d %s", status, body)
	}

	tests := []struct {
		name, method, path, body string
		status                   int
		message                  string // part of the error message
	}{
		{"GET", http.MethodGet, "/", "", 405, "method not allowed"},
		{"PUT register", http.MethodPut, "/register", "{}", 405, "method not allowed"},
		{"malformed JSON", "POST", "/", `{"Pattern":`, 400, "invalid message"},
		{"not an object", "POST", "/", `["role:math"]`, 400, "invalid message"},
		{"no Pattern", "POST", "/", `{"Left":1}`, 400, "no Pattern field"},
		{"null", "POST", "/", `null`, 400, "no Pattern field"},
		{"Pattern not a string", "POST", "/", `{"Pattern":42}`, 400, "invalid message"},
		{"empty Pattern", "POST", "/", `{"Pattern":""}`, 400, "invalid pattern"},
		{"empty field", "POST", "/", `{"Pattern":"role:math,,cmd:sum"}`, 400, "empty field"},
		{"unknown pattern", "POST", "/", `{"Pattern":"role:unknown"}`, 404, "no service matches"},
		{"too large", "POST", "/", `{"Pattern":"role:math,cmd:sum","Pad":"` + strings.Repeat("x", 2<<10) + `"}`, 413, "too large"},
		{"handler error", "POST", "/", `{"Pattern":"role:fail"}`, 500, "disk full"},
		{"handler status", "POST", "/", `{"Pattern":"role:teapot"}`, 418, "short and stout"},
		{"handler panic", "POST", "/", `{"Pattern":"role:panic"}`, 500, "handler failed"},
		{"handler status out of range", "POST", "/", `{"Pattern":"role:odd"}`, 500, "odd status"},
		{"handler error with status 200", "POST", "/", `{"Pattern":"role:ok"}`, 500, "not ok"},
		{"service down", "POST", "/", `{"Pattern":"role:gone"}`, 503, "no instance"},
		{"service slow", "POST", "/", `{"Pattern":"role:slow"}`, 504, "timed out"},
		{"bad registration", "POST", "/register", `{"Pattern":"a","ServiceAddress":"http://x/","ServicePort":1}`, 400, "ServiceAddress"},
		{"registration without pattern", "POST", "/register", `{"ServiceAddress":"127.0.0.1:1"}`, 400, "invalid pattern"},
		{"registration port 0", "POST", "/register", `{"Pattern":"a","ServiceAddress":"127.0.0.1","ServicePort":0}`, 400, "port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, tt.method, "http://"+addr+tt.path, tt.body, nil)
			if status != tt.status {
				t.Fatalf("got %d %s; want %d", status, body, tt.status)
			}
			if msg := errorBody(t, body); !strings.Contains(msg, tt.message) {
				t.Fatalf("error %q does not mention %q", msg, tt.message)
			}
			if tt.path == "/" && strings.Contains(body, "127.0.0.1") {
				t.Fatalf("error %q leaks a service address", body)
			}
		})
	}

	// After all that the server and the service still serve.
	waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":2,"Right":2}`, `{"Result":4}`)
}

func TestServerRegisterAcceptsOriginalServices(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{})
	_, svcAddr := startService(t, addr, map[string]nano.HandlerFunc{"role:other": sum})
	// An original service sends its whole struct, Cache included, with
	// ServiceAddress as host:port.
	port := svcAddr[strings.LastIndexByte(svcAddr, ':')+1:]
	status, body := post(t, "http://"+addr+"/register", fmt.Sprintf(
		`{"Cache":{},"Pattern":"role:math,cmd:sum","ServiceAddress":"%s","ServicePort":%s,"ServerAddress":"%s","ServerPort":9999}`,
		svcAddr, port, addr))
	if status != http.StatusOK {
		t.Fatalf("register: %d %s", status, body)
	}
	// The service at svcAddr does not handle role:math,cmd:sum: it answers
	// 404, which the server passes on as it is.
	status, body = post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`)
	if status != http.StatusNotFound || !strings.Contains(errorBody(t, body), "role:math,cmd:sum") {
		t.Fatalf("got %d %s; want the service's 404", status, body)
	}
}

func TestServerTokenGuardsRegistration(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{Token: "s3cret"})
	reg := `{"Pattern":"role:x","ServiceAddress":"127.0.0.1:1"}`
	for _, auth := range []string{"", "Bearer wrong", "Bearer s3cre", "s3cret", "Basic czNjcmV0"} {
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		status, body := do(t, "POST", "http://"+addr+"/register", reg, h)
		if status != http.StatusUnauthorized {
			t.Fatalf("Authorization %q: got %d %s; want 401", auth, status, body)
		}
		errorBody(t, body)
	}
	if status, _ := post(t, "http://"+addr+"/", `{"Pattern":"role:x"}`); status != http.StatusNotFound {
		t.Fatalf("a refused registration was stored: %d", status)
	}

	// A service with the token registers.
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum}, func(o *nano.ServiceOptions) { o.Token = "s3cret" })
	waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
}

// TestServersShareRedis: a registration through one server reaches a
// server started later (loaded at start) and one started before (looked up
// on a mirror miss).
func TestServersShareRedis(t *testing.T) {
	opts := redisOptions(t, testRedis)
	_, before := startServer(t, opts)
	_, a := startServer(t, opts)
	startService(t, a, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, a, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	_, after := startServer(t, opts)
	for _, addr := range []string{before, after} {
		status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum,x:1","Left":3,"Right":1}`)
		if status != http.StatusOK || body != `{"Result":4}` {
			t.Errorf("server %s: got %d %s", addr, status, body)
		}
	}

	// Keys stay under the prefix.
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), "*"+nano.EscapeGlob(opts.KeyPrefix)+"*").Result()
	slices.Sort(keys)
	set := patternKey(t, rdb, opts.KeyPrefix, "role:math,cmd:sum")
	shard := strings.TrimSuffix(set, "pattern:role:math,cmd:sum")
	want := []string{shard + "changes", shard + "deadlines", shard + "epoch", set, shard + "seq"}
	if err != nil || !slices.Equal(keys, want) {
		t.Fatalf("keys = %q, %v; want %q", keys, err, want)
	}
}

// TestRedisLookupIsOneRoundTrip: a mirror miss costs one round trip to
// Redis however many fields the pattern has, and a hit costs none. The
// proxy counts the lookups' chunks (zrangebyscore), not the server's
// other traffic.
func TestRedisLookupIsOneRoundTrip(t *testing.T) {
	opts := redisOptions(t, testRedis)
	proxy := newRedisLink(t, testRedis.Addr, "zrangebyscore", "scan")
	opts.Redis = &redis.UniversalOptions{Addrs: []string{proxy.addr}}
	_, addr := startServer(t, opts)
	_, svcAddr := startService(t, "127.0.0.1:1", map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})

	// The server read the registry at start; a member written behind its
	// back (no change in the stream), as the documented layout says, is
	// not in its mirror.
	if n := proxy.count("scan"); n != 1 {
		t.Fatalf("the server scanned the registry %d times at start; want 1", n)
	}
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	defer rdb.Close()
	expires := float64(time.Now().Add(time.Minute).UnixMilli())
	key := fmt.Sprintf("%s{%d}pattern:role:math,cmd:sum", opts.KeyPrefix, fnvShard("role:math,cmd:sum"))
	if err := rdb.ZAdd(context.Background(), key, &redis.Z{Score: expires, Member: svcAddr}).Err(); err != nil {
		t.Fatal(err)
	}

	msg := `{"Pattern":"role:math,cmd:sum,a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8","Left":1,"Right":2}`
	for i, wantTrips := range []int64{1, 0} {
		before := proxy.count("zrangebyscore")
		if status, body := post(t, "http://"+addr+"/", msg); status != 200 || body != `{"Result":3}` {
			t.Fatalf("request %d: %d %s", i+1, status, body)
		}
		if trips := proxy.count("zrangebyscore") - before; trips != wantTrips {
			t.Errorf("request %d took %d round trips to Redis; want %d", i+1, trips, wantTrips)
		}
	}
}

func TestServerWithoutRedis(t *testing.T) {
	r := newRedis(t)
	_, addr := startServer(t, redisOptions(t, r))
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	r.stop()

	// Known patterns keep routing from the mirror.
	if status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`); status != 200 || body != `{"Result":3}` {
		t.Fatalf("known pattern with Redis down: %d %s", status, body)
	}
	// What needs Redis answers 503.
	for _, tt := range []struct{ path, body string }{
		{"/", `{"Pattern":"role:unknown"}`},
		{"/register", `{"Pattern":"role:new","ServiceAddress":"127.0.0.1:1"}`},
	} {
		status, body := post(t, "http://"+addr+tt.path, tt.body)
		if status != http.StatusServiceUnavailable || !strings.Contains(errorBody(t, body), "registry unavailable") {
			t.Fatalf("%s with Redis down: %d %s; want 503", tt.path, status, body)
		}
	}

	// A new server cannot start without its Redis.
	_, err := nano.NewServerWithOptions(redisOptions(t, r))
	if !errors.Is(err, nano.ErrRegistryUnavailable) || !strings.Contains(err.Error(), r.Addr) {
		t.Fatalf("NewServerWithOptions with Redis down: %v; want ErrRegistryUnavailable naming %s", err, r.Addr)
	}
}

// TestServerShutdownDrains: a request in flight when Shutdown starts is
// answered, and Shutdown returns once it is.
func TestServerShutdownDrains(t *testing.T) {
	srv, addr := startServer(t, nano.ServerOptions{})
	answer, release := messageInFlight(t, addr)
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if got := <-answer; got != `200 "done"` {
		t.Fatalf("request in flight got %s", got)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// messageInFlight registers a service at the server at addr whose handler
// holds a message until release is closed, sends it such a message, and
// returns once the handler holds it. The answer, as "status body", comes
// on the channel.
func messageInFlight(t *testing.T, addr string) (answer <-chan string, release chan struct{}) {
	t.Helper()
	entered, release := make(chan struct{}), make(chan struct{})
	startService(t, addr, map[string]nano.HandlerFunc{
		"role:slow": func(msg []byte) ([]byte, error) {
			if strings.Contains(string(msg), "wait") {
				close(entered)
				<-release
			}
			return []byte(`"done"`), nil
		},
	})
	waitAnswer(t, addr, `{"Pattern":"role:slow"}`, `"done"`)
	got := make(chan string, 1)
	go func() {
		resp, err := http.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"Pattern":"role:slow","wait":true}`))
		if err != nil {
			got <- err.Error()
			return
		}
		got <- fmt.Sprint(resp.StatusCode, " ", readAll(resp))
	}()
	<-entered
	return got, release
}

func TestServerShutdown(t *testing.T) {
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	eventually(t, "the server answers", func() bool {
		resp, err := http.Post("http://"+l.Addr().String()+"/", "application/json", strings.NewReader(`{"Pattern":"a"}`))
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, nano.ErrClosed) {
		t.Fatalf("Serve returned %v; want ErrClosed", err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := srv.Serve(listen(t)); !errors.Is(err, nano.ErrClosed) {
		t.Fatalf("Serve after Shutdown: %v; want ErrClosed", err)
	}
}

// TestServerConcurrentLoad drives registrations, routed messages and 404s
// at once, for the race detector and for lost registrations.
func TestServerConcurrentLoad(t *testing.T) {
	for _, reg := range registries {
		t.Run(reg.name, func(t *testing.T) {
			_, addr := startServer(t, reg.opts(t))
			startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
			waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)

			const workers, requests, patterns = 8, 50, 20
			// The echo service registers nowhere: only the registrations
			// below lead to it.
			_, echoAddr := startService(t, "127.0.0.1:1", map[string]nano.HandlerFunc{
				"role:load": func(b []byte) ([]byte, error) { return b, nil },
			})
			var wg sync.WaitGroup
			errs := make(chan error, workers*requests+patterns)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
			for i := range patterns {
				wg.Go(func() {
					reg := fmt.Sprintf(`{"Pattern":"role:load,n:%d","ServiceAddress":%q}`, i, echoAddr)
					resp, err := client.Post("http://"+addr+"/register", "application/json", strings.NewReader(reg))
					if err != nil {
						errs <- err
						return
					}
					if body := readAll(resp); resp.StatusCode != 200 {
						errs <- fmt.Errorf("register %d: %d %s", i, resp.StatusCode, body)
					}
				})
			}
			for w := range workers {
				wg.Go(func() {
					for i := range requests {
						msg := fmt.Sprintf(`{"Pattern":"role:math,cmd:sum,w:%d","Left":%d,"Right":%d}`, w, i, w)
						want, wantStatus := fmt.Sprintf(`{"Result":%d}`, i+w), 200
						if i%10 == 0 {
							msg, want, wantStatus = `{"Pattern":"role:math,cmd:summary"}`, "", 404
						}
						resp, err := client.Post("http://"+addr+"/", "application/json", strings.NewReader(msg))
						if err != nil {
							errs <- err
							continue
						}
						if body := readAll(resp); resp.StatusCode != wantStatus || (want != "" && body != want) {
							errs <- fmt.Errorf("%s: %d %s", msg, resp.StatusCode, body)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			// Every registration is routed to the echo service.
			for i := range patterns {
				msg := fmt.Sprintf(`{"Pattern":"role:load,n:%d"}`, i)
				if status, body := post(t, "http://"+addr+"/", msg); status != 200 || body != msg {
					t.Errorf("registration %d lost: %d %s", i, status, body)
				}
			}
		})
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// TestServerKeepsConnectionsToServices: once warm, proxying opens no new
// connection to the service; a kept connection the service closed while
// idle is replaced without failing the message.
func TestServerKeepsConnectionsToServices(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{})
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{
		Addr: "127.0.0.1:0", Server: addr, Logger: testLogger(),
		IdleTimeout: 100 * time.Millisecond, // closes kept connections soon
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.Handle("role:math,cmd:sum", sum)
	l := &countingListener{Listener: listen(t)}
	go svc.Serve(l)
	t.Cleanup(func() { svc.Shutdown(context.Background()) })
	waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)

	before := l.accepted.Load()
	for i := range 200 {
		if status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`); status != 200 {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
	}
	if n := l.accepted.Load() - before; n > 1 {
		t.Fatalf("200 sequential messages opened %d connections to the service; want at most 1", n)
	}

	time.Sleep(300 * time.Millisecond) // the service closes the idle connection
	for i := range 3 {
		if status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`); status != 200 {
			t.Fatalf("request %d after the service closed the kept connection: %d %s", i, status, body)
		}
	}
}

// TestServerRelaysAnyHTTPAnswer: a service that answers with a chunked
// body, extra headers and "Connection: close" is relayed as it answered.
func TestServerRelaysAnyHTTPAnswer(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Answer", "chunked")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"part":1`))
		w.(http.Flusher).Flush()
		w.Write([]byte(`,"part2":2}`))
	}))
	t.Cleanup(ts.Close)
	reg := fmt.Sprintf(`{"Pattern":"role:raw","ServiceAddress":%q}`, ts.Listener.Addr().String())
	if status, body := post(t, "http://"+addr+"/register", reg); status != 200 {
		t.Fatalf("register: %d %s", status, body)
	}
	for i := range 3 {
		resp, err := http.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"Pattern":"role:raw"}`))
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(resp)
		if resp.StatusCode != http.StatusAccepted || body != `{"part":1,"part2":2}` || resp.Header.Get("X-Answer") != "chunked" {
			t.Fatalf("answer %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
}

// TestServerSpeaksHTTP11 talks to a server over raw TCP: keep-alive,
// pipelining, chunked bodies, HTTP/1.0, Expect: 100-continue, oversized
// and slow headers. TestHTTPConformance compares many more cases with
// net/http's own answers.
func TestServerSpeaksHTTP11(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond})
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	raw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.Contains(r.Header.Get("X-Want"), "204") {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Write([]byte(strings.Repeat("y", 100<<10))) // no length: chunked
	}))
	t.Cleanup(raw.Close)
	if status, body := post(t, "http://"+addr+"/register", fmt.Sprintf(`{"Pattern":"role:raw","ServiceAddress":%q}`, raw.Listener.Addr().String())); status != 200 {
		t.Fatalf("register: %d %s", status, body)
	}
	waitAnswer(t, addr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	msg := `{"Pattern":"role:math,cmd:sum","Left":2,"Right":3}`
	request := func(extra, body string) string {
		return "POST / HTTP/1.1\r\nHost: nano\r\nContent-Type: application/json\r\n" + extra +
			fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	}
	exchange := func(t *testing.T, raw string, answers int) []*http.Response {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		var out []*http.Response
		for range answers {
			resp, err := http.ReadResponse(br, nil)
			for err == nil && resp.StatusCode == http.StatusContinue {
				resp, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatalf("answer %d: %v", len(out)+1, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body = io.NopCloser(strings.NewReader(string(body)))
			out = append(out, resp)
		}
		return out
	}
	bodyOf := func(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

	t.Run("pipelined keep-alive", func(t *testing.T) {
		answers := exchange(t, request("", msg)+request("", msg)+request("", `{"Pattern":"role:none"}`), 3)
		if answers[0].StatusCode != 200 || bodyOf(answers[0]) != `{"Result":5}` || bodyOf(answers[1]) != `{"Result":5}` || answers[2].StatusCode != 404 {
			t.Fatalf("answers: %d %d %d", answers[0].StatusCode, answers[1].StatusCode, answers[2].StatusCode)
		}
	})
	t.Run("chunked body", func(t *testing.T) {
		raw := "POST / HTTP/1.1\r\nHost: nano\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(msg), msg)
		if r := exchange(t, raw, 1)[0]; r.StatusCode != 200 || bodyOf(r) != `{"Result":5}` {
			t.Fatalf("%d", r.StatusCode)
		}
	})
	t.Run("HTTP/1.0", func(t *testing.T) {
		// Answered, then the connection closes: the request after it is
		// not read.
		raw := fmt.Sprintf("POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, raw+request("", msg))
		all, _ := io.ReadAll(c)
		if n := strings.Count(string(all), " 200 OK"); n != 1 || !strings.HasSuffix(string(all), `{"Result":5}`) {
			t.Fatalf("%d answers to an HTTP/1.0 request and the one after it:\n%s", n, all)
		}
	})
	t.Run("expect 100-continue", func(t *testing.T) {
		answers := exchange(t, request("Expect: 100-continue\r\n", msg), 1)
		if answers[0].StatusCode != 200 {
			t.Fatalf("%d", answers[0].StatusCode)
		}
	})
	t.Run("header too large", func(t *testing.T) {
		raw := "POST / HTTP/1.1\r\nX-Big: " + strings.Repeat("x", 2<<20) + "\r\n\r\n"
		if r := exchange(t, raw, 1)[0]; r.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%d", r.StatusCode)
		}
	})
	t.Run("malformed request line", func(t *testing.T) {
		if r := exchange(t, "NONSENSE\r\n\r\n", 1)[0]; r.StatusCode != http.StatusBadRequest {
			t.Fatalf("%d", r.StatusCode)
		}
	})
	t.Run("body slower than ReadTimeout", func(t *testing.T) {
		// The body, when it comes, looks like a request of its own: it must
		// not be served as one.
		smuggled := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: nano\r\nContent-Length: %d\r\n\r\n", len(smuggled))
		time.Sleep(600 * time.Millisecond)
		io.WriteString(c, smuggled)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		all, _ := io.ReadAll(c)
		if n := strings.Count(string(all), "HTTP/1.1 "); n > 1 {
			t.Fatalf("%d answers on a connection whose body timed out:\n%s", n, all)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		_, get := do(t, http.MethodGet, "http://"+addr+"/healthz", "", nil)
		answers := exchange(t, "HEAD /healthz HTTP/1.1\r\nHost: nano\r\n\r\n"+request("", msg), 1)
		if answers[0].StatusCode != 200 || answers[0].ContentLength != int64(len(get)) {
			t.Fatalf("HEAD: %d, length %d; want 200 and %d", answers[0].StatusCode, answers[0].ContentLength, len(get))
		}
	})
	t.Run("204 then another request", func(t *testing.T) {
		answers := exchange(t, request("X-Want: 204\r\n", `{"Pattern":"role:raw"}`)+request("", msg), 2)
		if answers[0].StatusCode != 204 || answers[1].StatusCode != 200 || bodyOf(answers[1]) != `{"Result":5}` {
			t.Fatalf("answers: %d %d", answers[0].StatusCode, answers[1].StatusCode)
		}
	})
	t.Run("long answer of unknown length", func(t *testing.T) {
		answers := exchange(t, request("", `{"Pattern":"role:raw"}`)+request("", msg), 2)
		if got := bodyOf(answers[0]); answers[0].StatusCode != 200 || len(got) != 100<<10 || bodyOf(answers[1]) != `{"Result":5}` {
			t.Fatalf("answers: %d (%d bytes), %d", answers[0].StatusCode, len(got), answers[1].StatusCode)
		}
	})
	t.Run("slow header", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: nano\r\n") // and nothing more
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("the server answered a request it never got whole")
		}
		// The server closed the connection; it still serves others.
		waitAnswer(t, addr, msg, `{"Result":5}`)
	})
}

// TestServerForwardsEndToEndHeadersOnly checks the proxy's header hygiene
// both ways: hop-by-hop fields, and the fields a Connection header names,
// stop at the server; the others go through.
func TestServerForwardsEndToEndHeadersOnly(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{})
	got := make(chan http.Header, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.Header().Set("X-Answer", "kept")
		w.Header().Set("X-Answer-Hop", "dropped")
		w.Header().Set("Connection", "X-Answer-Hop")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(ts.Close)
	reg := fmt.Sprintf(`{"Pattern":"role:raw","ServiceAddress":%q}`, ts.Listener.Addr().String())
	if status, body := post(t, "http://"+addr+"/register", reg); status != 200 {
		t.Fatalf("register: %d %s", status, body)
	}

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := `{"Pattern":"role:raw"}`
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: nano\r\nContent-Length: %d\r\n"+
		"X-Trace: abc\r\nX-Secret: s3\r\nConnection: keep-alive, x-secret\r\nKeep-Alive: timeout=5\r\n"+
		"Proxy-Authorization: Basic eDp5\r\nTe: trailers\r\nUpgrade: websocket\r\n\r\n%s", len(msg), msg)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(resp); resp.StatusCode != 200 || body != `{"ok":true}` {
		t.Fatalf("answer: %d %s", resp.StatusCode, body)
	}
	h := <-got
	if h.Get("X-Trace") != "abc" || h.Get("Content-Type") != "application/json" {
		t.Errorf("end-to-end fields lost on the way to the service: %v", h)
	}
	for _, k := range []string{"X-Secret", "Keep-Alive", "Proxy-Authorization", "Te", "Upgrade"} {
		if v := h.Get(k); v != "" {
			t.Errorf("service got hop-by-hop field %s: %q", k, v)
		}
	}
	if c := h.Get("Connection"); c != "" && !strings.EqualFold(c, "keep-alive") {
		t.Errorf("service got the client's Connection field: %q", c)
	}
	if resp.Header.Get("X-Answer") != "kept" {
		t.Errorf("answer lost X-Answer: %v", resp.Header)
	}
	for _, k := range []string{"X-Answer-Hop", "Proxy-Authenticate"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("client got the service's hop-by-hop field %s: %q", k, v)
		}
	}
}

// fnvShard is the shard of a pattern in the documented Redis layout:
// FNV-1a of its bytes, modulo 16.
func fnvShard(p string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(p); i++ {
		h ^= uint32(p[i])
		h *= 16777619
	}
	return h % 16
}
