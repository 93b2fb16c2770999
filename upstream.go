package nano

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// sender posts a message to a service and returns its answer, whose body
// the caller must close.
type sender interface {
	send(ctx context.Context, addr string, header http.Header, body []byte) (*http.Response, error)
}

// newSender returns the upstream pool, or an adapter for a transport the
// user chose.
func newSender(rt http.RoundTripper) sender {
	if rt == nil {
		return newUpstream()
	}
	return roundTripSender{rt}
}

// closeIdle closes the idle connections of a sender.
func closeIdle(s sender) {
	switch s := s.(type) {
	case *upstream:
		s.closeIdle()
	case roundTripSender:
		if ci, ok := s.rt.(interface{ CloseIdleConnections() }); ok {
			ci.CloseIdleConnections()
		}
	}
}

// withTimeout bounds a call through s by d (none if d is not positive).
// The upstream pool enforces a context's deadline with the connection's
// own, so it needs no timer: it gets a context that only carries the
// deadline. Any other sender gets context.WithTimeout.
func withTimeout(ctx context.Context, d time.Duration, s sender) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return ctx, func() {}
	}
	if _, ok := s.(*upstream); ok {
		return deadlineContext{ctx, time.Now().Add(d)}, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// deadlineContext is its parent with a deadline that nothing but the
// upstream pool enforces.
type deadlineContext struct {
	context.Context
	deadline time.Time
}

func (c deadlineContext) Deadline() (time.Time, bool) { return c.deadline, true }

// roundTripSender sends through an http.RoundTripper.
type roundTripSender struct{ rt http.RoundTripper }

func (s roundTripSender) send(ctx context.Context, addr string, header http.Header, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	copyHeader(req.Header, header)
	if len(req.Header["Content-Type"]) == 0 {
		req.Header["Content-Type"] = jsonContentType
	}
	return s.rt.RoundTrip(req)
}

// upstream posts messages to services over kept-alive HTTP/1.1
// connections. Unlike http.Transport it runs each exchange on the caller's
// goroutine, with no reader and writer goroutine per connection, and
// bounds it with the connection's deadline rather than a timer: a proxy
// hop costs little more than its system calls. A zero upstream is not
// usable; it is safe for concurrent use.
type upstream struct {
	dialer      net.Dialer
	maxIdle     int           // idle connections kept per address
	idleTimeout time.Duration // idle connections older than this are closed

	mu     sync.Mutex           // guards idle and closed
	idle   map[string][]*upConn // by address, the most recently used last
	closed bool                 // set by closeIdle: no connection is kept
}

// upConn is a connection to a service with its buffers.
type upConn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

func newUpstream() *upstream {
	return &upstream{
		dialer:      net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		maxIdle:     256,
		idleTimeout: 90 * time.Second,
		idle:        make(map[string][]*upConn),
	}
}

// postRequest is what http.ReadResponse needs to know of the request.
var postRequest = &http.Request{Method: http.MethodPost}

// send posts body to http://addr/ with the end-to-end header given. A kept
// connection that turns out closed before the service read anything (the
// service closed it while idle) is replaced by a new one, once.
func (u *upstream) send(ctx context.Context, addr string, header http.Header, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		c, reused, err := u.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		resp, err := u.exchange(ctx, c, addr, header, body)
		if err == nil {
			return resp, nil
		}
		c.conn.Close()
		if !unread(err) || len(body) > maxUnread {
			return nil, err
		}
		if !reused || attempt > 0 {
			return nil, &resetError{err}
		}
	}
}

// maxUnread is the largest message whose reset connection is taken to
// mean that the service read none of it: one that fits the socket
// buffers, so that a service reading any of it reads it whole, and a
// service that dies after that closes with a FIN, not a reset.
const maxUnread = 16 << 10

// resetError is a connection reset before the service read the request.
type resetError struct{ err error }

func (e *resetError) Error() string { return e.err.Error() }
func (e *resetError) Unwrap() error { return e.err }

// exchange writes the request on c and reads the answer's head. The body
// of the answer hands c back to the pool once read to its end.
func (u *upstream) exchange(ctx context.Context, c *upConn, addr string, header http.Header, body []byte) (*http.Response, error) {
	deadline, _ := ctx.Deadline()
	c.conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	if err := writeRequest(c.bw, addr, header, body); err != nil {
		stop()
		return nil, err
	}
	resp, err := http.ReadResponse(c.br, postRequest)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 {
		resp, err = http.ReadResponse(c.br, postRequest) // skip 1xx answers
	}
	if err != nil {
		stop()
		return nil, err
	}
	resp.Body = &upBody{ReadCloser: resp.Body, u: u, c: c, addr: addr, reuse: !resp.Close, stop: stop}
	return resp, nil
}

// writeRequest writes a POST of body with the end-to-end fields of header
// (application/json unless header has a Content-Type), and flushes it.
func writeRequest(w *bufio.Writer, addr string, header http.Header, body []byte) error {
	w.WriteString("POST / HTTP/1.1\r\nHost: ")
	w.WriteString(addr)
	w.WriteString("\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n")
	named := connectionNamed(header)
	for k, vv := range header {
		if hopByHop(k, named) {
			continue
		}
		for _, v := range vv {
			writeField(w, k, v)
		}
	}
	if len(header["Content-Type"]) == 0 {
		w.WriteString("Content-Type: application/json\r\n")
	}
	w.WriteString("\r\n")
	w.Write(body)
	return w.Flush()
}

// get returns a kept connection to addr that is still open, or a new one.
func (u *upstream) get(ctx context.Context, addr string) (*upConn, bool, error) {
	now := time.Now()
	for {
		u.mu.Lock()
		conns := u.idle[addr]
		if len(conns) == 0 {
			u.mu.Unlock()
			break
		}
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		u.idle[addr] = conns[:len(conns)-1]
		u.mu.Unlock()
		if now.Sub(c.idleSince) < u.idleTimeout && c.br.Buffered() == 0 && alive(c.conn) {
			return c, true, nil
		}
		c.conn.Close()
	}
	conn, err := u.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &upConn{conn: conn, br: bufio.NewReaderSize(conn, 4<<10), bw: bufio.NewWriterSize(conn, 4<<10)}, false, nil
}

// put keeps c for the next message to addr, unless enough are kept.
func (u *upstream) put(addr string, c *upConn) {
	c.idleSince = time.Now()
	u.mu.Lock()
	if !u.closed && len(u.idle[addr]) < u.maxIdle {
		u.idle[addr] = append(u.idle[addr], c)
		c = nil
	}
	u.mu.Unlock()
	if c != nil {
		c.conn.Close()
	}
}

// closeIdle closes the kept connections; later ones are closed as they
// come back.
func (u *upstream) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle = make(map[string][]*upConn)
	u.closed = true
	u.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.conn.Close()
		}
	}
}

// prune closes the connections idle for longer than the idle timeout.
func (u *upstream) prune(now time.Time) {
	var old []*upConn
	u.mu.Lock()
	for addr, conns := range u.idle {
		i := 0
		for i < len(conns) && now.Sub(conns[i].idleSince) >= u.idleTimeout {
			i++
		}
		if i > 0 {
			old = append(old, conns[:i]...)
			u.idle[addr] = append(conns[:0:0], conns[i:]...)
		}
		if len(u.idle[addr]) == 0 {
			delete(u.idle, addr)
		}
	}
	u.mu.Unlock()
	for _, c := range old {
		c.conn.Close()
	}
}

// upBody is the body of an answer: read to its end, it hands its
// connection back to the pool; closed before, it closes the connection.
type upBody struct {
	io.ReadCloser
	u     *upstream
	c     *upConn
	addr  string
	reuse bool // the answer did not say "Connection: close"
	stop  func() bool
	done  bool
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.finish(false)
	return nil
}

func (b *upBody) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	if b.stop() && complete && b.reuse {
		b.ReadCloser.Close()
		b.u.put(b.addr, b.c)
		return
	}
	b.c.conn.Close() // first: closing the body would read the rest of it
	b.ReadCloser.Close()
}

// unread reports whether a failed exchange ended with the connection
// reset, or broken as the request was written: for a message of at most
// maxUnread bytes, the service read none of it.
func unread(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
