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
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Tests of the life of a call on the proxy hop: it ends when its caller
// leaves or its deadline passes, on every hop down to the service, and it
// reuses its connections.

// TestProxyCancelsWhenTheCallerLeaves: a caller that hangs up, or cancels
// its context, ends the call at the service: the service's request context
// ends, and ActContext returns context.Canceled at once.
func TestProxyCancelsWhenTheCallerLeaves(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 5 * time.Second})

	t.Run("server/the caller hangs up", func(t *testing.T) {
		t.Parallel()
		svc := startHeld(t)
		pattern := "role:held,path:tcp"
		registerAt(t, addr, pattern, svc.addr)
		waitRegistered(t, addr, pattern)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		msg := `{"Pattern":"` + pattern + `"}`
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: nano\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
		svc.waitEntered(t)
		left := time.Now()
		conn.Close()
		t.Logf("the service's request context ended %v after the caller hung up", svc.waitEnded(t, left).Round(time.Microsecond))
	})
	for j, path := range actPaths {
		t.Run(path.name+"/the context is cancelled", func(t *testing.T) {
			t.Parallel()
			svc := startHeld(t)
			pattern := fmt.Sprintf("role:held,path:%d", j)
			registerAt(t, addr, pattern, svc.addr)
			waitRegistered(t, addr, pattern)
			c := path.open(t, addr)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			result := make(chan callResult, 1)
			go func() { result <- c.call(ctx, pattern, `{"Pattern":"`+pattern+`"}`) }()
			svc.waitEntered(t)
			cancelled := time.Now()
			cancel()
			var r callResult
			select {
			case r = <-result:
			case <-time.After(5 * time.Second):
				t.Fatal("ActContext had not returned 5 s after its context was cancelled")
			}
			returned := time.Since(cancelled)
			ended := svc.waitEnded(t, cancelled)
			t.Logf("ActContext returned %v after the cancel, the service's request context ended %v after it",
				returned.Round(time.Microsecond), ended.Round(time.Microsecond))
			if !errors.Is(r.err, context.Canceled) {
				t.Errorf("got %v; want context.Canceled", r)
			}
			if returned >= time.Second {
				t.Errorf("ActContext returned %v after its context was cancelled; want under 1 s", returned.Round(time.Millisecond))
			}
			checkNoAddress(t, r.text(), svc.port)
		})
	}
}

// TestProxyDeadlines: a call that outlives its deadline ends at the
// service too; the server answers 504, ActContext returns
// context.DeadlineExceeded soon after the deadline, even when it waits for
// the /resolve another caller started.
func TestProxyDeadlines(t *testing.T) {
	t.Parallel()

	t.Run("server/UpstreamTimeout", func(t *testing.T) {
		t.Parallel()
		const timeout = 200 * time.Millisecond
		_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: timeout})
		svc := startHeld(t)
		pattern := "role:held"
		registerAt(t, addr, pattern, svc.addr)
		waitRegistered(t, addr, pattern)
		c := callPaths[0].open(t, addr)
		start := time.Now()
		r := c.call(context.Background(), pattern, `{"Pattern":"`+pattern+`"}`)
		ended := svc.waitEnded(t, start.Add(timeout))
		t.Logf("answered %d after %v; the service's request context ended %v after the timeout",
			r.status, r.elapsed.Round(time.Millisecond), ended.Round(time.Millisecond))
		if r.err != nil || r.status != http.StatusGatewayTimeout {
			t.Fatalf("got %v; want 504", r)
		}
		errorBody(t, r.body)
		checkNoAddress(t, r.body, svc.port)
		if r.elapsed >= timeout+time.Second {
			t.Errorf("the 504 came after %v; want it soon after the %v timeout", r.elapsed.Round(time.Millisecond), timeout)
		}
	})

	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 5 * time.Second})
	for j, path := range actPaths {
		t.Run(path.name+"/context deadline", func(t *testing.T) {
			t.Parallel()
			svc := startHeld(t)
			pattern := fmt.Sprintf("role:held,path:%d", j)
			registerAt(t, addr, pattern, svc.addr)
			waitRegistered(t, addr, pattern)
			c := path.open(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			deadline, _ := ctx.Deadline()
			r := c.call(ctx, pattern, `{"Pattern":"`+pattern+`"}`)
			late := time.Since(deadline)
			ended := svc.waitEnded(t, deadline)
			t.Logf("ActContext returned %v after its deadline; the service's request context ended %v after it",
				late.Round(time.Millisecond), ended.Round(time.Millisecond))
			if !errors.Is(r.err, context.DeadlineExceeded) {
				t.Errorf("got %v; want context.DeadlineExceeded", r)
			}
			if late >= time.Second {
				t.Errorf("ActContext returned %v after its deadline; want within a few hundred ms", late.Round(time.Millisecond))
			}
			checkNoAddress(t, r.text(), svc.port)
		})
	}

	t.Run("act/deadline while another caller resolves", func(t *testing.T) {
		t.Parallel()
		// The Client's server answers /resolve after 2 s, and holds
		// messages until their callers leave.
		resolving := make(chan struct{}, 8)
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/resolve" {
				resolving <- struct{}{}
			}
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"error": "nano: no service matches the pattern"})
		}))
		t.Cleanup(slow.Close)
		_, port, _ := net.SplitHostPort(slow.Listener.Addr().String())
		c := newClient(t, nano.ClientOptions{Server: slow.Listener.Addr().String()})
		msg := []byte(`{"Pattern":"role:slow"}`)

		firstCtx, cancelFirst := context.WithCancel(context.Background())
		first := make(chan error, 1)
		go func() {
			_, err := c.ActContext(firstCtx, msg, "role:slow")
			first <- err
		}()
		defer func() {
			cancelFirst()
			select {
			case <-first:
			case <-time.After(5 * time.Second):
				t.Error("the first caller had not returned 5 s after its context was cancelled")
			}
		}()
		select {
		case <-resolving:
		case <-time.After(5 * time.Second):
			t.Fatal("the first caller did not ask /resolve")
		}

		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		deadline, _ := ctx.Deadline()
		_, err := c.ActContext(ctx, msg, "role:slow")
		late := time.Since(deadline)
		t.Logf("the second caller returned %v after its deadline: %v", late.Round(time.Millisecond), err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the second caller got %v; want context.DeadlineExceeded", err)
		}
		if late >= time.Second {
			t.Errorf("the second caller returned %v after its deadline; want within a few hundred ms", late.Round(time.Millisecond))
		}
		if err != nil {
			checkNoAddress(t, err.Error(), port)
		}
	})
}

// TestHandlerActErrorsNameNoAddress: a handler that returns the error of
// its own Act call to its caller passes on no address and no socket
// operation, whatever the called peer did.
func TestHandlerActErrorsNameNoAddress(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	peers := []struct {
		name   string
		answer script // nil: nobody listens
	}{
		{"the peer resets after reading", func(c net.Conn, _ int, _ string) bool { resetConn(c); return false }},
		{"the peer closes after reading", func(net.Conn, int, string) bool { return false }},
		{"the peer answers garbage", func(c net.Conn, _ int, _ string) bool {
			io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
			return true
		}},
		{"the peer answers too late", func(net.Conn, int, string) bool { return true }}, // after CallTimeout
		{"nobody listens at the peer", nil},
	}
	handlers := make(map[string]nano.HandlerFunc)
	var self atomic.Pointer[nano.Service]
	for i := range peers {
		peer := fmt.Sprintf("role:peer,case:%d", i)
		handlers[fmt.Sprintf("role:caller,case:%d", i)] = func([]byte) ([]byte, error) {
			return self.Load().Act([]byte(`{"Pattern":"`+peer+`"}`), peer)
		}
	}
	svc, _ := startService(t, addr, handlers, func(o *nano.ServiceOptions) { o.CallTimeout = 300 * time.Millisecond })
	self.Store(svc)
	for i := range peers {
		waitRegistered(t, addr, fmt.Sprintf("role:caller,case:%d", i))
	}
	for i, peer := range peers {
		t.Run(peer.name, func(t *testing.T) {
			t.Parallel()
			peerAddr := deadAddr(t)
			if peer.answer != nil {
				peerAddr = startScripted(t, peer.answer).addr
			}
			_, port, _ := net.SplitHostPort(peerAddr)
			pattern := fmt.Sprintf("role:peer,case:%d", i)
			registerAt(t, addr, pattern, peerAddr)
			waitRegistered(t, addr, pattern)

			status, body := post(t, "http://"+addr+"/", fmt.Sprintf(`{"Pattern":"role:caller,case:%d"}`, i))
			t.Logf("%d %s", status, strings.TrimSpace(body))
			if status < 500 {
				t.Errorf("got %d; want a 5xx", status)
			}
			checkNoAddress(t, errorBody(t, body), port)
		})
	}
}

// TestActKeepsConnectionsToPeers: once warm, Act opens no new connection
// per call to the peer it calls directly.
func TestActKeepsConnectionsToPeers(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:0", Server: addr, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	svc.Handle("role:math,cmd:sum", sum)
	l := &countingListener{Listener: listen(t)}
	go svc.Serve(l)
	t.Cleanup(func() { svc.Shutdown(context.Background()) })
	waitRegistered(t, addr, "role:math,cmd:sum")

	c := newClient(t, nano.ClientOptions{Server: addr})
	for i := range 200 {
		got, err := c.Act([]byte(sumMessage), "role:math,cmd:sum")
		if err != nil || string(got) != sumAnswer {
			t.Fatalf("Act %d: %s, %v", i, got, err)
		}
	}
	if n := l.accepted.Load(); n > 1 {
		t.Fatalf("200 sequential Act calls opened %d connections to the peer; want 1", n)
	}
}
