package nano_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Tests of the hop from a caller to a service against services that answer
// badly or not at all: through the nano server, and through a Client that
// calls the peer it resolved, or goes through the server. What a service
// sends is never taken on trust, a message reaches a handler at most
// once, and no error a caller sees names an address.

const (
	sumMessage = `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`
	sumAnswer  = `{"Result":3}`
)

// startSum serves the sum handler at the server at addr and waits until
// it is routed: the check that a server, or a client, still serves after a
// hostile exchange.
func startSum(t *testing.T, addr string) {
	t.Helper()
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
	waitRegistered(t, addr, "role:math,cmd:sum")
}

// TestProxyRefusesBrokenAnswers: an answer that is not valid HTTP/1.1, or
// that this hop did not ask for, reaches the caller as a 502 (from Act,
// ErrServiceUnavailable), the message reached the service once, and the
// server and the client go on serving.
func TestProxyRefusesBrokenAnswers(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 3 * time.Second})
	startSum(t, addr)
	const body = "Content-Length: 4\r\n\r\n\"ok\""
	tests := []struct {
		name, answer string // answer "" closes the connection without a word
	}{
		{"space in a field name", "HTTP/1.1 200 OK\r\nNano-Service: role:x\r\nX A: 1\r\n" + body},
		{"control character in a field value", "HTTP/1.1 200 OK\r\nNano-Service: role:x\r\nX-A: a\x01b\r\n" + body},
		{"NUL in a field value", "HTTP/1.1 200 OK\r\nNano-Service: role:x\r\nX-A: a\x00b\r\n" + body},
		{"bare CR in a field value", "HTTP/1.1 200 OK\r\nNano-Service: role:x\r\nX-A: a\rb\r\n" + body},
		{"field line without a colon", "HTTP/1.1 200 OK\r\nNano-Service: role:x\r\nNoColon\r\n" + body},
		{"unrequested 101", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: evil\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nNano-Service: role:x\r\n" + body},
		{"status 099", "HTTP/1.1 099 Odd\r\nNano-Service: role:x\r\n" + body},
		{"status line without a code", "HTTP/1.1 OK\r\nNano-Service: role:x\r\n" + body},
		{"status line of another protocol", "SSH-2.0-OpenSSH_9.6\r\n"},
		{"two lengths", "HTTP/1.1 200 OK\r\nNano-Service: role:x\r\nContent-Length: 3\r\n" + body},
		{"negative length", "HTTP/1.1 200 OK\r\nNano-Service: role:x\r\nContent-Length: -1\r\n\r\n\"ok\""},
		{"closed without an answer", ""},
	}
	for i, tt := range tests {
		for j, path := range callPaths {
			t.Run(tt.name+"/"+path.name, func(t *testing.T) {
				t.Parallel()
				svc := startScripted(t, func(c net.Conn, _ int, _ string) bool {
					if tt.answer == "" {
						return false
					}
					_, err := io.WriteString(c, tt.answer)
					return err == nil // and leave the rest to the caller
				})
				pattern := fmt.Sprintf("role:broken,case:%d,path:%d", i, j)
				registerAt(t, addr, pattern, svc.addr)
				waitRegistered(t, addr, pattern)
				c := path.open(t, addr)

				r := c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`"}`)
				if n := svc.delivered(pattern); n != 1 {
					t.Errorf("the message reached the service %d times; want once", n)
				}
				wantUnavailable(t, r, svc.port)
				wantOK(t, c.call(context.Background(), "role:math,cmd:sum", sumMessage), sumAnswer)
			})
		}
	}
}

// TestProxyRefusesHeaderFlood: a service that sends a status line and then
// header lines without end (or one endless line) is cut off at 1 MiB: the
// caller gets a 502 at once, and the heap does not hold what was sent.
// Not parallel: it measures the heap of the whole test process.
func TestProxyRefusesHeaderFlood(t *testing.T) {
	const (
		floodBytes = 256 << 20 // what the service would send
		guard      = 64 << 20  // heap growth past which it stops, to spare the machine
		allowed    = 8 << 20   // heap growth allowed: a few MiB over the 1 MiB limit
	)
	line := "X-Flood: " + strings.Repeat("a", 1013) + "\r\n" // 1 KiB
	floods := []struct{ name, chunk string }{
		{"header lines", strings.Repeat(line, 64)},
		{"one endless line", "X-Flood: " + strings.Repeat("a", 64<<10-9)},
	}
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 5 * time.Second})
	startSum(t, addr)
	for i, flood := range floods {
		for j, path := range callPaths[:2] { // through the server, and Act to the peer
			t.Run(flood.name+"/"+path.name, func(t *testing.T) {
				stop := make(chan struct{})
				var streamed atomic.Int64
				svc := startScripted(t, func(c net.Conn, _ int, _ string) bool {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nNano-Service: role:x\r\n")
					for streamed.Load() < floodBytes {
						select {
						case <-stop:
							return false
						default:
						}
						n, err := io.WriteString(c, flood.chunk)
						streamed.Add(int64(n))
						if err != nil {
							return false
						}
					}
					return false
				})
				pattern := fmt.Sprintf("role:flood,case:%d,path:%d", i, j)
				registerAt(t, addr, pattern, svc.addr)
				waitRegistered(t, addr, pattern)
				c := path.open(t, addr)

				var before runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				var peak atomic.Uint64
				peak.Store(before.HeapAlloc)
				done := make(chan struct{})
				var sampler sync.WaitGroup
				sampler.Go(func() {
					var once sync.Once
					var m runtime.MemStats
					for {
						select {
						case <-done:
							return
						case <-time.After(time.Millisecond):
						}
						runtime.ReadMemStats(&m)
						if m.HeapAlloc > peak.Load() {
							peak.Store(m.HeapAlloc)
						}
						if m.HeapAlloc > before.HeapAlloc+guard {
							once.Do(func() { close(stop) })
						}
					}
				})
				r := c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`"}`)
				close(done)
				sampler.Wait()
				var after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&after)
				grew := int64(peak.Load()) - int64(before.HeapAlloc)
				kept := int64(after.HeapAlloc) - int64(before.HeapAlloc)
				t.Logf("answered in %v after %d MiB sent; heap grew by %.1f MiB at most, %.1f MiB after GC",
					r.elapsed.Round(time.Millisecond), streamed.Load()>>20, float64(grew)/(1<<20), float64(kept)/(1<<20))

				wantUnavailable(t, r, svc.port)
				if r.elapsed > 2*time.Second {
					t.Errorf("the caller waited %v for its 502; want it at once", r.elapsed.Round(time.Millisecond))
				}
				if grew > allowed {
					t.Errorf("the heap grew by %d MiB while reading the answer; want at most %d MiB", grew>>20, allowed>>20)
				}
				if kept > allowed {
					t.Errorf("the heap holds %d MiB more after the answer; want at most %d MiB", kept>>20, allowed>>20)
				}
				wantOK(t, c.call(context.Background(), "role:math,cmd:sum", sumMessage), sumAnswer)
			})
		}
	}
}

// TestProxyIgnoresBytesAfterTheAnswer: a service that sends a complete
// second answer after the first one's body, in the same write or later
// while the connection is idle, cannot pass it off as the answer to the
// next message: the next message is delivered and answered, or fails.
func TestProxyIgnoresBytesAfterTheAnswer(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 3 * time.Second})
	tests := []struct {
		name  string
		delay time.Duration // from the answer to the injected one; 0: the same write
	}{
		{"in the same write", 0},
		{"while the connection is idle", 50 * time.Millisecond},
	}
	for i, tt := range tests {
		for j, path := range callPaths {
			t.Run(tt.name+"/"+path.name, func(t *testing.T) {
				t.Parallel()
				injected := nanoAnswer(`"injected"`)
				svc := startScripted(t, func(c net.Conn, n int, _ string) bool {
					if n > 1 {
						_, err := io.WriteString(c, nanoAnswer(`"next"`))
						return err == nil
					}
					if tt.delay == 0 {
						_, err := io.WriteString(c, nanoAnswer(`"ok"`)+injected)
						return err == nil
					}
					io.WriteString(c, nanoAnswer(`"ok"`))
					time.Sleep(tt.delay)
					_, err := io.WriteString(c, injected)
					return err == nil
				})
				pattern := fmt.Sprintf("role:smuggle,case:%d,path:%d", i, j)
				registerAt(t, addr, pattern, svc.addr)
				waitRegistered(t, addr, pattern)
				c := path.open(t, addr)

				wantOK(t, c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`","N":1}`), `"ok"`)
				time.Sleep(3 * tt.delay) // the injected answer is out
				for n := 2; n <= 3; n++ {
					r := c.call(context.Background(), pattern, fmt.Sprintf(`{"Pattern":%q,"N":%d}`, pattern, n))
					if strings.Contains(r.body, "injected") {
						t.Fatalf("message %d got the answer the service injected after the first: %v", n, r)
					}
					if r.act && r.err == nil || !r.act && r.status == 200 {
						wantOK(t, r, `"next"`)
					} else {
						wantUnavailable(t, r, svc.port)
					}
					if d := svc.delivered(fmt.Sprintf(`"N":%d`, n)); d > 1 {
						t.Errorf("message %d reached the service %d times", n, d)
					}
				}
			})
		}
	}
}

// TestProxyDeliversAtMostOnce: a service that reads the whole message and
// then resets the connection may have run its handler: the caller gets a
// 502 (ErrServiceUnavailable from Act), and the message is not sent again,
// not on a new connection to the same instance, not to another instance.
func TestProxyDeliversAtMostOnce(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 3 * time.Second})
	tests := []struct {
		name      string
		instances int
		warm      bool // a message answered first leaves a kept connection
	}{
		{"one instance, new connection", 1, false},
		{"one instance, kept connection", 1, true},
		{"two instances", 2, false},
	}
	for i, tt := range tests {
		for j, path := range callPaths {
			t.Run(tt.name+"/"+path.name, func(t *testing.T) {
				t.Parallel()
				pattern := fmt.Sprintf("role:once,case:%d,path:%d", i, j)
				var svcs []*scriptedService
				var ports []string
				for range tt.instances {
					svc := startScripted(t, func(c net.Conn, _ int, body string) bool {
						if strings.Contains(body, `"reset"`) {
							resetConn(c)
							return false
						}
						_, err := io.WriteString(c, nanoAnswer(`"warm"`))
						return err == nil
					})
					registerAt(t, addr, pattern, svc.addr)
					svcs = append(svcs, svc)
					ports = append(ports, svc.port)
				}
				waitInstances(t, addr, pattern, tt.instances)
				c := path.open(t, addr)
				if tt.warm {
					wantOK(t, c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`","Do":"warm"}`), `"warm"`)
				}

				r := c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`","Do":"reset"}`)
				delivered := 0
				for _, svc := range svcs {
					delivered += svc.delivered(`"reset"`)
				}
				if delivered != 1 {
					t.Errorf("the message reached the services %d times; want once", delivered)
				}
				wantUnavailable(t, r, ports...)
			})
		}
	}
}

// TestProxyFailsOverUndeliveredMessages: where the message cannot have
// reached a handler (nobody listens, the instance says it has no handler
// for the pattern, a kept connection was closed while idle) it goes to
// another instance, or on a new connection, and the caller sees no
// failure.
func TestProxyFailsOverUndeliveredMessages(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 3 * time.Second})
	const live = `{"ID":"live"}`
	noHandler := func(c net.Conn, _ int, _ string) bool {
		body := `{"error":"nano: no service matches the pattern"}`
		_, err := fmt.Fprintf(c, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nNano-Error: no-handler\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return err == nil
	}
	tests := []struct {
		name string
		run  func(t *testing.T, c *caller, pattern string)
	}{
		{"nobody listens at the first instance", func(t *testing.T, c *caller, pattern string) {
			registerAt(t, addr, pattern, deadAddr(t))
			idService(t, addr, pattern, "live")
			waitInstances(t, addr, pattern, 2)
			for range 20 {
				wantOK(t, c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`"}`), live)
			}
		}},
		{"an instance without the handler", func(t *testing.T, c *caller, pattern string) {
			svc := startScripted(t, noHandler)
			registerAt(t, addr, pattern, svc.addr)
			idService(t, addr, pattern, "live")
			waitInstances(t, addr, pattern, 2)
			for i := 0; i < 5 || svc.delivered(pattern) == 0; i++ {
				if i == 50 {
					t.Fatal("50 messages and none was tried at the instance without the handler")
				}
				wantOK(t, c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`"}`), live)
			}
		}},
		{"a service closing its connection after each answer", func(t *testing.T, c *caller, pattern string) {
			var closed atomic.Int64
			svc := startScripted(t, func(c net.Conn, _ int, _ string) bool {
				io.WriteString(c, nanoAnswer(live)) // no "Connection: close"
				c.Close()
				closed.Add(1)
				return false
			})
			registerAt(t, addr, pattern, svc.addr)
			waitRegistered(t, addr, pattern)
			for i := range 20 {
				wantOK(t, c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`"}`), live)
				// The next message comes once the connection is closed,
				// however late the closing goroutine ran: it cannot have
				// been delivered on it.
				eventually(t, "the service closed the connection", func() bool { return closed.Load() == int64(i+1) })
			}
			if n := svc.delivered(pattern); n != 20 {
				t.Errorf("20 messages reached the service %d times", n)
			}
		}},
		{"a service closing idle connections", func(t *testing.T, c *caller, pattern string) {
			startService(t, addr, map[string]nano.HandlerFunc{pattern: func([]byte) ([]byte, error) { return []byte(live), nil }},
				func(o *nano.ServiceOptions) { o.IdleTimeout = 50 * time.Millisecond })
			waitRegistered(t, addr, pattern)
			for range 4 {
				wantOK(t, c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`"}`), live)
				time.Sleep(150 * time.Millisecond) // the service closes the kept connection
			}
		}},
	}
	for i, tt := range tests {
		for j, path := range callPaths {
			t.Run(tt.name+"/"+path.name, func(t *testing.T) {
				t.Parallel()
				tt.run(t, path.open(t, addr), fmt.Sprintf("role:failover,case:%d,path:%d", i, j))
			})
		}
	}
}

// TestProxyAtMostOnceThroughHTTPTransport: with an http.Transport as the
// server's Transport, a message that carries an Idempotency-Key is still
// sent once: http.Transport resends such a request after its kept
// connection failed with the request written, unless the request cannot
// be read again.
func TestProxyAtMostOnceThroughHTTPTransport(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{Transport: &http.Transport{}})
	svc := startScripted(t, func(c net.Conn, n int, body string) bool {
		if strings.Contains(body, "second") {
			return false // read it, then close without answering
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	registerAt(t, addr, "role:once", svc.addr)
	waitInstances(t, addr, "role:once", 1)
	key := http.Header{"Idempotency-Key": {"k1"}}
	if status, body := do(t, http.MethodPost, "http://"+addr+"/", `{"Pattern":"role:once","n":"first"}`, key); status != http.StatusOK {
		t.Fatalf("first message: %d %s", status, body)
	}
	if status, _ := do(t, http.MethodPost, "http://"+addr+"/", `{"Pattern":"role:once","n":"second"}`, key); status != http.StatusBadGateway {
		t.Errorf("second message: %d; want 502", status)
	}
	if n := svc.delivered("second"); n != 1 {
		t.Fatalf("the second message was delivered %d times; want once", n)
	}
}
