package nano

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// How a Server proxies a message: it resolves the message's Pattern to a
// route, forwards the message to an instance of it, and relays the answer.
// Every failure goes through fail, as every failure of
// httputil.ReverseProxy goes through its ErrorHandler.

// proxy handles every path but the control endpoints.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		closeUnread(w, r)
		s.fail(w, r, "", ErrMethodNotAllowed)
		return
	}
	if err := checkConnection(r.Header); err != nil {
		closeUnread(w, r)
		s.fail(w, r, "", err)
		return
	}
	deadline, bounded, err := callBudget(r.Header, start)
	if err != nil {
		closeUnread(w, r)
		s.fail(w, r, "", err)
		return
	}
	body, err := readBody(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		closeUnread(w, r)
		s.fail(w, r, "", err)
		return
	}
	p, err := messagePattern(body)
	if err != nil {
		s.fail(w, r, "", err)
		return
	}
	rt, err := s.resolve(r.Context(), p)
	if err != nil {
		s.fail(w, r, "", err)
		return
	}
	ctx, cancel, own := s.upstreamContext(r.Context(), deadline, bounded)
	defer cancel()
	ctx, end := observe(ctx, s.opts.Observer, OpProxy, rt.pattern, r.Header)
	out := outcome{ownDeadline: own}
	defer func() { end(out.status, out.err) }()
	s.forward(ctx, w, r, rt, body, &out)
}

// outcome is how a proxied message ended: the status answered and the
// error, if any.
type outcome struct {
	status      int
	err         error
	ownDeadline bool // the call's deadline is UpstreamTimeout, not the client's budget
}

// upstreamContext returns the context of the call to a service: ctx
// bounded by the budget the message came with, if any (bounded, until
// deadline), and by UpstreamTimeout, whichever ends first; own reports
// that UpstreamTimeout does, so that a service that misses it is to blame.
func (s *Server) upstreamContext(ctx context.Context, deadline time.Time, bounded bool) (_ context.Context, _ context.CancelFunc, own bool) {
	if s.opts.UpstreamTimeout > 0 {
		if limit := time.Now().Add(s.opts.UpstreamTimeout); !bounded || limit.Before(deadline) {
			deadline, bounded, own = limit, true, true
		}
	}
	if !bounded {
		return ctx, func() {}, false
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	return ctx, cancel, own
}

// resolve finds the route of a canonical pattern: from the mirror, or on
// a miss from the registry in one round trip shared by concurrent misses.
// A mirrored route whose instances all expired counts as a miss. The
// registry lookup is bounded by RegistryTimeout, not by ctx: a caller
// that gives up does not cancel it for the others waiting on it.
func (s *Server) resolve(ctx context.Context, p string) (*route, error) {
	if rt, ok := s.routes.lookup(p); ok && rt.live(s.now()) {
		return rt, nil
	}
	return s.misses.do(ctx, p, func() (*route, error) {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.RegistryTimeout)
		defer cancel()
		pattern, members, err := s.reg.lookup(ctx, p)
		if err != nil {
			s.setReady(false, err)
			return nil, err
		}
		if pattern == "" {
			return nil, fmt.Errorf("%w %q", ErrNoService, p)
		}
		before, _ := s.routes.get(pattern)
		if s.routes.merge(pattern, members...) {
			for _, mb := range members { // those no other path told of first
				if before == nil || !before.has(mb.addr) {
					s.log.Info("nano: service registered", "pattern", pattern, "address", mb.addr)
				}
			}
		}
		rt, ok := s.routes.get(pattern)
		if !ok { // deregistered meanwhile
			return nil, fmt.Errorf("%w %q", ErrNoService, p)
		}
		return rt, nil
	})
}

// forward sends the message to an instance of rt within ctx and relays
// its answer, and records in out how the message ended. Each instance to
// try is the less busy of two live ones taken at random (balance.go). The
// message goes on to another instance only when the last one cannot have
// received it: it could not be reached (a dial error; a kept connection
// found closed before writing is replaced inside the transport), or it
// answered that none of its handlers matches, when it leaves the mirror.
// Any other failure is the caller's: a message that may have reached a
// handler is never sent twice. Failures count against the instance
// (outlier detection); when every instance failed, the answer is 503. A
// message whose time is up before it is sent gets 504.
func (s *Server) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, rt *route, body []byte, out *outcome) {
	now := s.now()
	if !rt.live(now) { // all expired since resolve looked
		s.failWith(w, r, rt.pattern, fmt.Errorf("%w %q", ErrNoService, rt.pattern), out)
		return
	}
	p := picker{r: rt, expiry: now, now: time.Now().UnixNano()}
	for {
		i, st, ok := p.next()
		if !ok {
			break
		}
		addr := rt.instances[i].addr
		header, ok := s.outboundHeader(ctx, r.Header)
		if !ok {
			s.failWith(w, r, rt.pattern, callError(ctx, context.DeadlineExceeded), out)
			return
		}
		err, done := s.try(ctx, w, r, rt, addr, st, header, body, p.more(), out)
		if done {
			return
		}
		s.metrics.failovers.Add(1)
		if errors.Is(err, errNoHandler) {
			if s.forget(rt.pattern, addr) {
				s.log.Info("nano: instance no longer handles the pattern", "pattern", rt.pattern, "address", addr)
			}
			continue
		}
		s.log.Debug("nano: instance could not be reached, trying another", "pattern", rt.pattern, "address", addr, "error", err)
		s.failed(rt, addr, st, p.now, dialFailed(err), err)
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter(rt, p.now)/time.Second)))
	w.Header().Set(errorHeader, noInstanceError)
	s.failWith(w, r, rt.pattern, fmt.Errorf("%w: %q: no instance answered", ErrNoInstance, rt.pattern), out)
}

// try sends the message to the instance at addr of rt, whose state is
// st, and relays its answer. It reports done when the message got its
// answer, relayed or an error, and otherwise the error of a call that
// reached no handler, so that the message may go to another instance:
// one that could not be reached, or, when another is left (more), one
// that has no handler for it.
func (s *Server) try(ctx context.Context, w http.ResponseWriter, r *http.Request, rt *route, addr string, st *instanceState, header http.Header, body []byte, more bool, out *outcome) (error, bool) {
	st.inFlight.Add(1)
	defer st.inFlight.Add(-1)
	sent := time.Now()
	hostPort, secure := splitTarget(addr)
	resp, err := s.transport.RoundTrip(outbound(ctx, hostPort, secure, header, body))
	if err == nil {
		s.metrics.upstream.observe(time.Since(sent))
		if more && resp.Header.Get(errorHeader) == noHandlerError {
			resp.Body.Close()
			return errNoHandler, false
		}
		defer s.judge(rt, addr, st, resp, out) // also when relay aborts
		s.relay(w, r, rt.pattern, resp, out)
		return nil, true
	}
	if failover(err) && ctx.Err() == nil {
		return err, false
	}
	s.log.Debug("nano: proxied call failed", "pattern", rt.pattern, "address", addr, "error", err)
	if r.Context().Err() == nil && (ctx.Err() == nil || out.ownDeadline) {
		s.failed(rt, addr, st, time.Now().UnixNano(), false, err) // the client did not cause it
	}
	s.failWith(w, r, rt.pattern, callError(ctx, err), out)
	return err, true
}

// failed records a failure of the instance at addr of rt, whose state is
// st, at now: refused says it refused the connection. An instance of the
// original library, registered for good, that refused or was ejected
// leaves the registry, as the original's server deleted it: it comes back
// when it registers again.
func (s *Server) failed(rt *route, addr string, st *instanceState, now int64, refused bool, cause error) {
	ejected := s.outliers.failed(rt, addr, st, now, refused, cause)
	if !refused && !ejected {
		return
	}
	i := slices.IndexFunc(rt.instances, func(in instance) bool { return in.addr == addr })
	if i < 0 || !permanentAt(rt.instances[i].expires, now) {
		return
	}
	if s.forget(rt.pattern, addr) {
		s.log.Info("nano: unreachable service of the original library removed", "pattern", rt.pattern, "address", addr, "error", cause)
	}
}

// forget removes the instance at addr of pattern p from the mirror and,
// in the background, from the registry, so that every server forgets it;
// an instance that does serve the pattern comes back with its next
// registration, which the registry then takes as new. It reports whether
// the instance was in the mirror (another call may have removed it first).
func (s *Server) forget(p, addr string) bool {
	if !s.routes.remove(p, addr, time.Now().Add(s.opts.TTL)) {
		return false
	}
	select {
	case <-s.stop: // shutting down: the other servers will find it gone too
		return true
	default:
	}
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.RegistryTimeout)
		defer cancel()
		a, secure := splitTarget(addr)
		if err := s.reg.deregister(ctx, Registration{Pattern: p, ServiceAddress: a, TLS: secure}); err != nil {
			s.log.Warn("nano: deregistration failed", "pattern", p, "address", addr, "error", err)
		}
	}()
	return true
}

// judge records against the instance at addr of rt, whose state is st,
// how its answer went: a gateway error of its own (502, 503 or 504 that no
// handler chose), or an answer it broke off, is a failure; any other
// answer a success.
func (s *Server) judge(rt *route, addr string, st *instanceState, resp *http.Response, out *outcome) {
	switch {
	case out.status == statusClientClosed:
	case out.status == http.StatusBadGateway && out.err != nil, // broke off
		(resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout) &&
			resp.Header.Get(errorHeader) != handlerError:
		s.failed(rt, addr, st, time.Now().UnixNano(), false, fmt.Errorf("answered %d", resp.StatusCode))
	default:
		s.outliers.succeeded(rt, addr, st)
	}
}

// relay copies a service's answer to the client: its status, its
// end-to-end header fields, its body and trailers. An answer that
// checkAnswer refuses is answered with 502.
func (s *Server) relay(w http.ResponseWriter, r *http.Request, pattern string, resp *http.Response, out *outcome) {
	defer resp.Body.Close()
	if err := checkAnswer(resp); err != nil {
		s.log.Debug("nano: service answered badly", "pattern", pattern, "error", err)
		s.failWith(w, r, pattern, fmt.Errorf("%w (pattern %q)", err, pattern), out)
		return
	}
	h := w.Header()
	named := connectionNamed(resp.Header)
	for k, vv := range resp.Header {
		if !hopByHop(k, named) {
			h[k] = vv // the answer is ours alone: no copy needed
		}
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	out.status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	// Through Write only: an answer that fits the writer's buffer then
	// leaves in one write with its head.
	cw := clientWriter{w: w}
	if _, err := io.CopyBuffer(&cw, resp.Body, *buf); err != nil {
		// The status is sent: abort the connection so that the client
		// sees a truncated answer rather than a complete-looking one.
		s.log.Debug("nano: relaying an answer failed", "pattern", pattern, "error", err)
		out.status, out.err = http.StatusBadGateway, fmt.Errorf("%w: %q: the answer broke off", ErrServiceUnavailable, pattern)
		if cw.err != nil { // the client's side broke, not the service's
			out.status, out.err = statusClientClosed, fmt.Errorf("nano: the client left: %w", context.Canceled)
		}
		s.metrics.count(pattern, out.status)
		panic(http.ErrAbortHandler)
	}
	s.metrics.count(pattern, resp.StatusCode)
	for k, vv := range resp.Trailer {
		h[k] = vv
	}
}

// fail is the proxy's one error path: it counts the message under the
// pattern that routed it (empty when none did) and answers with err's
// status and a JSON error naming no address. A client that hung up gets
// nothing, and is counted with status 499, as nginx counts it. It returns
// the status counted.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, pattern string, err error) int {
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		s.metrics.count(pattern, statusClientClosed)
		return statusClientClosed
	}
	status := statusOf(err)
	s.metrics.count(pattern, status)
	writeError(w, r, err)
	return status
}

// failWith is fail for a routed message, recording how it ended in out.
func (s *Server) failWith(w http.ResponseWriter, r *http.Request, pattern string, err error, out *outcome) {
	out.status, out.err = s.fail(w, r, pattern, err), err
}

// statusClientClosed counts the messages whose client hung up before the
// answer.
const statusClientClosed = 499

// errNoHandler is an instance's answer that none of its handlers matches
// the message: no handler ran, and the message may go to another instance.
var errNoHandler = &notHandledError{fmt.Errorf("%w: no handler", ErrNoService)}

// outbound returns the request that carries a message to addr, over
// HTTPS when secure. It has no GetBody, so that no transport can send it again: an
// http.Transport would resend a request that carries an Idempotency-Key
// after its connection failed with the request written.
func outbound(ctx context.Context, addr string, secure bool, header http.Header, body []byte) *http.Request {
	m := &message{url: url.URL{Scheme: "http", Host: addr, Path: "/"}}
	if secure {
		m.url.Scheme = "https"
	}
	m.body.Reset(body)
	m.req = http.Request{
		Method:        http.MethodPost,
		URL:           &m.url,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          messageBody{&m.body},
		ContentLength: int64(len(body)),
		Host:          addr,
	}
	return m.req.WithContext(ctx)
}

// message holds what a request carrying a message is made of, in one
// allocation.
type message struct {
	req  http.Request
	url  url.URL
	body bytes.Reader
}

// messageBody is the body of a message on its way to a service.
type messageBody struct{ *bytes.Reader }

// Close does nothing: the message's bytes are the caller's.
func (messageBody) Close() error { return nil }

// clientWriter writes an answer to the client, through Write only, and
// keeps the error of a write that failed.
type clientWriter struct {
	w   io.Writer
	err error // the first error of Write
}

// Write writes p to the client.
func (c *clientWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// copyBuffers hold the buffers that relay copies answers through.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// hopHeaders are the hop-by-hop header fields a proxy must not forward
// (RFC 9110, section 7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// outboundHeader returns the header of a message to a service sent
// within ctx: the client's end-to-end fields, with application/json unless
// the client named a Content-Type, the time left to ctx in Nano-Timeout,
// and what the Observer carries. It reports false when ctx has no time
// left. When the client's header has nothing to drop and a Content-Type,
// it is that header itself, given the fields to set (the message's
// request is this handler's own, and a RoundTripper only reads it);
// otherwise a new header that shares the client's values.
func (s *Server) outboundHeader(ctx context.Context, h http.Header) (http.Header, bool) {
	named := connectionNamed(h)
	out := h
	if named != nil || len(h["Content-Type"]) == 0 || slices.ContainsFunc(hopHeaders, func(k string) bool { return h[k] != nil }) {
		out = make(http.Header, len(h)+2)
		for k, vv := range h {
			if !hopByHop(k, named) {
				out[k] = vv
			}
		}
		if len(out["Content-Type"]) == 0 {
			out["Content-Type"] = jsonContentType
		}
	}
	delete(out, timeoutHeader)
	if !setBudget(ctx, out) {
		return nil, false
	}
	if s.opts.Observer != nil {
		s.opts.Observer.Inject(ctx, out)
	}
	return out, true
}

// hopByHop reports whether the field k concerns one connection only: a
// hop-by-hop field, or one that the header's Connection field names
// (named, from connectionNamed).
func hopByHop(k string, named map[string]bool) bool {
	return slices.Contains(hopHeaders, k) || named[k]
}

// maxConnectionNames bounds the names a message's Connection header may
// list; no client needs more than a few.
const maxConnectionNames = 64

// checkConnection refuses a Connection header that lists more names than
// maxConnectionNames.
func checkConnection(h http.Header) error {
	n := 0
	for _, f := range h["Connection"] {
		n += strings.Count(f, ",") + 1
	}
	if n > maxConnectionNames {
		return fmt.Errorf("%w: the Connection header lists over %d names", ErrInvalidMessage, maxConnectionNames)
	}
	return nil
}

// connectionNamed returns the canonical names of the fields h's Connection
// header lists, or nil when it has none (the usual case). Built once per
// header, it keeps the filtering linear in the header's size however many
// names a client lists.
func connectionNamed(h http.Header) map[string]bool {
	values := h["Connection"]
	if len(values) == 0 {
		return nil
	}
	named := make(map[string]bool)
	for _, f := range values {
		for name := range strings.SplitSeq(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				named[http.CanonicalHeaderKey(name)] = true
			}
		}
	}
	return named
}

// messagePattern returns the canonical Pattern of a JSON message.
func messagePattern(body []byte) (string, error) {
	m, err := readMessage(body)
	if err != nil {
		return "", err
	}
	if !m.HasPattern {
		return "", fmt.Errorf("%w: no Pattern field", ErrInvalidMessage)
	}
	return parsePattern(m.Pattern)
}
