package nano_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// serverCounts counts what a nano server was asked.
type serverCounts struct {
	proxied  atomic.Int64 // messages (POST on a path that is not a control endpoint)
	resolves atomic.Int64 // GET /resolve
}

// countingServer serves a nano server behind counters.
func countingServer(t *testing.T) (addr string, counts *serverCounts) {
	t.Helper()
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	counts = new(serverCounts)
	h := srv.Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/register", "/deregister":
		case "/resolve":
			counts.resolves.Add(1)
		default:
			counts.proxied.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		ts.Close()
		srv.Shutdown(context.Background())
	})
	return ts.Listener.Addr().String(), counts
}

func newClient(t *testing.T, opts nano.ClientOptions) *nano.Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	c, err := nano.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestActCallsCachedPeerDirectly(t *testing.T) {
	serverAddr, counts := countingServer(t)
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	proxied := counts.proxied.Load()

	c := newClient(t, nano.ClientOptions{Server: serverAddr})
	// With and without the ServiceRequest flag: Act asks for the envelope
	// either way and returns the handler's bytes.
	msgs := []string{
		`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`,
		`{"Pattern":"role:math,cmd:sum","ServiceRequest":true,"Left":1,"Right":2}`,
		`{"Pattern":"role:math,cmd:sum","ServiceRequest":false,"Left":1,"Right":2}`,
		` {"Left":1,"Right":2,"Pattern":"role:math,cmd:sum"} `,
	}
	for _, msg := range msgs {
		got, err := c.Act([]byte(msg), "role:math,cmd:sum")
		if err != nil || string(got) != `{"Result":3}` {
			t.Fatalf("Act(%s) = %s, %v", msg, got, err)
		}
	}
	if n, r := counts.proxied.Load()-proxied, counts.resolves.Load(); n != 0 || r != 1 {
		t.Fatalf("%d calls: %d resolves and %d through the server; want 1 resolve, then every call direct", len(msgs), r, n)
	}
}

func TestActFallsBackWhenPeerDies(t *testing.T) {
	serverAddr, counts := countingServer(t)
	first, _ := startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	c := newClient(t, nano.ClientOptions{Server: serverAddr})
	act := func() string {
		t.Helper()
		got, err := c.Act([]byte(`{"Pattern":"role:math,cmd:sum","Left":20,"Right":22}`), "role:math,cmd:sum")
		if err != nil {
			t.Fatalf("Act: %v", err)
		}
		return string(got)
	}
	act() // learns the first instance

	// The first instance dies and a replacement registers elsewhere.
	if err := first.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": func(b []byte) ([]byte, error) {
		out, err := sum(b)
		return append([]byte("  "), out...), err // tell the instances apart
	}})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	eventually(t, "the replacement answers through the server", func() bool {
		_, body := post(t, "http://"+serverAddr+"/", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`)
		return strings.HasPrefix(body, "  ")
	})

	before := counts.proxied.Load()
	if got := act(); got != `  {"Result":42}` {
		t.Fatalf("after the peer died: %q; want the replacement's answer", got)
	}
	if got := act(); got != `  {"Result":42}` {
		t.Fatalf("second call: %q", got)
	}
	if n := counts.proxied.Load() - before; n != 1 {
		t.Fatalf("the server proxied %d calls; want 1 (the fallback), then the new peer directly", n)
	}
}

func TestActErrors(t *testing.T) {
	serverAddr, _ := countingServer(t)
	var failures, notFounds, slow atomic.Int64
	release := make(chan struct{})
	startService(t, serverAddr, map[string]nano.HandlerFunc{
		"role:math,cmd:sum": sum,
		"role:fail": func([]byte) ([]byte, error) {
			failures.Add(1)
			return nil, &nano.Error{Status: http.StatusUnprocessableEntity, Message: "cannot do that"}
		},
		"role:slow": func([]byte) ([]byte, error) { slow.Add(1); <-release; return []byte(`{}`), nil },
		"role:lookup": func([]byte) ([]byte, error) {
			notFounds.Add(1)
			return nil, &nano.Error{Status: http.StatusNotFound, Message: "no such user"}
		},
	})
	t.Cleanup(func() { close(release) })
	waitRegistered(t, serverAddr, "role:math,cmd:sum", "role:fail", "role:slow", "role:lookup")
	c := newClient(t, nano.ClientOptions{Server: serverAddr, Timeout: 300 * time.Millisecond})

	_, err := c.Act([]byte(`{"Pattern":"role:none"}`), "role:none")
	var e *nano.Error
	if !errors.Is(err, nano.ErrNoService) || !errors.As(err, &e) || e.Status != 404 {
		t.Errorf("unknown pattern: %v; want ErrNoService with status 404", err)
	}
	if _, err := c.Act([]byte(`{"Pattern":"a"}`), "a,,b"); !errors.Is(err, nano.ErrInvalidPattern) {
		t.Errorf("invalid pattern: %v", err)
	}
	for _, msg := range []string{``, `[1]`, `{"Pattern":`, `"role:x"`, `{} {}`} {
		if _, err := c.Act([]byte(msg), "role:math,cmd:sum"); !errors.Is(err, nano.ErrInvalidMessage) {
			t.Errorf("message %q: %v; want ErrInvalidMessage", msg, err)
		}
	}

	// A handler error reaches the caller with its status, once through the
	// server and once from the cached peer, and is never retried.
	for i := range 2 {
		_, err := c.Act([]byte(`{"Pattern":"role:fail"}`), "role:fail")
		if !errors.As(err, &e) || e.Status != 422 || e.Message != "cannot do that" {
			t.Fatalf("call %d: %v; want the handler's 422", i, err)
		}
	}
	if n := failures.Load(); n != 2 {
		t.Fatalf("the handler ran %d times for 2 calls", n)
	}
	// A 404 the handler chose is its answer, not a sign that the peer
	// lost the pattern: it is not sent again through the server.
	for i := range 2 {
		_, err := c.Act([]byte(`{"Pattern":"role:lookup"}`), "role:lookup")
		if !errors.As(err, &e) || e.Status != 404 || e.Message != "no such user" {
			t.Fatalf("call %d: %v; want the handler's 404", i, err)
		}
	}
	if n := notFounds.Load(); n != 2 {
		t.Fatalf("the 404 handler ran %d times for 2 calls", n)
	}

	start := time.Now()
	_, err = c.Act([]byte(`{"Pattern":"role:slow"}`), "role:slow")
	if !errors.Is(err, nano.ErrTimeout) {
		t.Fatalf("slow handler: %v; want ErrTimeout", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("the timeout did not stop the call")
	}
	if n := slow.Load(); n != 1 {
		t.Fatalf("a timed-out call reached the handler %d times", n)
	}
}

func TestNewClientValidates(t *testing.T) {
	for _, server := range []string{"", "localhost", "http://localhost:9999", "localhost:0", ":9999"} {
		if _, err := nano.NewClient(nano.ClientOptions{Server: server}); !errors.Is(err, nano.ErrInvalidOptions) {
			t.Errorf("NewClient(%q) = %v; want ErrInvalidOptions", server, err)
		}
	}
}

func TestClientClose(t *testing.T) {
	c := newClient(t, nano.ClientOptions{Server: "127.0.0.1:9999"})
	c.Close()
	if _, err := c.Act([]byte(`{"Pattern":"a"}`), "a"); !errors.Is(err, nano.ErrClosed) {
		t.Fatalf("Act after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestActFromHandler is the original's Quick Start: a handler calls another
// service with Act while it handles a message.
func TestActFromHandler(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{})
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:positive": positive})
	var caller *nano.Service
	caller, _ = startService(t, serverAddr, map[string]nano.HandlerFunc{
		"role:math,cmd:check": func([]byte) ([]byte, error) {
			return caller.Act([]byte(`{"Pattern":"role:math,cmd:positive","ServiceRequest":true,"Value":-1}`), "role:math,cmd:positive")
		},
	})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:positive","Value":1}`, `{"Result":true}`)
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:check"}`, `{"Result":false}`)
}

func TestActConcurrent(t *testing.T) {
	serverAddr, _ := countingServer(t)
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:positive": positive})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:positive","Value":1}`, `{"Result":true}`)
	c := newClient(t, nano.ClientOptions{Server: serverAddr})

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				msg, pattern, want := fmt.Sprintf(`{"Pattern":"role:math,cmd:sum","Left":%d,"Right":%d}`, w, i), "role:math,cmd:sum", fmt.Sprintf(`{"Result":%d}`, w+i)
				if i%2 == 1 {
					msg, pattern, want = fmt.Sprintf(`{"Pattern":"role:math,cmd:positive","Value":%d}`, i-w), "role:math,cmd:positive", fmt.Sprintf(`{"Result":%t}`, i-w > 0)
				}
				got, err := c.Act([]byte(msg), pattern)
				if err != nil || string(got) != want {
					t.Errorf("Act(%s) = %s, %v; want %s", msg, got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestActCacheKeepsSpecificRoutes: a cached peer for "role:math,cmd:sum"
// does not capture "role:math,cmd:sum,return:zero", which the server routes
// to a more specific service.
func TestActCacheKeepsSpecificRoutes(t *testing.T) {
	serverAddr, _ := countingServer(t)
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum,return:zero": sumZero})
	// Non-zero terms: the sum service would answer 0 to a message without.
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum,return:zero","Left":1,"Right":1}`, `{"Result":0}`)
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	c := newClient(t, nano.ClientOptions{Server: serverAddr})
	for range 2 {
		for _, tt := range []struct{ pattern, want string }{
			{"role:math,cmd:sum", `{"Result":5}`},
			{"role:math,cmd:sum,return:zero", `{"Result":0}`},
		} {
			got, err := c.Act([]byte(`{"Pattern":"`+tt.pattern+`","Left":2,"Right":3}`), tt.pattern)
			if err != nil || string(got) != tt.want {
				t.Fatalf("Act(%s) = %s, %v; want %s", tt.pattern, got, err, tt.want)
			}
		}
	}
}

// TestActDropsPeerThatLostThePattern: the cached peer's port now belongs
// to a service without the pattern; its "no handler" 404 sends the call
// through the server, which knows the pattern's new home.
func TestActDropsPeerThatLostThePattern(t *testing.T) {
	serverAddr, counts := countingServer(t)
	old, oldAddr := startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
	c := newClient(t, nano.ClientOptions{Server: serverAddr})
	msg := []byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`)
	if got, err := c.Act(msg, "role:math,cmd:sum"); err != nil || string(got) != `{"Result":3}` {
		t.Fatalf("first Act: %s, %v", got, err)
	}

	old.Shutdown(context.Background())
	other, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: oldAddr, Server: "127.0.0.1:1", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	other.Handle("role:other", sumZero)
	l, err := net.Listen("tcp", oldAddr)
	if err != nil {
		t.Fatal(err)
	}
	go other.Serve(l)
	t.Cleanup(func() { other.Shutdown(context.Background()) })
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": func([]byte) ([]byte, error) { return []byte(`"moved"`), nil }})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum"}`, `"moved"`)

	before := counts.proxied.Load()
	for i := range 2 {
		if got, err := c.Act(msg, "role:math,cmd:sum"); err != nil || string(got) != `"moved"` {
			t.Fatalf("Act %d after the move: %s, %v", i+1, got, err)
		}
	}
	if n := counts.proxied.Load() - before; n != 1 {
		t.Fatalf("the server proxied %d calls; want 1, then the new peer directly", n)
	}
}

// TestActWithOriginalServer: against a server without /resolve (one of the
// original library answers 405 to a GET), Act learns the instance from the
// envelope of an answer through the server, calls it directly while
// PeerTTL lasts, then goes through the server again.
func TestActWithOriginalServer(t *testing.T) {
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	var proxied atomic.Int64
	h := srv.Handler()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodPost:
			w.WriteHeader(http.StatusMethodNotAllowed) // as the original did, with no body
			return
		case r.URL.Path != "/register":
			proxied.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	serverAddr := ts.Listener.Addr().String()
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)

	c := newClient(t, nano.ClientOptions{Server: serverAddr, PeerTTL: 300 * time.Millisecond})
	act := func() {
		t.Helper()
		got, err := c.Act([]byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`), "role:math,cmd:sum")
		if err != nil || string(got) != `{"Result":3}` {
			t.Fatalf("Act = %s, %v", got, err)
		}
	}
	before := proxied.Load()
	for range 3 {
		act()
	}
	if n := proxied.Load() - before; n != 1 {
		t.Fatalf("3 calls: %d through the server; want the first only", n)
	}
	time.Sleep(400 * time.Millisecond) // past PeerTTL
	act()
	if n := proxied.Load() - before; n != 2 {
		t.Fatalf("after PeerTTL: %d calls through the server in all; want 2", n)
	}
}

// TestActWithOriginalService calls a service that knows nothing of this
// library's header, as the original library's services: it gets the
// caller's bytes unchanged and answers with its handler's bytes, or with
// the JSON envelope when the caller's message asks for it. Act returns the
// payload either way, through the server and directly.
func TestActWithOriginalService(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{})
	var calls atomic.Int64
	var mu sync.Mutex
	var seen []string // the bodies the service got
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, string(body))
		mu.Unlock()
		var msg struct{ ServiceRequest bool }
		json.Unmarshal(body, &msg)
		payload := []byte(`{"Result":"old"}`)
		if !msg.ServiceRequest {
			w.Write(payload)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{
			"Service": map[string]any{"Pattern": "role:old", "ServiceAddress": r.Host},
			"Payload": payload,
		})
	}))
	t.Cleanup(ts.Close)
	reg := fmt.Sprintf(`{"Pattern":"role:old","ServiceAddress":%q}`, ts.Listener.Addr().String())
	if status, body := post(t, "http://"+serverAddr+"/register", reg); status != 200 {
		t.Fatalf("register: %d %s", status, body)
	}
	msgs := []string{`{"Pattern":"role:old", "N":1}`, `{"ServiceRequest":true,"Pattern":"role:old"}`}
	for _, peerTTL := range []time.Duration{-1, time.Minute} { // through the server, then directly
		c := newClient(t, nano.ClientOptions{Server: serverAddr, PeerTTL: peerTTL})
		for _, msg := range msgs {
			got, err := c.Act([]byte(msg), "role:old")
			if err != nil || string(got) != `{"Result":"old"}` {
				t.Fatalf("PeerTTL %v: Act(%s) = %s, %v", peerTTL, msg, got, err)
			}
		}
	}
	if n := calls.Load(); n != 4 {
		t.Fatalf("the service got %d calls, want 4", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, body := range seen {
		if body != msgs[i%2] {
			t.Errorf("call %d: the service got %s; want the bytes sent, %s", i, body, msgs[i%2])
		}
	}
}

// timeoutDialer is a Transport whose dials to one address time out, as
// dials to an instance whose host no longer answers do, and that sends
// everything else through http.DefaultTransport.
type timeoutDialer struct{ dead string }

func (d timeoutDialer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == d.dead {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded}
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestActFailsOverADialTimeout: a peer whose dial times out, while the
// call's own context has time left, is dropped and the call goes to
// another instance: a dial that timed out delivered nothing.
func TestActFailsOverADialTimeout(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	dead := deadAddr(t)
	registerAt(t, addr, "role:math,cmd:sum", dead)
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitInstances(t, addr, "role:math,cmd:sum", 2)
	c := newClient(t, nano.ClientOptions{Server: addr, Transport: timeoutDialer{dead}})
	for i := range 6 {
		answer, err := c.ActContext(context.Background(), []byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`), "role:math,cmd:sum")
		if err != nil || string(answer) != `{"Result":2}` {
			t.Fatalf("call %d: %s %v; want the live instance's answer", i, answer, err)
		}
	}
}
