package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// diffCase is a row of the differential test: the same requests sent
// through http.Transport and through the pool, each to its own instance
// of the same server.
type diffCase struct {
	name   string
	server func(t *testing.T) *server
	run    runner

	// stricter says the pool refuses what http.Transport accepts: the
	// pool's outcome is an error, Transport's an answer.
	stricter bool

	// check, if not nil, checks each outcome further; in a stricter row,
	// only the pool's.
	check func(t *testing.T, o outcome)
}

// runner sends a row's requests through rt to s and reports the outcome.
type runner func(t *testing.T, rt http.RoundTripper, s *server) outcome

// outcome is what a row saw through one transport: the answer to its
// last request, or the error that request ended with, and what the
// server and the dialer counted.
type outcome struct {
	Status        int
	ContentLength int64
	Header        string // the answer's X-Test field
	Body          string
	Err           error
	Elapsed       time.Duration // from the cancellation to the error, in rows that cancel
	Seen          int64         // requests the server read
	Dials         int64         // connections the transport dialled
	Conns         int64         // connections the server accepted
}

// view is the part of an outcome that the two transports must agree on.
type view struct {
	Failed        bool
	Status        int
	ContentLength int64
	Header, Body  string
	Seen, Dials   int64
	Conns         int64
}

// view returns the part of o that the two transports must agree on.
func (o outcome) view() view {
	return view{o.Err != nil, o.Status, o.ContentLength, o.Header, o.Body, o.Seen, o.Dials, o.Conns}
}

func TestDifferential(t *testing.T) {
	for _, tc := range diffCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			std := runRow(t, tc, func(d *dialer) roundTripper {
				return &http.Transport{
					DialContext:            d.dial,
					MaxIdleConnsPerHost:    defaultMaxIdleConnsPerHost,
					IdleConnTimeout:        defaultIdleConnTimeout,
					MaxResponseHeaderBytes: defaultMaxResponseHeaderBytes,
					DisableCompression:     true,
				}
			})
			pool := runRow(t, tc, func(d *dialer) roundTripper {
				return &Transport{DialContext: d.dial}
			})
			t.Logf("Transport: %+v", std)
			t.Logf("pool:      %+v", pool)
			if tc.stricter {
				if std.Err != nil || pool.Err == nil {
					t.Fatalf("want an answer from Transport and an error from the pool")
				}
				if tc.check != nil {
					tc.check(t, pool)
				}
				return
			}
			if std.view() != pool.view() {
				t.Fatalf("outcomes differ:\nTransport %+v\npool      %+v", std.view(), pool.view())
			}
			if tc.check != nil {
				tc.check(t, std)
				tc.check(t, pool)
			}
		})
	}
}

// roundTripper is what the tests need of a transport, the pool's or
// http.Transport.
type roundTripper interface {
	http.RoundTripper
	CloseIdleConnections()
}

// runRow runs tc through a new transport from newRT, on a new server.
func runRow(t *testing.T, tc diffCase, newRT func(*dialer) roundTripper) outcome {
	d := &dialer{}
	rt := newRT(d)
	t.Cleanup(rt.CloseIdleConnections)
	s := tc.server(t)
	o := tc.run(t, rt, s)
	o.Seen, o.Dials, o.Conns = s.seen.Load(), d.n.Load(), s.conns.Load()
	return o
}

// dialer dials TCP connections and counts them.
type dialer struct{ n atomic.Int64 }

// dial dials addr on network and counts the dial.
func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// diffCases returns the rows of the differential test.
func diffCases() []diffCase {
	return []diffCase{
		{
			name: "200 with Content-Length",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Test", "a")
				io.WriteString(w, "hello")
			}),
			run: get,
		},
		{
			name: "chunked answer",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "hel")
				w.(http.Flusher).Flush()
				io.WriteString(w, "lo")
			}),
			run:   get,
			check: want(func(o outcome) bool { return o.ContentLength == -1 && o.Body == "hello" }),
		},
		{
			name: "answer with Connection: close, then a second request",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "close")
				io.WriteString(w, "bye")
			}),
			run:   repeat(2, get),
			check: wantCounts(2, 2),
		},
		{
			name:   "204 without body",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }),
			run:    repeat(2, get),
			check:  wantCounts(2, 1),
		},
		{
			name:   "304 without body",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotModified) }),
			run:    repeat(2, get),
			check:  wantCounts(2, 1),
		},
		{
			name:   "HEAD",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }),
			run:    repeat(2, method(http.MethodHead)),
			check: want(func(o outcome) bool {
				return o.Body == "" && o.ContentLength == 5 && o.Dials == 1
			}),
		},
		{
			name:   "100 requests on one kept connection",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }),
			run:    repeat(100, get),
			check:  wantCounts(100, 1),
		},
		{
			name: "kept connection closed by the server while idle",
			server: rawServer(func(c net.Conn, _ *bufio.Reader, _ *http.Request, n int64) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return n > 1
			}),
			run:   repeat(2, pause(50*time.Millisecond, get)),
			check: wantCounts(2, 2),
		},
		{
			name:   "answer of HTTP/1.0",
			server: rawServer(reply("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")),
			run:    repeat(2, get),
			check:  wantCounts(2, 2),
		},
		{
			name: "answer framed by the end of the connection",
			server: rawServer(func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int64) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
				return false
			}),
			run:   repeat(2, get),
			check: wantCounts(2, 2),
		},
		{
			name: "body closed before its end",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) {
				w.Write(make([]byte, 1<<20))
			}),
			run:   repeat(2, closeEarly),
			check: wantCounts(2, 2),
		},
		{
			name:   "read after Close",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }),
			run:    readAfterClose,
			check:  wantError(nil),
		},
		{
			name:   "informational answers skipped",
			server: rawServer(reply(informational(3) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")),
			run:    repeat(2, get),
			check:  wantCounts(2, 1),
		},
		{
			name:     "six informational answers (stricter than Transport)",
			server:   rawServer(reply(informational(6) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")),
			run:      get,
			stricter: true,
			check:    wantError(nil),
		},
		{
			name:   "invalid field name in the answer",
			server: rawServer(reply("HTTP/1.1 200 OK\r\nX(A): 1\r\nContent-Length: 0\r\n\r\n")),
			run:    get,
			check:  wantError(nil),
		},
		{
			name:     "field name with a space in the answer (stricter than Transport)",
			server:   rawServer(reply("HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n")),
			run:      get,
			stricter: true,
			check:    wantError(nil),
		},
		{
			name:   "control byte in a field value of the answer",
			server: rawServer(reply("HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n")),
			run:    get,
			check:  wantError(nil),
		},
		{
			name:   "NUL in a field value of the answer",
			server: rawServer(reply("HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n")),
			run:    get,
			check:  wantError(nil),
		},
		{
			name:   "conflicting Content-Length in the answer",
			server: rawServer(reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")),
			run:    get,
			check:  wantError(nil),
		},
		{
			name:   "answer head over 1 MiB",
			server: rawServer(endlessHead),
			run:    get,
			check: want(func(o outcome) bool {
				return o.Err != nil && strings.Contains(o.Err.Error(), "1048576")
			}),
		},
		{
			name:     "101 without Upgrade (stricter than Transport)",
			server:   rawServer(reply("HTTP/1.1 101 Switching Protocols\r\n\r\n")),
			run:      get,
			stricter: true,
			check:    wantError(nil),
		},
		{
			name:     "status 099 (stricter than Transport)",
			server:   rawServer(reply("HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n")),
			run:      get,
			stricter: true,
			check:    wantError(nil),
		},
		{
			name: "bytes after the body",
			server: rawServer(func(c net.Conn, _ *bufio.Reader, _ *http.Request, n int64) bool {
				if n == 1 {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+
						"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbogus")
					return true
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
				return true
			}),
			// The pause lets http.Transport see the stray bytes before the
			// second request, or it may take them for its answer.
			run:   repeat(2, pause(50*time.Millisecond, get)),
			check: want(func(o outcome) bool { return o.Body == "fresh" && o.Dials == 2 }),
		},
		{
			name: "bytes sent on the idle connection",
			server: rawServer(func(c net.Conn, _ *bufio.Reader, _ *http.Request, n int64) bool {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if n == 1 {
					time.Sleep(20 * time.Millisecond)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbogus")
				}
				return true
			}),
			run:   repeat(2, pause(100*time.Millisecond, get)),
			check: want(func(o outcome) bool { return o.Body == "ok" && o.Dials == 2 }),
		},
		{
			name: "reset after reading the request",
			server: rawServer(func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int64) bool {
				reset(c)
				return false
			}),
			run:   post("message"),
			check: want(func(o outcome) bool { return o.Err != nil && o.Seen == 1 }),
		},
		{
			name:   "reset on a kept connection after reading a POST",
			server: rawServer(resetSecond),
			run:    repeat(2, post("message")),
			check:  want(func(o outcome) bool { return o.Err != nil && o.Seen == 2 && o.Dials == 1 }),
		},
		{
			name:     "reset on a kept connection after reading a GET (Transport sends it again, the pool does not)",
			server:   rawServer(resetSecond),
			run:      repeat(2, get),
			stricter: true,
			check:    want(func(o outcome) bool { return o.Err != nil && o.Seen == 2 && o.Dials == 1 }),
		},
		{
			name:   "invalid field name in the request",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) {}),
			run:    withHeader("Bad Name", "1"),
			check:  wantNoDial(`invalid header field name "Bad Name"`),
		},
		{
			name:   "invalid field value in the request",
			server: httpServer(func(w http.ResponseWriter, r *http.Request) {}),
			run:    withHeader("X-Smuggle", "a\r\nX-Injected: 1"),
			check:  wantNoDial(`invalid header field value for "X-Smuggle"`),
		},
		{
			name:   "request framing: GET without body",
			server: httpServer(echo),
			run:    get,
		},
		{
			name:   "request framing: POST without body",
			server: httpServer(echo),
			run:    method(http.MethodPost),
		},
		{
			name:   "request framing: DELETE without body",
			server: httpServer(echo),
			run:    method(http.MethodDelete),
		},
		{
			name:   "request framing: POST with Content-Length",
			server: httpServer(echo),
			run:    post("message"),
		},
		{
			name:   "request framing: POST of unknown length",
			server: httpServer(echo),
			run:    postReader(-1, 100<<10),
		},
		{
			name:   "request framing: POST with ContentLength 0 and a body",
			server: httpServer(echo),
			run:    postReader(0, 10),
		},
		{
			name:   "request asking to close the connection",
			server: httpServer(echo),
			run:    repeat(2, closing),
			check:  wantCounts(2, 2),
		},
		{
			name:   "context cancelled while waiting for the answer",
			server: httpServer(hold),
			run:    cancelWaiting,
			check:  wantCancelled(context.Canceled),
		},
		{
			name:   "context cancelled while writing the body",
			server: stalling,
			run:    cancelWriting,
			check:  wantCancelled(context.Canceled),
		},
		{
			name:   "context deadline while waiting for the answer",
			server: httpServer(hold),
			run:    deadlineWaiting,
			check:  wantCancelled(context.DeadlineExceeded),
		},
		{
			name:   "context cancelled while reading the body",
			server: httpServer(holdBody),
			run:    cancelReading,
			check:  wantCancelled(context.Canceled),
		},
		{
			name:   "connection refused",
			server: refusing,
			run:    get,
			check: want(func(o outcome) bool {
				var op *net.OpError
				return errors.As(o.Err, &op) && op.Op == "dial" && o.Seen == 0
			}),
		},
	}
}

// httpServer returns a server func for newHTTPServer with h.
func httpServer(h http.HandlerFunc) func(*testing.T) *server {
	return func(t *testing.T) *server { return newHTTPServer(t, h) }
}

// rawServer returns a server func for newRawServer with answer.
func rawServer(answer answerFunc) func(*testing.T) *server {
	return func(t *testing.T) *server { return newRawServer(t, answer) }
}

// stalling returns a server that reads the heads of requests but not
// their bodies, and answers nothing until the test ends.
func stalling(t *testing.T) *server {
	release := make(chan struct{})
	s := newHTTPServer(t, func(http.ResponseWriter, *http.Request) { <-release })
	t.Cleanup(func() { close(release) }) // before the server's own cleanup, which waits for handlers
	return s
}

// refusing returns a server whose port refuses connections.
func refusing(t *testing.T) *server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return &server{URL: "http://" + ln.Addr().String()}
}

// send sends a request made by the arguments, edited by edit if not nil,
// through rt and reads its answer. The request has a User-Agent, as
// http.Transport adds one where the pool does not.
func send(ctx context.Context, rt http.RoundTripper, method, url string, body io.Reader, edit func(*http.Request)) outcome {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return outcome{Err: err}
	}
	req.Header.Set("User-Agent", "differential")
	req.Header["X-Multi"] = []string{"a", " b\t"}
	if edit != nil {
		edit(req)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return outcome{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return outcome{
		Status:        resp.StatusCode,
		ContentLength: resp.ContentLength,
		Header:        resp.Header.Get("X-Test"),
		Body:          string(b),
		Err:           err,
	}
}

// get sends a GET.
func get(t *testing.T, rt http.RoundTripper, s *server) outcome {
	return send(t.Context(), rt, http.MethodGet, s.URL, nil, nil)
}

// method returns a runner that sends a request of method m, without a
// body.
func method(m string) runner {
	return func(t *testing.T, rt http.RoundTripper, s *server) outcome {
		return send(t.Context(), rt, m, s.URL, nil, nil)
	}
}

// post returns a runner that posts body, of known length.
func post(body string) runner {
	return func(t *testing.T, rt http.RoundTripper, s *server) outcome {
		return send(t.Context(), rt, http.MethodPost, s.URL, strings.NewReader(body), nil)
	}
}

// postReader posts n bytes from a reader whose length the request gives
// as contentLength.
func postReader(contentLength int64, n int) runner {
	return func(t *testing.T, rt http.RoundTripper, s *server) outcome {
		body := io.LimitReader(repeatReader('x'), int64(n))
		return send(t.Context(), rt, http.MethodPost, s.URL, body, func(r *http.Request) {
			r.ContentLength = contentLength
		})
	}
}

// repeatReader reads b forever.
type repeatReader byte

// Read fills p with r.
func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// withHeader returns a runner that sends a GET with the header field
// name: value, as given.
func withHeader(name, value string) runner {
	return func(t *testing.T, rt http.RoundTripper, s *server) outcome {
		return send(t.Context(), rt, http.MethodGet, s.URL, nil, func(r *http.Request) {
			r.Header[name] = []string{value}
		})
	}
}

// closing sends a GET that asks to close the connection.
func closing(t *testing.T, rt http.RoundTripper, s *server) outcome {
	return send(t.Context(), rt, http.MethodGet, s.URL, nil, func(r *http.Request) { r.Close = true })
}

// repeat runs run n times and reports the last outcome, failing the test
// if an earlier one failed.
func repeat(n int, run runner) runner {
	return func(t *testing.T, rt http.RoundTripper, s *server) outcome {
		for range n - 1 {
			if o := run(t, rt, s); o.Err != nil {
				t.Fatalf("%T: %v", rt, o.Err)
			}
		}
		return run(t, rt, s)
	}
}

// pause runs run after d.
func pause(d time.Duration, run runner) runner {
	return func(t *testing.T, rt http.RoundTripper, s *server) outcome {
		time.Sleep(d)
		return run(t, rt, s)
	}
}

// closeEarly reads a little of the body and closes it.
func closeEarly(t *testing.T, rt http.RoundTripper, s *server) outcome {
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return outcome{Err: err}
	}
	b := make([]byte, 10)
	_, err = io.ReadFull(resp.Body, b)
	resp.Body.Close()
	return outcome{Status: resp.StatusCode, ContentLength: resp.ContentLength, Err: err}
}

// readAfterClose reports the error of a Read after Close.
func readAfterClose(t *testing.T, rt http.RoundTripper, s *server) outcome {
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, err = resp.Body.Read(make([]byte, 1))
	return outcome{Status: resp.StatusCode, ContentLength: resp.ContentLength, Err: err}
}

// cancelWaiting cancels a request held by the server, then sends another.
func cancelWaiting(t *testing.T, rt http.RoundTripper, s *server) outcome {
	ctx, cancel := context.WithCancel(t.Context())
	cancelled := cancelWhenSeen(s, 1, cancel)
	o := send(ctx, rt, http.MethodGet, s.URL+"/hold", nil, nil)
	o.Elapsed = time.Since(<-cancelled)
	if next := send(t.Context(), rt, http.MethodGet, s.URL, nil, nil); next.Err != nil {
		t.Fatalf("%T: request after the cancelled one: %v", rt, next.Err)
	}
	return o
}

// cancelWriting cancels a request while its body is written to a server
// that does not read it, as it would be blocked once the socket buffers
// are full.
func cancelWriting(t *testing.T, rt http.RoundTripper, s *server) outcome {
	ctx, cancel := context.WithCancel(t.Context())
	cancelled := cancelWhenSeen(s, 1, cancel)
	const size = 1 << 30 // far more than the socket buffers take
	body := io.LimitReader(repeatReader('x'), size)
	o := send(ctx, rt, http.MethodPost, s.URL, body, func(r *http.Request) { r.ContentLength = size })
	o.Elapsed = time.Since(<-cancelled)
	return o
}

// deadlineWaiting sends a request held by the server with a short
// deadline.
func deadlineWaiting(t *testing.T, rt http.RoundTripper, s *server) outcome {
	const d = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	start := time.Now()
	o := send(ctx, rt, http.MethodGet, s.URL+"/hold", nil, nil)
	o.Elapsed = time.Since(start) - d
	return o
}

// cancelReading cancels a request while its body is read.
func cancelReading(t *testing.T, rt http.RoundTripper, s *server) outcome {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%T: %v", rt, err)
	}
	defer resp.Body.Close()
	b := make([]byte, len("part"))
	if _, err := io.ReadFull(resp.Body, b); err != nil {
		t.Fatalf("%T: %v", rt, err)
	}
	cancelled := time.Now()
	cancel()
	_, err = io.ReadAll(resp.Body)
	return outcome{Status: resp.StatusCode, ContentLength: resp.ContentLength, Err: err, Elapsed: time.Since(cancelled)}
}

// cancelWhenSeen calls cancel once s has seen n requests, and sends the
// time it did.
func cancelWhenSeen(s *server, n int64, cancel func()) <-chan time.Time {
	done := make(chan time.Time, 1)
	go func() {
		for s.seen.Load() < n {
			time.Sleep(5 * time.Millisecond)
		}
		done <- time.Now()
		cancel()
	}()
	return done
}

// echo answers with how the request was framed and a digest of its body
// and fields.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "length=%d te=%q content-length=%q connection=%q user-agent=%q x-multi=%q body=%d/%08x",
		r.ContentLength, r.TransferEncoding, r.Header.Values("Content-Length"), r.Header.Values("Connection"),
		r.Header.Values("User-Agent"), r.Header.Values("X-Multi"), len(b), crc32.ChecksumIEEE(b))
}

// hold holds requests for /hold until they are cancelled, and answers the
// others.
func hold(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/hold" {
		holdUntilGone(r)
		return
	}
	io.WriteString(w, "hello")
}

// holdBody sends a part of the body, then holds the rest back until the
// request is cancelled.
func holdBody(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "100")
	io.WriteString(w, "part")
	w.(http.Flusher).Flush()
	holdUntilGone(r)
}

// holdUntilGone waits until the client leaves, five seconds at most.
func holdUntilGone(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(5 * time.Second):
	}
}

// resetSecond answers the first request and resets the connection after
// reading the second.
func resetSecond(c net.Conn, _ *bufio.Reader, _ *http.Request, n int64) bool {
	if n == 2 {
		reset(c)
		return false
	}
	_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	return err == nil
}

// endlessHead answers with header fields that do not end: far more than
// any client should take.
func endlessHead(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int64) bool {
	w := bufio.NewWriterSize(c, 64<<10)
	w.WriteString("HTTP/1.1 200 OK\r\n")
	line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
	for range 64 << 10 {
		if _, err := w.WriteString(line); err != nil {
			return false
		}
	}
	w.WriteString("Content-Length: 0\r\n\r\n")
	w.Flush()
	return false
}

// informational returns n informational answers.
func informational(n int) string {
	heads := []string{
		"HTTP/1.1 100 Continue\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
		"HTTP/1.1 102 Processing\r\n\r\n",
	}
	var b strings.Builder
	for i := range n {
		b.WriteString(heads[i%len(heads)])
	}
	return b.String()
}

// want returns a check that ok holds.
func want(ok func(outcome) bool) func(*testing.T, outcome) {
	return func(t *testing.T, o outcome) {
		t.Helper()
		if !ok(o) {
			t.Errorf("unexpected outcome %+v", o)
		}
	}
}

// wantCounts returns a check that the last request succeeded, the
// server saw seen requests, and the transport dialled dials connections,
// all of which the server accepted.
func wantCounts(seen, dials int64) func(*testing.T, outcome) {
	return want(func(o outcome) bool {
		return o.Err == nil && o.Seen == seen && o.Dials == dials && o.Conns == dials
	})
}

// wantError returns a check that the outcome is an error that
// errors.Is target, or any error if target is nil.
func wantError(target error) func(*testing.T, outcome) {
	return want(func(o outcome) bool {
		return o.Err != nil && (target == nil || errors.Is(o.Err, target))
	})
}

// wantNoDial returns a check that the outcome is an error saying text,
// with nothing dialled.
func wantNoDial(text string) func(*testing.T, outcome) {
	return want(func(o outcome) bool {
		return o.Err != nil && strings.Contains(o.Err.Error(), text) && o.Dials == 0
	})
}

// wantCancelled returns a check that the outcome is an error that
// errors.Is target, which came soon after the context ended, and that
// the cancelled connection was not used again.
func wantCancelled(target error) func(*testing.T, outcome) {
	return want(func(o outcome) bool {
		return errors.Is(o.Err, target) && o.Elapsed < 2*time.Second && o.Dials == o.Seen
	})
}
