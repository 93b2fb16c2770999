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
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// heapInUse is the heap in use after a garbage collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestBodyMemoryFollowsWhatArrives: 200 connections that announce a body
// of 4 MiB and send one byte cost the server and the service a little
// memory each, not what they announce (800 MiB). Not parallel: it
// measures the heap of the whole test process.
func TestBodyMemoryFollowsWhatArrives(t *testing.T) {
	_, serverAddr := startServer(t, nano.ServerOptions{MaxConns: -1})
	_, serviceAddr := startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum},
		func(o *nano.ServiceOptions) { o.MaxConns = -1 })
	for _, target := range []struct{ name, addr string }{{"server", serverAddr}, {"service", serviceAddr}} {
		t.Run(target.name, func(t *testing.T) {
			before := heapInUse()
			conns := make([]net.Conn, 0, 200)
			t.Cleanup(func() {
				for _, c := range conns {
					c.Close()
				}
			})
			for range 200 {
				c, err := net.Dial("tcp", target.addr)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: nano\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", 4<<20)
			}
			// The headers are read at once; watch the heap for a while in
			// case anything is allocated late.
			var most uint64
			for range 5 {
				time.Sleep(100 * time.Millisecond)
				most = max(most, heapInUse())
			}
			grown := int64(most) - int64(before)
			t.Logf("200 connections announcing 4 MiB each: heap grew by %.1f MiB", float64(grown)/(1<<20))
			if grown > 20<<20 {
				t.Fatalf("heap grew by %d MiB; want under 20 MiB", grown>>20)
			}
		})
	}
}

// TestMaxConns: a server holds at most MaxConns connections open; the
// next one waits, and is served once one closes.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{MaxConns: 3})
	health := "GET /healthz HTTP/1.1\r\nHost: nano\r\n\r\n"
	ask := func(c net.Conn, wait time.Duration) error {
		c.SetDeadline(time.Now().Add(wait))
		if _, err := io.WriteString(c, health); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	var open []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ask(c, 5*time.Second); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		open = append(open, c)
	}
	extra, err := net.Dial("tcp", addr) // the kernel accepts it; the server does not yet
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := ask(extra, 300*time.Millisecond); err == nil {
		t.Fatal("a fourth connection was served while three were open")
	}
	open[0].Close()
	if err := ask(extra, 5*time.Second); err != nil {
		t.Fatalf("the fourth connection, once one closed: %v", err)
	}
}

// TestShutdownWaitsForHandlers: Shutdown returns when its context ends,
// but the handler of a server mounted in an http.Server of the user's own
// keeps working meanwhile (the registry and the connections to services
// are released only after it); requests that come after Shutdown get 503.
func TestShutdownWaitsForHandlers(t *testing.T) {
	t.Parallel()
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Redis: redisOptions(t, testRedis).Redis, KeyPrefix: redisOptions(t, testRedis).KeyPrefix, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mounted := httptest.NewServer(srv.Handler())
	t.Cleanup(mounted.Close)
	addr := mounted.Listener.Addr().String()
	answer, release := messageInFlight(t, addr)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a handler running past its context: %v; want its deadline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Shutdown returned %v after its context ended", took)
	}
	once.Do(func() { close(release) })
	if got := <-answer; got != `200 "done"` {
		t.Fatalf("the request in flight got %s", got)
	}
	if status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:slow"}`); status != http.StatusServiceUnavailable {
		t.Fatalf("after Shutdown: %d %s; want 503", status, body)
	}
}

// TestOptionsRules: in every options struct, a negative value lifts a
// limit, and the options for which no limit makes no sense refuse it.
func TestOptionsRules(t *testing.T) {
	t.Parallel()
	for _, opts := range []nano.ServerOptions{
		{Addr: "nonsense"},
		{Addr: "127.0.0.1:70000"},
		{Addr: "[nonsense:1]:0"},
		{Addr: "two words:80"},
		{TTL: -time.Second},
		{TTL: nano.MinTTL - 1},
		{RegistryTimeout: -time.Second},
		{Redis: &redis.UniversalOptions{MasterName: "mymaster"}},
		{OriginalKeys: true},
		{KeyPrefix: "nano{x}:"},
		{Outliers: nano.Outliers{EjectionTime: -time.Second}},
		{Outliers: nano.Outliers{MaxEjectedPercent: 101}},
	} {
		if _, err := nano.NewServerWithOptions(opts); !errors.Is(err, nano.ErrInvalidOptions) {
			t.Errorf("NewServerWithOptions(%+v) = %v; want ErrInvalidOptions", opts, err)
		}
	}
	if _, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:8080", Server: "127.0.0.1:9999", RetryInterval: -1}); !errors.Is(err, nano.ErrInvalidOptions) {
		t.Errorf("a negative RetryInterval: %v; want ErrInvalidOptions", err)
	}
	if _, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:8080", Server: "127.0.0.1:9999", Outliers: nano.Outliers{MaxEjectionTime: -1}}); !errors.Is(err, nano.ErrInvalidOptions) {
		t.Errorf("a negative MaxEjectionTime: %v; want ErrInvalidOptions", err)
	}
	if _, err := nano.NewClient(nano.ClientOptions{Server: "127.0.0.1:9999", Outliers: nano.Outliers{MaxEjectedPercent: -5}}); !errors.Is(err, nano.ErrInvalidOptions) {
		t.Errorf("a negative MaxEjectedPercent: %v; want ErrInvalidOptions", err)
	}

	// A negative MaxBodyBytes lifts the limit on server and service alike:
	// a message over the 4 MiB default goes through.
	unlimited := nano.ServerOptions{MaxBodyBytes: -1}
	_, addr := startServer(t, unlimited)
	startService(t, addr, map[string]nano.HandlerFunc{"role:big": func(msg []byte) ([]byte, error) {
		return []byte(fmt.Sprint(len(msg))), nil
	}}, func(o *nano.ServiceOptions) { o.MaxBodyBytes = -1 })
	big := `{"Pattern":"role:big","Pad":"` + strings.Repeat("x", 5<<20) + `"}`
	waitRegistered(t, addr, "role:big")
	if status, body := post(t, "http://"+addr+"/", big); status != http.StatusOK || body != fmt.Sprint(len(big)) {
		t.Fatalf("a 5 MiB message with no limit: %d %.100s", status, body)
	}

	d := nano.ServerOptions{}.Defaults()
	if d.MaxBodyBytes != 4<<20 || d.MaxHeaderBytes != 1<<20 || d.TTL != 30*time.Second || d.WriteTimeout != d.UpstreamTimeout+10*time.Second {
		t.Errorf("Defaults() = %+v", d)
	}
	if d := (nano.ServerOptions{UpstreamTimeout: -1}).Defaults(); d.WriteTimeout != 0 {
		t.Errorf("with no upstream limit, the write timeout defaults to %v; want none", d.WriteTimeout)
	}
}
