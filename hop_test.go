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
	"strings"
	"sync"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Helpers for the tests of the proxy hop: services that misbehave on
// purpose, and the three ways a message reaches a service.

// scriptedService is a service written by hand on a loopback listener. It
// reads each request with http.ReadRequest, records its body, and lets
// its script write whatever bytes it likes on the connection.
type scriptedService struct {
	addr, port string

	mu     sync.Mutex
	bodies []string          // guarded by mu: the requests read, in order
	conns  map[net.Conn]bool // guarded by mu: the open connections
	closed bool              // guarded by mu: the test ended
}

// script answers the n-th request the service read, whose body is body.
// It reports whether to read another request from the connection; the
// connection is closed when it does not.
type script func(c net.Conn, n int, body string) (keep bool)

// startScripted serves script on a loopback port until the test ends.
func startScripted(t *testing.T, answer script) *scriptedService {
	t.Helper()
	l := listen(t)
	s := &scriptedService{addr: l.Addr().String(), conns: make(map[net.Conn]bool)}
	_, s.port, _ = net.SplitHostPort(s.addr)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.closed {
				c.Close()
			} else {
				s.conns[c] = true
				wg.Go(func() { s.serve(c, answer) })
			}
			s.mu.Unlock()
		}
	})
	return s
}

func (s *scriptedService) serve(c net.Conn, answer script) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, string(body))
		n := len(s.bodies)
		s.mu.Unlock()
		if !answer(c, n, string(body)) {
			return
		}
	}
}

// delivered counts the requests read whose body holds word.
func (s *scriptedService) delivered(word string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, b := range s.bodies {
		if strings.Contains(b, word) {
			n++
		}
	}
	return n
}

// nanoAnswer is a 200 answer carrying payload as a service of this library
// writes it for Act: the handler's bytes as the body, the pattern in a
// Nano-Service field.
func nanoAnswer(payload string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nNano-Service: role:scripted\r\nContent-Length: %d\r\n\r\n%s", len(payload), payload)
}

// answerWith is a script answering every request with payload.
func answerWith(payload string) script {
	return func(c net.Conn, _ int, _ string) bool {
		_, err := io.WriteString(c, nanoAnswer(payload))
		return err == nil
	}
}

// resetConn closes c with a reset instead of a FIN.
func resetConn(c net.Conn) {
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// registerAt registers the instance at addr for pattern at the nano server
// at serverAddr, as any HTTP service can.
func registerAt(t *testing.T, serverAddr, pattern, addr string) {
	t.Helper()
	reg := fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":%q}`, pattern, addr)
	if status, body := post(t, "http://"+serverAddr+"/register", reg); status != http.StatusOK {
		t.Fatalf("register %s at %s: %d %s", pattern, addr, status, body)
	}
}

// waitInstances waits until the server at serverAddr resolves pattern to
// n instances.
func waitInstances(t *testing.T, serverAddr, pattern string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s has %d instances", pattern, n), func() bool {
		return resolveCount(t, serverAddr, pattern) == n
	})
}

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// heldService is a net/http service whose handler holds every message
// until the message's request context ends, and records when it did.
type heldService struct {
	addr, port string
	entered    chan struct{}  // a message reached the handler
	ended      chan time.Time // a message's request context ended
}

func startHeld(t *testing.T) *heldService {
	t.Helper()
	s := &heldService{entered: make(chan struct{}, 16), ended: make(chan time.Time, 16)}
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // read to its end: net/http watches the connection from then on
		select {
		case s.entered <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
			select {
			case s.ended <- time.Now():
			default:
			}
		case <-release:
		}
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(release) }) // before ts.Close, which waits for the handlers
	s.addr = ts.Listener.Addr().String()
	_, s.port, _ = net.SplitHostPort(s.addr)
	return s
}

// waitEntered waits until a message reached the handler.
func (s *heldService) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-s.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the message did not reach the service within 5 s")
	}
}

// waitEnded waits for the end of a message's request context and returns
// how long after since it came; it fails the test when that is a second or
// more.
func (s *heldService) waitEnded(t *testing.T, since time.Time) time.Duration {
	t.Helper()
	select {
	case at := <-s.ended:
		d := at.Sub(since)
		if d >= time.Second {
			t.Errorf("the service's request context ended %v after the caller left; want under 1 s", d.Round(time.Millisecond))
		}
		return d
	case <-time.After(3 * time.Second):
		t.Fatal("the service's request context had not ended 3 s after the caller left: the upstream call went on")
		return 0
	}
}

// callPath is one way for a message to reach a service.
type callPath struct {
	name    string
	act     bool          // sent with a Client's ActContext, else posted to the server
	peerTTL time.Duration // the Client's PeerTTL: 0 calls resolved peers directly, -1 goes through the server
}

var callPaths = []callPath{
	{name: "server"},
	{name: "act direct", act: true},
	{name: "act through server", act: true, peerTTL: -1},
}

// actPaths are the callPaths through a Client.
var actPaths = callPaths[1:]

// caller sends messages along a callPath, keeping its connections from one
// call to the next.
type caller struct {
	callPath
	server string
	http   *http.Client // the server path
	client *nano.Client // the Act paths
}

// open returns a caller of the nano server at serverAddr along p.
func (p callPath) open(t *testing.T, serverAddr string) *caller {
	t.Helper()
	c := &caller{callPath: p, server: serverAddr}
	if p.act {
		c.client = newClient(t, nano.ClientOptions{Server: serverAddr, PeerTTL: p.peerTTL, Timeout: 5 * time.Second})
		return c
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c.http = &http.Client{Transport: tr, Timeout: 5 * time.Second}
	return c
}

// callResult is what came back from a call.
type callResult struct {
	act     bool   // the call went through a Client
	status  int    // the status of the server's answer (server path)
	body    string // its body, or what Act returned
	err     error  // Act's error, or the failure to read the server's answer
	elapsed time.Duration
}

// text is what the caller reads of the outcome.
func (r callResult) text() string {
	if r.err != nil {
		return r.err.Error()
	}
	return r.body
}

func (r callResult) String() string {
	if r.err != nil {
		return fmt.Sprintf("error %q", r.err)
	}
	if !r.act {
		return fmt.Sprintf("%d %q", r.status, r.body)
	}
	return fmt.Sprintf("%q", r.body)
}

// call sends msg for pattern. A call that has not returned after
// callLimit is reported as failed and left behind: it ends when the test's
// services close their connections.
func (c *caller) call(ctx context.Context, pattern, msg string) callResult {
	start := time.Now()
	done := make(chan callResult, 1)
	go func() {
		r := callResult{act: c.act}
		if c.act {
			b, err := c.client.ActContext(ctx, []byte(msg), pattern)
			r.body, r.err = string(b), err
		} else {
			r.status, r.body, r.err = c.post(ctx, msg)
		}
		done <- r
	}()
	var r callResult
	select {
	case r = <-done:
	case <-time.After(callLimit):
		r = callResult{act: c.act, err: fmt.Errorf("no answer within %v", callLimit)}
	}
	r.elapsed = time.Since(start)
	return r
}

// callLimit bounds a call: longer than the 5 s the callers allow
// themselves, and than any timeout the servers of these tests are given.
const callLimit = 8 * time.Second

func (c *caller) post(ctx context.Context, msg string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.server+"/", strings.NewReader(msg))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json") // error answers as JSON
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// wantOK fails the test unless the call was answered with payload.
func wantOK(t *testing.T, r callResult, payload string) {
	t.Helper()
	if r.err != nil || r.body != payload || !r.act && r.status != http.StatusOK {
		t.Fatalf("got %v; want %q", r, payload)
	}
}

// wantUnavailable fails the test unless the call failed as a call to a
// service that cannot be reached or answered badly does: 502 with a JSON
// error body from the server, ErrServiceUnavailable from Act; neither
// naming an address.
func wantUnavailable(t *testing.T, r callResult, ports ...string) {
	t.Helper()
	if !r.act {
		if r.err != nil || r.status != http.StatusBadGateway {
			t.Fatalf("got %v; want 502", r)
		}
		errorBody(t, r.body)
	} else if !errors.Is(r.err, nano.ErrServiceUnavailable) {
		t.Fatalf("got %v; want ErrServiceUnavailable", r)
	}
	checkNoAddress(t, r.text(), ports...)
}

// checkNoAddress fails the test if an error text a caller sees names a
// network address, a port of ports, or the socket operation that failed.
func checkNoAddress(t *testing.T, text string, ports ...string) {
	t.Helper()
	for _, s := range append([]string{"127.0.0.1", "[::1]", "tcp "}, ports...) {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("the error %q names %q", text, s)
		}
	}
}
