package nano_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Tests of the request a Handler receives: its body, pattern and header,
// and a context that ends when the caller leaves.

// startHandlers serves context handlers on a loopback port until the test
// ends, registered at the server at serverAddr, and returns the service
// and its address once the server routes each pattern to it.
func startHandlers(t *testing.T, serverAddr string, handlers map[string]nano.Handler, configure ...func(*nano.ServiceOptions)) (*nano.Service, string) {
	t.Helper()
	svc, addr := serveService(t, serverAddr, configure, func(svc *nano.Service) error {
		for p, h := range handlers {
			if err := svc.HandleContext(p, h); err != nil {
				return err
			}
		}
		return nil
	})
	waitRegistered(t, serverAddr, slices.Sorted(maps.Keys(handlers))...)
	return svc, addr
}

// seenRequest is what echoRequest saw of a request.
type seenRequest struct {
	Body    string
	Pattern string
	Probe   []string // the X-Probe fields
}

// echoRequest answers with what it received.
func echoRequest(_ context.Context, req *nano.Request) ([]byte, error) {
	return json.Marshal(seenRequest{Body: string(req.Body), Pattern: req.Pattern, Probe: req.Header.Values("X-Probe")})
}

// TestHandleContextRequest: a Handler receives the message's bytes as they
// were sent, the pattern it was registered with (not the message's longer
// one), and the header of the HTTP request; handlers set with Handle work
// beside it on the same service.
func TestHandleContextRequest(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	svc, svcAddr := startHandlers(t, addr, map[string]nano.Handler{"role:req,cmd:echo": echoRequest})
	if err := svc.Handle("role:req", func([]byte) ([]byte, error) { return []byte(`{"Handler":"plain"}`), nil }); err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, addr, "role:req")

	// Spaces around the fields: the message keeps them, the pattern does not.
	const msg = `{ "Pattern": "role:req, cmd:echo ,extra:1", "N": 7 }`
	const registered = "role:req,cmd:echo"
	probe := http.Header{"X-Probe": {"one", "two"}}
	raw := func(target string) func(t *testing.T) string {
		return func(t *testing.T) string {
			status, body := do(t, http.MethodPost, "http://"+target+"/", msg, probe)
			if status != http.StatusOK {
				t.Fatalf("%d %s", status, body)
			}
			return body
		}
	}
	act := func(path callPath) func(t *testing.T) string {
		return func(t *testing.T) string {
			c := newClient(t, nano.ClientOptions{Server: addr, PeerTTL: path.peerTTL, Timeout: 5 * time.Second})
			out, err := c.ActContext(t.Context(), []byte(msg), registered)
			if err != nil {
				t.Fatal(err)
			}
			return string(out)
		}
	}
	for _, tc := range []struct {
		name  string
		send  func(t *testing.T) string
		probe []string // the X-Probe fields the handler sees
	}{
		{"through the server", raw(addr), probe["X-Probe"]},
		{"to the service", raw(svcAddr), probe["X-Probe"]},
		{"act direct", act(actPaths[0]), nil},
		{"act through the server", act(actPaths[1]), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen seenRequest
			answer := tc.send(t)
			if err := json.Unmarshal([]byte(answer), &seen); err != nil {
				t.Fatalf("answer %q: %v", answer, err)
			}
			if seen.Pattern != registered {
				t.Errorf("req.Pattern = %q; want the registered %q", seen.Pattern, registered)
			}
			if seen.Body != msg {
				t.Errorf("req.Body = %q; want the bytes sent, %q", seen.Body, msg)
			}
			var body struct {
				Pattern string
				N       int
			}
			if err := json.Unmarshal([]byte(seen.Body), &body); err != nil || body.N != 7 || body.Pattern != "role:req, cmd:echo ,extra:1" {
				t.Errorf("req.Body = %q (%v); want the message", seen.Body, err)
			}
			if !slices.Equal(seen.Probe, tc.probe) {
				t.Errorf("req.Header X-Probe = %q; want %q", seen.Probe, tc.probe)
			}
		})
	}
	t.Run("Handle beside HandleContext", func(t *testing.T) {
		status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:req,cmd:other"}`)
		if status != http.StatusOK || body != `{"Handler":"plain"}` {
			t.Fatalf("got %d %s; want the handler set with Handle", status, body)
		}
	})
}

// heldHandler is a Handler that holds every message until its context
// ends, and reports when one arrives and how its context ended. It then
// returns ctx.Err(), linger later.
type heldHandler struct {
	entered chan struct{}
	ended   chan error // ctx.Err() once the context ended
	runs    atomic.Int64
	linger  time.Duration
}

func newHeldHandler() *heldHandler {
	return &heldHandler{entered: make(chan struct{}, 8), ended: make(chan error, 8)}
}

func (h *heldHandler) handle(ctx context.Context, _ *nano.Request) ([]byte, error) {
	h.runs.Add(1)
	h.entered <- struct{}{}
	<-ctx.Done()
	h.ended <- ctx.Err()
	time.Sleep(h.linger)
	return nil, ctx.Err()
}

// waitEntered waits until a message reached the handler.
func (h *heldHandler) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the message did not reach the handler within 5 s")
	}
}

// waitEnded waits until the context of a message ended, and returns its
// error; it fails the test if that takes a second or more.
func (h *heldHandler) waitEnded(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.ended:
		return err
	case <-time.After(time.Second):
		t.Fatal("the handler's context had not ended 1 s after the caller left")
		return nil
	}
}

// TestHandlerContextEndsWhenTheCallerLeaves: the context of a Handler is
// cancelled when its caller hangs up, whether it called through the server
// or the service itself, and when an ActContext caller cancels its
// context; ActContext then returns context.Canceled.
func TestHandlerContextEndsWhenTheCallerLeaves(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 5 * time.Second})
	hangUp := func(to func(svcAddr string) string) func(t *testing.T, h *heldHandler, svcAddr, pattern string) {
		return func(t *testing.T, h *heldHandler, svcAddr, pattern string) {
			conn, err := net.Dial("tcp", to(svcAddr))
			if err != nil {
				t.Fatal(err)
			}
			msg := `{"Pattern":"` + pattern + `"}`
			fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: nano\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
			h.waitEntered(t)
			conn.Close()
		}
	}
	cancel := func(path callPath) func(t *testing.T, h *heldHandler, svcAddr, pattern string) {
		return func(t *testing.T, h *heldHandler, svcAddr, pattern string) {
			c := newClient(t, nano.ClientOptions{Server: addr, PeerTTL: path.peerTTL, Timeout: 5 * time.Second})
			ctx, cancel := context.WithCancel(t.Context())
			result := make(chan error, 1)
			go func() {
				_, err := c.ActContext(ctx, []byte(`{"Pattern":"`+pattern+`"}`), pattern)
				result <- err
			}()
			h.waitEntered(t)
			cancel()
			select {
			case err := <-result:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("ActContext returned %v; want context.Canceled", err)
				}
			case <-time.After(time.Second):
				t.Error("ActContext had not returned 1 s after its context was cancelled")
			}
		}
	}
	for i, tc := range []struct {
		name  string
		leave func(t *testing.T, h *heldHandler, svcAddr, pattern string)
	}{
		{"the caller of the server hangs up", hangUp(func(string) string { return addr })},
		{"the caller of the service hangs up", hangUp(func(svcAddr string) string { return svcAddr })},
		{"act direct is cancelled", cancel(actPaths[0])},
		{"act through the server is cancelled", cancel(actPaths[1])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHeldHandler()
			pattern := fmt.Sprintf("role:leave,case:%d", i)
			_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{pattern: h.handle})
			tc.leave(t, h, svcAddr, pattern)
			if err := h.waitEnded(t); !errors.Is(err, context.Canceled) {
				t.Errorf("the handler's context ended with %v; want context.Canceled", err)
			}
		})
	}
}

// postSlowly sends a message to addr on a connection of its own: the
// request head with the fields of header, then, delay later, the body. It
// returns the status and body of the answer.
func postSlowly(t *testing.T, addr string, header http.Header, body string, delay time.Duration) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	var head strings.Builder
	fmt.Fprintf(&head, "POST / HTTP/1.1\r\nHost: nano\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	for k, vv := range header {
		for _, v := range vv {
			fmt.Fprintf(&head, "%s: %s\r\n", k, v)
		}
	}
	head.WriteString("\r\n")
	if _, err := conn.Write([]byte(head.String())); err != nil {
		t.Fatal(err)
	}
	time.Sleep(delay)
	if _, err := conn.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readAll(resp)
}
