package nano_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// Benchmarks of the hot paths; the figures in docs/performance.md come from
//
//	go test -run '^$' -bench . -benchmem .
//
// BenchmarkMirrorLookup and BenchmarkParsePattern live in the internal
// tests.

// benchServer starts a server (options given) and a sum service
// registered at it, and returns the server and its address once the
// pattern routes.
func benchServer(b *testing.B, opts nano.ServerOptions) (*nano.Server, string) {
	b.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	srv, err := nano.NewServerWithOptions(opts)
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(func() {
		ts.Close()
		srv.Shutdown(context.Background())
	})
	addr := ts.Listener.Addr().String()
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:0", Server: addr, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	svc.Handle("role:math,cmd:sum", sum)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go svc.Serve(l)
	b.Cleanup(func() { svc.Shutdown(context.Background()) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"Pattern":"role:math,cmd:sum"}`))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return srv, addr
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("the sum service did not register")
		}
	}
}

// BenchmarkServerHandler sends a message through Server.Handler() to a
// service on loopback: the server's whole cost but the client's side of
// the connection.
func BenchmarkServerHandler(b *testing.B) {
	srv, _ := benchServer(b, nano.ServerOptions{})
	h := srv.Handler()
	body := []byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkAct is a cached Act: straight to the service.
func BenchmarkAct(b *testing.B) {
	_, addr := benchServer(b, nano.ServerOptions{})
	c, err := nano.NewClient(nano.ClientOptions{Server: addr, PeerTTL: time.Hour, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := []byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`)
	if _, err := c.Act(msg, "role:math,cmd:sum"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Act(msg, "role:math,cmd:sum"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRegistryMiss sends messages whose pattern no service has
// through Server.Handler(), so that each one misses the mirror and asks
// Redis: the time is one round trip whatever the number of fields.
func BenchmarkRegistryMiss(b *testing.B) {
	opts := nano.ServerOptions{
		Redis:     &redis.UniversalOptions{Addrs: []string{testRedis.Addr}},
		KeyPrefix: fmt.Sprintf("nanobench:%d:", time.Now().UnixNano()),
		Logger:    testLogger(),
	}
	srv, err := nano.NewServerWithOptions(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	h := srv.Handler()
	for _, fields := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("fields=%d", fields), func(b *testing.B) {
			body := []byte(`{"Pattern":"` + strings.TrimSuffix(strings.Repeat("f:x,", fields), ",") + `"}`)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
				if rec.Code != http.StatusNotFound {
					b.Fatalf("%d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

// BenchmarkMirrorLoad100k loads a registry of 100 000 patterns from Redis
// into a new server's mirror, and reports the heap the mirror takes per
// pattern.
func BenchmarkMirrorLoad100k(b *testing.B) {
	const n = 100_000
	prefix := fmt.Sprintf("nanobench:%d:", time.Now().UnixNano())
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	defer rdb.Close()
	ctx := context.Background()
	expires := float64(time.Now().Add(time.Hour).UnixMilli())
	for start := 0; start < n; start += 1000 {
		pipe := rdb.Pipeline()
		for i := start; i < start+1000; i++ {
			p := fmt.Sprintf("role:svc%d,cmd:run", i)
			key := fmt.Sprintf("%s{%d}pattern:%s", prefix, fnvShard(p), p)
			pipe.ZAdd(ctx, key, &redis.Z{Score: expires, Member: fmt.Sprintf("10.0.%d.%d:8080", i/250%250, i%250)})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	// Removed before the next run of the benchmark starts, not at the end
	// of all of them: SCAN's cost grows with the whole database.
	defer func() {
		for cursor := uint64(0); ; {
			keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 5000).Result()
			if err != nil {
				b.Fatal(err)
			}
			if len(keys) > 0 {
				rdb.Unlink(ctx, keys...)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}()

	opts := nano.ServerOptions{
		Redis:           &redis.UniversalOptions{Addrs: []string{testRedis.Addr}},
		KeyPrefix:       prefix,
		RegistryTimeout: 30 * time.Second,
		Logger:          testLogger(),
	}
	var perPattern float64
	for b.Loop() {
		b.StopTimer() // the collection of the last round's mirror is not the load's
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		srv, err := nano.NewServerWithOptions(opts)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		perPattern = float64(after.HeapAlloc-before.HeapAlloc) / n
		srv.Shutdown(ctx)
		b.StartTimer()
	}
	b.ReportMetric(perPattern, "heapB/pattern")
}
