package pool

import (
	"io"
	"net/http"
	"sync"
	"testing"
	"time"
)

// hello answers "hello".
func hello(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }

// openAtOnce sends n requests to s through tr, all answered before any
// body is read, so that each has its own connection, and returns the
// answers.
func openAtOnce(t *testing.T, tr *Transport, s *server, n int) []*http.Response {
	t.Helper()
	resps := make([]*http.Response, n)
	for i := range resps {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resps[i] = resp
	}
	return resps
}

// drain reads resp's body to its end and closes it.
func drain(t *testing.T, resp *http.Response) {
	t.Helper()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// idleCount returns how many idle connections tr keeps.
func idleCount(tr *Transport) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, conns := range tr.idle {
		n += len(conns)
	}
	return n
}

func TestMostRecentlyUsedFirst(t *testing.T) {
	t.Parallel()
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.RemoteAddr) })
	tr := &Transport{}
	resps := openAtOnce(t, tr, s, 3)
	var last string
	for _, resp := range resps {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		last = string(b)
	}
	for range 2 {
		resp := openAtOnce(t, tr, s, 1)[0]
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if string(b) != last {
			t.Fatalf("request went out from %s, want %s, the last connection back", b, last)
		}
	}
}

func TestIdleConnectionsClosedAfterTimeout(t *testing.T) {
	t.Parallel()
	s := newHTTPServer(t, hello)
	tr := &Transport{IdleConnTimeout: 50 * time.Millisecond}
	resps := openAtOnce(t, tr, s, 3)
	drain(t, resps[0])
	time.Sleep(30 * time.Millisecond) // the others expire one sweep later
	drain(t, resps[1])
	drain(t, resps[2])
	if !waitFor(func() bool { return s.closed.Load() == 3 }) {
		t.Fatalf("server saw %d of 3 connections closed", s.closed.Load())
	}
	if n := idleCount(tr); n != 0 {
		t.Fatalf("%d idle connections left", n)
	}
	resps = openAtOnce(t, tr, s, 1)
	drain(t, resps[0])
	if n := s.conns.Load(); n != 4 {
		t.Fatalf("server accepted %d connections, want 4", n)
	}
}

func TestIdleConnectionsBoundedPerHost(t *testing.T) {
	t.Parallel()
	const requests, bound = 8, 2
	var arrived sync.WaitGroup
	arrived.Add(requests)
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		arrived.Wait() // every request has its own connection
		io.WriteString(w, "hello")
	})
	tr := &Transport{MaxIdleConnsPerHost: bound}
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL, nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			drain(t, resp)
		})
	}
	wg.Wait()
	if n := idleCount(tr); n != bound {
		t.Fatalf("%d idle connections, want %d", n, bound)
	}
	if !waitFor(func() bool { return s.closed.Load() == requests-bound }) {
		t.Fatalf("server saw %d connections closed, want %d", s.closed.Load(), requests-bound)
	}
	if open := s.conns.Load() - s.closed.Load(); open != bound {
		t.Fatalf("%d connections open, want %d", open, bound)
	}
}

func TestNoIdleConnectionsKept(t *testing.T) {
	t.Parallel()
	s := newHTTPServer(t, hello)
	tr := &Transport{MaxIdleConnsPerHost: -1}
	for range 3 {
		drain(t, openAtOnce(t, tr, s, 1)[0])
	}
	if n := s.conns.Load(); n != 3 {
		t.Fatalf("server accepted %d connections, want 3", n)
	}
	if !waitFor(func() bool { return s.closed.Load() == 3 }) {
		t.Fatalf("server saw %d of 3 connections closed", s.closed.Load())
	}
}

func TestCloseIdleConnections(t *testing.T) {
	t.Parallel()
	s := newHTTPServer(t, hello)
	tr := &Transport{}
	resps := openAtOnce(t, tr, s, 3)
	drain(t, resps[0])
	drain(t, resps[1])
	tr.CloseIdleConnections()
	if !waitFor(func() bool { return s.closed.Load() == 2 }) {
		t.Fatalf("server saw %d of 2 idle connections closed", s.closed.Load())
	}
	drain(t, resps[2]) // in use during CloseIdleConnections: kept
	if n := idleCount(tr); n != 1 {
		t.Fatalf("%d idle connections, want 1", n)
	}
	drain(t, openAtOnce(t, tr, s, 1)[0])
	if n := s.conns.Load(); n != 3 {
		t.Fatalf("server accepted %d connections, want 3", n)
	}
}
