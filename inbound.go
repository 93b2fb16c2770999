package nano

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// inbound serves the HTTP/1.1 connections of a Server. A proxied message
// crosses two HTTP servers, the nano server's and the service's; net/http
// spends, per request, a background read and the machinery of a general
// server. inbound runs one loop per connection instead: it reads a request
// with http.ReadRequest, runs the Server's handler, writes the answer with
// its Content-Length in one write, and bounds every step with the
// connection's deadlines. It speaks what nano's endpoints need: requests
// with a length or chunked bodies, keep-alive and "Connection: close",
// "Expect: 100-continue". Server.Handler serves through net/http instead,
// for those who mount it.
//
// A zero inbound is not usable; it is safe for concurrent use.
type inbound struct {
	handler                           http.Handler
	log                               *slog.Logger
	readHeader, read, write, idleTime time.Duration // zero means no limit

	mu        sync.Mutex                // guards conns, listeners, closed
	conns     map[*inConn]bool          // open connections; true while a request runs
	listeners map[net.Listener]struct{} // accepting
	closed    bool                      // set by shutdown
	wg        sync.WaitGroup            // connection loops
}

// maxHeaderBytes bounds a request's line and headers, as net/http's
// DefaultMaxHeaderBytes does.
const maxHeaderBytes = 1 << 20

// inConn is a connection served by inbound.
type inConn struct {
	conn   net.Conn
	remote string           // conn's remote address, for each request's RemoteAddr
	lr     io.LimitedReader // bounds the header of each request
	br     *bufio.Reader
	bw     *bufio.Writer
	w      inWriter    // the writer of the request being served
	header http.Header // w's header map, cleared for each request
	buf    []byte      // w's buffer, kept for the next request if small
	linger bool        // a body was left unread: close gently
	body   countedBody // the body of the request being served
}

// drainWait bounds the wait for the rest of a body its handler did not
// read, before the answer goes out.
const drainWait = 500 * time.Millisecond

// countedBody is a request body that knows how much of it was read.
type countedBody struct {
	io.ReadCloser
	n   int64
	eof bool
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// consumed reports whether the body was read to its end: the handler saw
// EOF, or read all of a known length.
func (b *countedBody) consumed(length int64) bool {
	return b.eof || length >= 0 && b.n >= length
}

// serve accepts connections on l until shutdown, then returns ErrClosed.
func (in *inbound) serve(l net.Listener) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	if in.listeners == nil {
		in.listeners = make(map[net.Listener]struct{})
		in.conns = make(map[*inConn]bool)
	}
	in.listeners[l] = struct{}{}
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		delete(in.listeners, l)
		in.mu.Unlock()
	}()

	var pause time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			in.mu.Lock()
			closed := in.closed
			in.mu.Unlock()
			if closed {
				return ErrClosed
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				time.Sleep(pause)
				continue
			}
			return err
		}
		pause = 0
		if ic := in.track(c); ic != nil {
			go in.handle(ic)
		}
	}
}

// handle serves the requests of one connection in turn.
func (in *inbound) handle(ic *inConn) {
	defer in.untrack(ic)
	c := ic.conn

	wait := in.readHeader // the first request comes at once, or not at all
	for {
		ic.lr.N = maxHeaderBytes + 4<<10
		deadline(c.SetReadDeadline, wait)
		if _, err := ic.br.Peek(1); err != nil {
			return // closed, or idle too long
		}
		if !in.busy(ic, true) {
			return // shutting down
		}
		deadline(c.SetReadDeadline, in.readHeader)
		req, err := http.ReadRequest(ic.br)
		if err != nil {
			in.refuse(ic, err)
			return
		}
		ic.lr.N = 1<<63 - 1 // the body is bounded by its handler
		deadline(c.SetReadDeadline, in.read)
		deadline(c.SetWriteDeadline, in.write)
		if !in.serveOne(ic, req) || !in.busy(ic, false) {
			return
		}
		wait = in.idleTime
	}
}

// serveOne runs the handler for one request and writes its answer. It
// reports whether the connection may carry another request.
func (in *inbound) serveOne(ic *inConn, req *http.Request) (keep bool) {
	req.RemoteAddr = ic.remote
	if req.Body != http.NoBody {
		ic.body = countedBody{ReadCloser: req.Body}
		req.Body = &ic.body
	}
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") && req.ContentLength != 0 {
		ic.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if ic.bw.Flush() != nil {
			return false
		}
	}
	if ic.header == nil {
		ic.header = make(http.Header)
	}
	clear(ic.header)
	ic.w = inWriter{bw: ic.bw, header: ic.header, buf: ic.buf[:0], head: req.Method == http.MethodHead, status: http.StatusOK}
	w := &ic.w
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				in.log.Error("nano: handler panicked", "panic", v)
			}
			keep = false
		}
	}()
	in.handler.ServeHTTP(w, req)
	// What the handler left of the body must go before the next request;
	// a body that cannot be read whole soon (too long, as after a 413;
	// slow; broken) leaves the connection unusable, and the answer says
	// so, unless its head is out already.
	if req.Body != http.NoBody && !ic.body.consumed(req.ContentLength) {
		wait := drainWait
		if in.read > 0 {
			wait = min(wait, in.read)
		}
		deadline(ic.conn.SetReadDeadline, wait)
		if n, err := io.CopyN(io.Discard, req.Body, 256<<10); n == 256<<10 || err != nil && err != io.EOF {
			ic.linger = true
			w.close = true
		}
	}
	if err := w.finish(); err != nil {
		return false
	}
	if cap(w.buf) <= maxKeptBuffer {
		ic.buf = w.buf[:0]
	}
	return !req.Close && !w.close && req.ProtoAtLeast(1, 1)
}

// refuse answers a request that could not be read, if it can be answered.
func (in *inbound) refuse(ic *inConn, err error) {
	status := http.StatusBadRequest
	var ne net.Error
	switch {
	case ic.lr.N <= 0:
		status = http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, io.EOF) || errors.As(err, &ne):
		return // the connection closed or timed out
	}
	w := &inWriter{bw: ic.bw, status: status, close: true}
	writeError(w, &Error{Status: status, Message: http.StatusText(status)})
	w.finish()
}

// track records a new connection and counts its loop, under the same lock
// as shutdown; it closes the connection and returns nil once shutting
// down.
func (in *inbound) track(c net.Conn) *inConn {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		c.Close()
		return nil
	}
	ic := &inConn{conn: c, remote: c.RemoteAddr().String()}
	ic.lr.R = c
	ic.br = bufio.NewReaderSize(&ic.lr, 4<<10)
	ic.bw = bufio.NewWriterSize(c, 4<<10)
	in.conns[ic] = false
	in.wg.Add(1)
	return ic
}

func (in *inbound) untrack(ic *inConn) {
	in.mu.Lock()
	delete(in.conns, ic)
	in.mu.Unlock()
	if ic.linger {
		lingerClose(ic.conn)
	}
	ic.conn.Close()
	in.wg.Done()
}

// lingerClose ends a connection that may still bring the rest of a body
// nobody read, as after a 413. Closed at once, the unread bytes would make
// it reset, and a reset can destroy the answer before the client reads it;
// so it says it is done writing and reads what comes, for a short while,
// before it closes.
func lingerClose(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(drainWait))
	io.CopyN(io.Discard, c, 4<<20)
}

// busy marks a connection as running a request or not; it reports false
// when the connection should close because the server is shutting down.
func (in *inbound) busy(ic *inConn, running bool) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.conns[ic] = running
	return true
}

// shutdown stops accepting, closes the idle connections and waits for the
// requests running to end, or for ctx, when it closes the rest and
// returns without waiting for their handlers.
func (in *inbound) shutdown(ctx context.Context) error {
	in.mu.Lock()
	in.closed = true
	for l := range in.listeners {
		l.Close()
	}
	for ic, running := range in.conns {
		if !running {
			ic.conn.Close()
		}
	}
	in.mu.Unlock()

	done := make(chan struct{})
	go func() {
		in.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		in.mu.Lock()
		for ic := range in.conns {
			ic.conn.Close()
		}
		in.mu.Unlock()
		return ctx.Err()
	}
}

// deadline sets a deadline d from now, or none for d zero.
func deadline(set func(time.Time) error, d time.Duration) {
	if d > 0 {
		set(time.Now().Add(d))
	} else {
		set(time.Time{})
	}
}

// inWriter is the http.ResponseWriter of inbound. An answer whose handler
// set Content-Length streams; any other is buffered, then written with its
// length, unless it grows past maxBuffered, when it goes on chunked.
type inWriter struct {
	bw          *bufio.Writer
	header      http.Header
	status      int
	wroteHeader bool
	head        bool  // a HEAD request: no body is written
	streaming   bool  // the head is out with a Content-Length; the body goes straight through
	chunked     bool  // the head is out; the body goes in chunks
	length      int64 // the Content-Length announced when streaming
	preset      bool  // setLength announced length
	written     int64 // body bytes the handler wrote
	buf         []byte
	close       bool // close the connection after this answer
}

// maxBuffered is the largest answer of unknown length held whole.
const maxBuffered = 64 << 10

// maxKeptBuffer is the largest answer buffer a connection keeps for its
// next answer.
const maxKeptBuffer = 8 << 10

func (w *inWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *inWriter) WriteHeader(status int) {
	if w.wroteHeader || status < 200 {
		return
	}
	w.wroteHeader = true
	w.status = status
	if strings.EqualFold(w.Header().Get("Connection"), "close") {
		w.close = true
	}
	if w.bodyless() {
		return
	}
	if w.preset {
		w.streaming = true
		w.writeHead(w.length, false)
	} else if n, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		w.streaming, w.length = true, n
		w.writeHead(n, false)
	}
}

// setLength announces the length of the body to come, as a Content-Length
// header would, without the text.
func (w *inWriter) setLength(n int64) {
	w.preset, w.length = true, n
}

// bodyless reports whether the answer must have no body (RFC 9110 6.4.1).
func (w *inWriter) bodyless() bool {
	return w.status == http.StatusNoContent || w.status == http.StatusNotModified
}

func (w *inWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.bodyless() {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	switch {
	case w.streaming:
		if w.written > w.length {
			w.close = true
			return 0, fmt.Errorf("nano: answer longer than its Content-Length %d", w.length)
		}
		if w.head {
			return len(p), nil
		}
		return w.bw.Write(p)
	case w.head:
		return len(p), nil
	case w.chunked:
		return len(p), w.writeChunk(p)
	case len(w.buf)+len(p) > maxBuffered:
		w.chunked = true
		w.writeHead(0, true)
		if err := w.writeChunk(w.buf); err != nil {
			return 0, err
		}
		w.buf = nil
		return len(p), w.writeChunk(p)
	default:
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
}

func (w *inWriter) writeChunk(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	w.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
	w.bw.WriteString("\r\n")
	w.bw.Write(p)
	_, err := w.bw.WriteString("\r\n")
	return err
}

// finish writes what is buffered and flushes the answer.
func (w *inWriter) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	switch {
	case w.bodyless():
		w.writeHead(-1, false)
	case w.streaming:
		if w.written < w.length && !w.head {
			w.close = true
			return io.ErrShortWrite
		}
	case w.chunked:
		w.bw.WriteString("0\r\n\r\n")
	default:
		w.writeHead(w.written, false)
		if !w.head {
			w.bw.Write(w.buf)
		}
	}
	return w.bw.Flush()
}

// writeHead writes the status line and the headers, with the body's
// length (none when negative) or chunked; the framing headers the handler
// set are replaced.
func (w *inWriter) writeHead(length int64, chunked bool) {
	w.bw.WriteString("HTTP/1.1 ")
	w.bw.WriteString(strconv.Itoa(w.status))
	w.bw.WriteByte(' ')
	w.bw.WriteString(http.StatusText(w.status))
	switch {
	case chunked:
		w.bw.WriteString("\r\nTransfer-Encoding: chunked")
	case length >= 0:
		w.bw.WriteString("\r\nContent-Length: ")
		w.bw.WriteString(strconv.FormatInt(length, 10))
	}
	if w.close {
		w.bw.WriteString("\r\nConnection: close")
	}
	if _, ok := w.header["Date"]; !ok {
		w.bw.WriteString("\r\nDate: ")
		w.bw.WriteString(httpDate())
	}
	w.bw.WriteString("\r\n")
	writeFields(w.bw, w.header, "Content-Length", "Transfer-Encoding", "Connection")
	w.bw.WriteString("\r\n")
}

// writeFields writes header fields but those named in skip, each as
// "Name: value\r\n", with the control characters of names and values
// (CR and LF above all) replaced by spaces.
func writeFields(w *bufio.Writer, header http.Header, skip ...string) {
	for k, vv := range header {
		if slices.Contains(skip, k) {
			continue
		}
		for _, v := range vv {
			writeField(w, k, v)
		}
	}
}

// writeField writes one header field, its control characters replaced.
func writeField(w *bufio.Writer, k, v string) {
	w.WriteString(fieldText(k))
	w.WriteString(": ")
	w.WriteString(fieldText(v))
	w.WriteString("\r\n")
}

// fieldText returns s with its control characters but tab replaced by
// spaces, byte by byte.
func fieldText(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c < 0x20 && c != '\t' || c == 0x7f {
					b[j] = ' '
				}
			}
			return string(b)
		}
	}
	return s
}

// httpDate returns the current time in the format of the Date header. The
// text changes once a second, so it is kept and shared.
func httpDate() string {
	now := time.Now()
	if d := lastDate.Load(); d != nil && d.unix == now.Unix() {
		return d.text
	}
	d := &dateText{unix: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	lastDate.Store(d)
	return d.text
}

// dateText is a Date header's text for one second.
type dateText struct {
	unix int64
	text string
}

var lastDate atomic.Pointer[dateText]
