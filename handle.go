package nano

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"time"
)

// How a Service handles a message: it reads it, finds the handler of its
// pattern, runs it within the call's context, deadline and Observer,
// counts it, and answers with the handler's bytes or its error.

// HealthHandler returns a handler of the service's GET /healthz, /readyz
// and /metrics alone (404 for any other path, 405 for other methods), for
// a program to serve on a port of its own, in plain HTTP: where the
// service requires client certificates, probes and metrics scrapers that
// present none can still reach them there.
func (s *Service) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			writeError(w, r, ErrMethodNotAllowed)
		case !s.healthEndpoint(w, r):
			writeError(w, r, fmt.Errorf("%w: %s is not a health path", ErrNoService, r.URL.Path))
		}
	})
}

// healthEndpoint answers /healthz, /readyz and /metrics, and reports
// false, answering nothing, for any other path.
func (s *Service) healthEndpoint(w http.ResponseWriter, r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz":
		writeAlive(w)
	case "/readyz":
		s.readyz(w, r)
	case "/metrics":
		s.metricsEndpoint(w)
	default:
		return false
	}
	return true
}

// serveHTTP is the service endpoint: it runs the handler of the longest
// pattern matching the message and answers with its bytes, or with the
// ServiceRequest envelope when the message asks for it.
func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && s.healthEndpoint(w, r) {
		return
	}
	if r.Method != http.MethodPost {
		closeUnread(w, r)
		writeError(w, r, ErrMethodNotAllowed)
		return
	}
	deadline, bounded, err := callBudget(r.Header, start)
	if err != nil {
		closeUnread(w, r)
		writeError(w, r, err)
		return
	}
	body, err := readBody(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		closeUnread(w, r)
		writeError(w, r, err)
		return
	}
	msg, err := readMessage(body)
	if err != nil {
		writeError(w, r, err)
		return
	}
	if !msg.HasPattern {
		writeError(w, r, fmt.Errorf("%w: no Pattern field", ErrInvalidMessage))
		return
	}
	p, err := parsePattern(msg.Pattern)
	if err != nil {
		writeError(w, r, err)
		return
	}
	_, h, ok := s.routes.lookup(p)
	if !ok {
		w.Header().Set(errorHeader, noHandlerError)
		writeError(w, r, fmt.Errorf("%w %q", ErrNoService, p))
		return
	}
	ctx := r.Context()
	switch {
	case !bounded:
	case !time.Now().Before(deadline):
		h.metrics.count(http.StatusGatewayTimeout)
		writeError(w, r, timeUp(context.DeadlineExceeded))
		return
	case h.context:
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	out, err := s.run(ctx, h, &Request{Body: body, Pattern: h.pattern, Header: r.Header, TLS: r.TLS})
	if err != nil {
		if _, ours := errors.AsType[*libraryError](err); !ours {
			w.Header().Set(errorHeader, handlerError)
		}
		writeError(w, r, err)
		return
	}
	switch {
	case r.Header.Get(envelopeHeader) == envelopeInHeader:
		w.Header()[serviceHeader] = h.field
	case msg.ServiceRequest:
		reg := s.registration(h.pattern)
		out, err = json.Marshal(envelope{Service: &reg, Payload: out})
		if err != nil {
			writeError(w, r, err)
			return
		}
	}
	writeBody(w, http.StatusOK, out)
}

// run runs the handler h for req within ctx: it refuses a call whose
// context ended before the handler starts (504 when its deadline passed),
// tells the Observer, counts the call and turns a panic into an error.
func (s *Service) run(ctx context.Context, h *handler, req *Request) (out []byte, err error) {
	if err := ctx.Err(); err != nil {
		err = &libraryError{timeUp(err)}
		h.metrics.count(endStatus(ctx, err))
		return nil, err
	}
	start := time.Now()
	if s.opts.Observer == nil {
		ctx = withTraceContext(ctx, req.Header)
	}
	ctx, end := observe(ctx, s.opts.Observer, OpHandle, h.pattern, req.Header)
	s.metrics.inFlight.Add(1)
	defer func() {
		s.metrics.inFlight.Add(-1)
		status := endStatus(ctx, err)
		h.metrics.count(status)
		h.metrics.duration.observe(time.Since(start))
		end(status, err)
	}()
	out, err = s.call(ctx, h, req)
	if err != nil && ctx.Err() == context.DeadlineExceeded && errors.Is(err, context.DeadlineExceeded) {
		// The call's time ran out under the handler: answered as the
		// library's timeout, so that the caller sees its deadline.
		err = &libraryError{fmt.Errorf("%w: %w", ErrTimeout, err)}
	}
	return out, err
}

// call runs a handler; a panic becomes an ErrHandler error and one log
// line with the panic's stack, not a crash or a dropped connection.
func (s *Service) call(ctx context.Context, h *handler, req *Request) (out []byte, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("nano: handler panicked", "pattern", h.pattern, "panic", v, "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("%w: %q panicked", ErrHandler, h.pattern)
		}
	}()
	return h.fn(ctx, req)
}

// endStatus is the status a call within ctx that ended with err is
// counted with: 200, the status of err, or 499 when the caller hung up.
func endStatus(ctx context.Context, err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case ctx.Err() == context.Canceled:
		return statusClientClosed
	}
	return statusOf(err)
}

// libraryError is an error the library raises in a handler's place (the
// call's time was up, HandleJSON could not decode the message): it is not
// marked as the handler's in the answer.
type libraryError struct{ err error }

// Error returns the text of the error.
func (e *libraryError) Error() string { return e.err.Error() }

// Unwrap returns the error.
func (e *libraryError) Unwrap() error { return e.err }

// timeUp is the error of a call whose context ended before its handler
// ran: 504 when its deadline passed, or the context's error.
func timeUp(err error) error {
	if err == context.DeadlineExceeded {
		return fmt.Errorf("%w: the call's deadline passed before its handler ran: %w", ErrTimeout, err)
	}
	return fmt.Errorf("nano: call canceled: %w", err)
}
