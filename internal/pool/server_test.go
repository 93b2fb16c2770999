package pool

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is a test server on 127.0.0.1 that counts what it sees.
type server struct {
	URL    string       // "http://127.0.0.1:port"
	seen   atomic.Int64 // requests read
	conns  atomic.Int64 // connections accepted
	closed atomic.Int64 // connections closed
}

// newHTTPServer starts an http.Server that serves with h and counts its
// requests and connections. It is closed when the test ends.
func newHTTPServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.seen.Add(1)
		h(w, r)
	}))
	ts.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew:
			s.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.closed.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s
}

// answerFunc writes the answer to req, the nth request the server read,
// on c, whose buffered reader is br. It returns whether the server keeps
// reading requests on c; if not, c is closed.
type answerFunc func(c net.Conn, br *bufio.Reader, req *http.Request, n int64) bool

// newRawServer starts a server that reads requests with http.ReadRequest
// and answers them with answer, byte by byte as the test wants. It is
// closed, with its connections, when the test ends.
func newRawServer(t *testing.T, answer answerFunc) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{URL: "http://" + ln.Addr().String()}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards open
		open = make(map[net.Conn]bool)
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					c.Close()
					s.closed.Add(1)
					mu.Lock()
					delete(open, c)
					mu.Unlock()
				}()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.Copy(io.Discard, req.Body); err != nil {
						return
					}
					if !answer(c, br, req, s.seen.Add(1)) {
						return
					}
				}
			})
		}
	})
	return s
}

// reply returns an answerFunc that writes raw on every request and keeps
// the connection.
func reply(raw string) answerFunc {
	return func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int64) bool {
		_, err := io.WriteString(c, raw)
		return err == nil
	}
}

// reset closes c with a reset instead of an orderly close.
func reset(c net.Conn) {
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// waitFor waits until cond holds, for two seconds at most, and reports
// whether it does.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(2 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}
