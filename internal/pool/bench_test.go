//go:build unix

package pool

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The benchmarks post a small JSON message and read its answer, through
// the pool and through http.Transport, to two servers: an httptest
// server, and a minimal one that spends next to nothing per request, so
// that its figures are mostly the client's. Each is run one request at a
// time without a deadline, then with one, then from as many goroutines
// as GOMAXPROCS. Besides the time per request they report the CPU time
// per request, cpu-ns/op, the better measure of cost on a busy machine.
// Allocations and CPU time count the server's share as well as the
// client's.

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
	answer := `{"answer":3}`
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = []string{"application/json"}
		io.WriteString(w, answer)
	}))
	defer ts.Close()
	servers := []struct{ name, url string }{
		{"server=httptest", ts.URL},
		{"server=minimal", minimalServer(b, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "+
			strconv.Itoa(len(answer))+"\r\n\r\n"+answer)},
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
	for _, s := range servers {
		for _, m := range modes {
			b.Run(s.name+"/"+m.name, func(b *testing.B) {
				rt := newRT()
				defer rt.CloseIdleConnections()
				once := func() {
					ctx, cancel := context.Background(), context.CancelFunc(func() {})
					if m.timeout > 0 {
						ctx, cancel = context.WithTimeout(ctx, m.timeout)
					}
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(message))
					resp, err := rt.RoundTrip(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				b.ReportAllocs()
				start := cpuTime()
				if m.parallel {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							once()
						}
					})
				} else {
					for b.Loop() {
						once()
					}
				}
				b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// minimalServer starts a server that answers every request with answer,
// and returns its URL. It skips each request's head line by line and its
// body by its Content-Length, allocating nothing per request. It stops
// when the benchmark ends; its connections end when the client closes
// them.
func minimalServer(b *testing.B, answer string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveMinimal(c, []byte(answer))
		}
	}()
	return "http://" + ln.Addr().String()
}

// serveMinimal answers the requests on c with answer until c fails.
func serveMinimal(c net.Conn, answer []byte) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		length := 0
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(bytes.TrimSpace(line)) == 0 {
				break
			}
			if name, value, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Content-Length")) {
				length, _ = strconv.Atoi(string(bytes.TrimSpace(value)))
			}
		}
		if _, err := br.Discard(length); err != nil {
			return
		}
		if _, err := c.Write(answer); err != nil {
			return
		}
	}
}

// cpuTime is the CPU time the process has used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
