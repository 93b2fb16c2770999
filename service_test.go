package nano_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

func TestServiceEndpoint(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{})
	_, addr := startService(t, serverAddr, map[string]nano.HandlerFunc{
		"role:math,cmd:sum":             sum,
		"role:math,cmd:sum,return:zero": sumZero,
	})
	url := "http://" + addr + "/"

	t.Run("plain", func(t *testing.T) {
		resp, err := http.Post(url, "application/json", strings.NewReader(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`))
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(resp)
		if resp.StatusCode != 200 || body != `{"Result":3}` || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("got %d %s %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
		}
	})
	t.Run("envelope", func(t *testing.T) {
		status, body := post(t, url, `{"Pattern":"role:math,cmd:sum,return:zero,x:1","ServiceRequest":true}`)
		var env struct {
			Service nano.Registration
			Payload []byte
		}
		if err := json.Unmarshal([]byte(body), &env); status != 200 || err != nil {
			t.Fatalf("got %d %s (%v)", status, body, err)
		}
		port, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
		_, serverPort, _ := net.SplitHostPort(serverAddr)
		want := nano.Registration{
			Pattern:        "role:math,cmd:sum,return:zero",
			ServiceAddress: addr,
			ServicePort:    port,
			ServerAddress:  serverAddr,
			ServerPort:     atoi(serverPort),
		}
		if env.Service != want || string(env.Payload) != `{"Result":0}` {
			t.Fatalf("envelope = %+v %s; want %+v {\"Result\":0}", env.Service, env.Payload, want)
		}
		// Payload is base64, as encoding/json writes []byte.
		if !strings.Contains(body, `"Payload":"eyJSZXN1bHQiOjB9"`) {
			t.Fatalf("payload is not base64 in %s", body)
		}
	})
	t.Run("envelope in the header", func(t *testing.T) {
		// What this library's clients ask for: the payload as the body, the
		// pattern that matched in a header.
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"Pattern":"role:math,cmd:sum,return:zero,x:1","ServiceRequest":true}`))
		req.Header.Set("Nano-Envelope", "header")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(resp)
		if resp.StatusCode != 200 || body != `{"Result":0}` || resp.Header.Get("Nano-Service") != "role:math,cmd:sum,return:zero" {
			t.Fatalf("got %d %s %v", resp.StatusCode, body, resp.Header)
		}
		// Without ServiceRequest too: a client need not change the message
		// to learn who answered.
		req, _ = http.NewRequest(http.MethodPost, url, strings.NewReader(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`))
		req.Header.Set("Nano-Envelope", "header")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(resp); body != `{"Result":3}` || resp.Header.Get("Nano-Service") != "role:math,cmd:sum" {
			t.Fatalf("got %s %v", body, resp.Header)
		}
		// Without the field, the body is the handler's bytes and nothing
		// names the service, as with the original's services.
		status, body := post(t, url, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`)
		if status != 200 || body != `{"Result":3}` {
			t.Fatalf("got %d %s", status, body)
		}
	})
	t.Run("no handler", func(t *testing.T) {
		status, body := post(t, url, `{"Pattern":"role:math,cmd:summary"}`)
		if status != 404 {
			t.Fatalf("got %d %s", status, body)
		}
		errorBody(t, body)
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, tt := range []struct {
			method, body string
			status       int
		}{
			{"GET", "", 405},
			{"POST", "{", 400},
			{"POST", `{"Pattern":["a"]}`, 400},
			{"POST", `{"Pattern":"a","ServiceRequest":"yes"}`, 400},
			{"POST", `{"Pattern":"a,"}`, 400},
		} {
			status, body := do(t, tt.method, url, tt.body, nil)
			if status != tt.status {
				t.Errorf("%s %s: got %d %s; want %d", tt.method, tt.body, status, body, tt.status)
			}
			errorBody(t, body)
		}
	})
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func TestServiceHandle(t *testing.T) {
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:0", Server: "127.0.0.1:9999", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Handle("role:a", sumZero); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		pattern string
		fn      nano.HandlerFunc
		want    error
	}{
		{" role:a ", sumZero, nano.ErrInvalidPattern}, // the same pattern once trimmed
		{"role:a,", sumZero, nano.ErrInvalidPattern},
		{"", sumZero, nano.ErrInvalidPattern},
	} {
		if err := svc.Handle(tt.pattern, tt.fn); !errors.Is(err, tt.want) {
			t.Errorf("Handle(%q) = %v; want %v", tt.pattern, err, tt.want)
		}
	}
	if err := svc.Handle("role:b", nil); err == nil {
		t.Error("Handle with a nil handler succeeded")
	}
	if err := svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := svc.Handle("role:c", sumZero); !errors.Is(err, nano.ErrClosed) {
		t.Errorf("Handle after Shutdown = %v; want ErrClosed", err)
	}
	if err := svc.Serve(listen(t)); !errors.Is(err, nano.ErrClosed) {
		t.Errorf("Serve after Shutdown = %v; want ErrClosed", err)
	}
	if err := svc.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func TestNewServiceWithOptionsValidates(t *testing.T) {
	for _, opts := range []nano.ServiceOptions{
		{Addr: "", Server: "127.0.0.1:9999"},
		{Addr: ":8080", Server: "127.0.0.1:9999"},
		{Addr: "127.0.0.1:70000", Server: "127.0.0.1:9999"},
		{Addr: "127.0.0.1:8080", Server: ""},
		{Addr: "127.0.0.1:8080", Server: "http://127.0.0.1:9999"},
		{Addr: "127.0.0.1:8080", Server: "127.0.0.1:0"},
	} {
		if _, err := nano.NewServiceWithOptions(opts); !errors.Is(err, nano.ErrInvalidOptions) {
			t.Errorf("NewServiceWithOptions(%+v) = %v; want ErrInvalidOptions", opts, err)
		}
	}
}

// TestServiceRetriesRegistration starts a service before its server: the
// service keeps trying and registers once the server is up.
func TestServiceRetriesRegistration(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	serverAddr := fmt.Sprintf("127.0.0.1:%d", port)
	logs := &syncBuffer{}
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum}, func(o *nano.ServiceOptions) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
		o.RetryInterval = 200 * time.Millisecond
	})
	eventually(t, "a registration attempt fails", func() bool { return strings.Contains(logs.String(), "cannot register, retrying") })

	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", serverAddr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`, `{"Result":2}`)
}

// TestServiceRegistrationRefused: a wrong token is not retried forever.
func TestServiceRegistrationRefused(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{Token: "right"})
	logs := &syncBuffer{}
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:x": sum}, func(o *nano.ServiceOptions) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
		o.Token = "wrong"
	})
	eventually(t, "the refusal is logged", func() bool {
		return strings.Contains(logs.String(), "server refused registration") && strings.Contains(logs.String(), "unauthorized")
	})
}

// TestNewServiceEnvOverrides: NANO_SERVICE_ADDRESS and NANO_SERVER_ADDRESS
// replace the hosts given to NewService; the ports stay.
func TestNewServiceEnvOverrides(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{})
	_, serverPort, _ := net.SplitHostPort(serverAddr)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NANO_SERVICE_ADDRESS", "127.0.0.1")
	t.Setenv("NANO_SERVER_ADDRESS", "127.0.0.1")
	svc := nano.NewService("service.invalid", port, "server.invalid", atoi(serverPort))
	added := make(chan struct{})
	go func() {
		defer close(added)
		svc.Add("role:math,cmd:sum", sum)
	}()
	t.Cleanup(func() {
		svc.Shutdown(context.Background())
		<-added
	})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":2,"Right":3}`, `{"Result":5}`)

	status, body := post(t, fmt.Sprintf("http://127.0.0.1:%d/", port), `{"Pattern":"role:math,cmd:sum","ServiceRequest":true}`)
	var env struct{ Service nano.Registration }
	json.Unmarshal([]byte(body), &env)
	if status != 200 || env.Service.ServiceAddress != fmt.Sprintf("127.0.0.1:%d", port) || env.Service.ServerAddress != serverAddr {
		t.Fatalf("registration %d %s; want the overridden hosts", status, body)
	}
}

// TestServiceAddBlocks: Add serves and blocks; a second Add from another
// goroutine registers its pattern and blocks too; Shutdown releases both.
func TestServiceAddBlocks(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{})
	_, serverPort, _ := net.SplitHostPort(serverAddr)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	svc := nano.NewService("127.0.0.1", port, "127.0.0.1", atoi(serverPort))
	var wg sync.WaitGroup
	wg.Go(func() { svc.Add("role:math,cmd:sum", sum) })
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":2,"Right":3}`, `{"Result":5}`)
	wg.Go(func() { svc.Add("role:math,cmd:positive", positive) })
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:positive","Value":3}`, `{"Result":true}`)

	if err := svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait() // both Add calls returned
	late := make(chan struct{})
	go func() {
		svc.Add("role:late", sum)
		close(late)
	}()
	select {
	case <-late:
	case <-time.After(10 * time.Second):
		t.Fatal("Add after Shutdown blocks")
	}
}

// TestServiceAddWhileServing: Add on a service already serving through
// Serve registers its pattern instead of listening a second time.
func TestServiceAddWhileServing(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{})
	svc, _ := startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":2,"Right":3}`, `{"Result":5}`)
	added := make(chan struct{})
	go func() {
		svc.Add("role:math,cmd:positive", positive)
		close(added)
	}()
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:positive","Value":3}`, `{"Result":true}`)
	svc.Shutdown(context.Background())
	<-added
}

// TestServiceWithoutCallTimeout: a negative CallTimeout means no limit,
// not an expired one.
func TestServiceWithoutCallTimeout(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{})
	startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum}, func(o *nano.ServiceOptions) { o.CallTimeout = -1 })
	waitAnswer(t, serverAddr, `{"Pattern":"role:math,cmd:sum","Left":2,"Right":3}`, `{"Result":5}`)
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestShutdownSparesOriginalServers: a server of the original library
// answers /register with an empty 200 and would route /deregister to a
// handler as a message; a service shutting down sends it none.
func TestShutdownSparesOriginalServers(t *testing.T) {
	var mu sync.Mutex
	paths := map[string]int{}
	original := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.URL.Path]++
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(original.Close)
	svc, _ := startService(t, original.Listener.Addr().String(), map[string]nano.HandlerFunc{"role:x": sumZero})
	eventually(t, "the service registers", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return paths["/register"] > 0
	})
	if err := svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if paths["/deregister"] != 0 {
		t.Fatalf("sent %d deregistrations to a server without /deregister", paths["/deregister"])
	}
}

// TestAddReturnsAfterTheDrain: the original API's Add blocks until the
// service has shut down with its requests in flight answered, so that a
// program whose main returns after Add does not cut them short.
func TestAddReturnsAfterTheDrain(t *testing.T) {
	t.Parallel()
	_, serverAddr := startServer(t, nano.ServerOptions{})
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	host, serverPort, _ := net.SplitHostPort(serverAddr)
	svc := nano.NewService("127.0.0.1", port, host, atoi(serverPort))
	entered := make(chan struct{})
	returned := make(chan time.Time, 1)
	go func() {
		svc.Add("role:slow", func([]byte) ([]byte, error) {
			close(entered)
			time.Sleep(300 * time.Millisecond)
			return []byte(`"done"`), nil
		})
		returned <- time.Now()
	}()
	waitRegistered(t, serverAddr, "role:slow")
	answered := make(chan time.Time, 1)
	go func() {
		post(t, "http://"+serverAddr+"/", `{"Pattern":"role:slow"}`)
		answered <- time.Now()
	}()
	<-entered
	if err := svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, r := <-answered, <-returned
	if r.Before(a.Add(-50 * time.Millisecond)) {
		t.Fatalf("Add returned %v before the message in flight was answered", a.Sub(r))
	}
}
