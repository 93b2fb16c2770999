//go:build unix

package pool

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// The benchmarks post a small JSON message to an httptest server and read
// its answer, through the pool and through http.Transport: one request
// at a time with no deadline, then with a deadline, then from as many
// goroutines as GOMAXPROCS. Besides the time per request they report the
// CPU time per request, cpu-ns/op, the better measure of cost on a busy
// machine. Allocations and CPU time count the server's share as well as
// the client's, the same for both.

func BenchmarkRoundTrip(b *testing.B) {
	benchmarkRoundTrip(b, func() roundTripper { return &Transport{} })
}

func BenchmarkRoundTripStdTransport(b *testing.B) {
	benchmarkRoundTrip(b, func() roundTripper {
		return &http.Transport{MaxIdleConnsPerHost: defaultMaxIdleConnsPerHost, DisableCompression: true}
	})
}

// benchmarkRoundTrip runs the benchmarks through transports from newRT,
// a new one for each.
func benchmarkRoundTrip(b *testing.B, newRT func() roundTripper) {
	message := []byte(`{"Pattern":"role:math,cmd:sum","left":1,"right":2}`)
	answer := []byte(`{"answer":3}`)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = []string{"application/json"}
		w.Write(answer)
	}))
	defer ts.Close()
	once := func(b *testing.B, rt http.RoundTripper, timeout time.Duration) {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, timeout)
		}
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL, bytes.NewReader(message))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	modes := []struct {
		name     string
		timeout  time.Duration
		parallel bool
	}{
		{"sequential/no-deadline", 0, false},
		{"sequential/deadline", 5 * time.Second, false},
		{"parallel/deadline", 5 * time.Second, true},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			rt := newRT()
			defer rt.CloseIdleConnections()
			b.ReportAllocs()
			start := cpuTime()
			if m.parallel {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						once(b, rt, m.timeout)
					}
				})
			} else {
				for b.Loop() {
					once(b, rt, m.timeout)
				}
			}
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the CPU time the process has used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
