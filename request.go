package nano

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Request is a message as a Handler receives it. Its fields must not be
// modified.
type Request struct {
	// Body is the message, the JSON object the caller sent.
	Body []byte
	// Pattern is the registered pattern of the handler that runs: the
	// longest whole-field prefix of the message's own Pattern.
	Pattern string
	// Header holds the header fields of the HTTP request that carried the
	// message, as net/http read them.
	Header http.Header
	// TLS is the state of the TLS connection that carried the message,
	// nil over plain HTTP. When the service requires client certificates,
	// TLS.PeerCertificates[0] is that of the caller: the nano server's for
	// a message it routed, the calling service's for a direct Act.
	TLS *tls.ConnectionState
}

// Handler handles a message with its context: ctx ends when the caller
// hangs up or the deadline the call carries passes (Nano-Timeout, see the
// package documentation), and an Act made with it carries that deadline
// and the caller's trace context on. It returns the body of the
// answer, or an error answered as HandlerFunc's are.
type Handler func(ctx context.Context, req *Request) ([]byte, error)

// The header fields a call carries beside the message.
const (
	// timeoutHeader carries the time left to a call, in whole
	// milliseconds: relative, so that clocks need not agree.
	timeoutHeader = "Nano-Timeout"
	// traceParentHeader and traceStateHeader carry W3C Trace Context.
	traceParentHeader = "Traceparent"
	traceStateHeader  = "Tracestate"
)

// maxTimeoutDigits bounds the digits of a Nano-Timeout value (some 115
// days in milliseconds).
const maxTimeoutDigits = 10

// callBudget reads the Nano-Timeout field of h: the deadline it sets,
// counted from start, and whether there is one. A value that is not a
// number of milliseconds is an ErrInvalidMessage.
func callBudget(h http.Header, start time.Time) (time.Time, bool, error) {
	values := h[timeoutHeader]
	if len(values) == 0 {
		return time.Time{}, false, nil
	}
	v := values[0]
	if len(values) > 1 || v == "" || len(v) > maxTimeoutDigits || !allDigits(v) {
		return time.Time{}, false, fmt.Errorf("%w: %s must be one whole number of milliseconds", ErrInvalidMessage, timeoutHeader)
	}
	ms, _ := strconv.ParseInt(v, 10, 64)
	return start.Add(time.Duration(ms) * time.Millisecond), true, nil
}

// allDigits reports whether s is made of ASCII digits only.
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// setBudget writes into h the time left until the deadline of ctx, less
// transitAllowance, in whole milliseconds rounded down: the next hop
// counts its budget from when the message reaches it, so the time in
// transit must come off here for its deadline to fall no later than this
// one's. It reports false, writing nothing, when less than a millisecond
// would be left: such a call is not worth sending.
func setBudget(ctx context.Context, h http.Header) bool {
	deadline, ok := ctx.Deadline()
	if !ok {
		return true
	}
	left := (time.Until(deadline) - transitAllowance).Milliseconds()
	if left <= 0 {
		return false
	}
	h[timeoutHeader] = []string{strconv.FormatInt(left, 10)}
	return true
}

// transitAllowance is the time a message may take from one hop to the
// next (written, carried, read, and handed to its handler): taken off
// the budget a call carries on.
const transitAllowance = 5 * time.Millisecond

// traceContext is the W3C Trace Context of an incoming call, kept in the
// context of its handler so that the calls the handler makes carry it on.
type traceContext struct {
	parent, state []string
}

type traceContextKey struct{}

// withTraceContext returns ctx holding the trace context of the header h,
// or ctx itself when h carries none.
func withTraceContext(ctx context.Context, h http.Header) context.Context {
	parent := h[traceParentHeader]
	if len(parent) == 0 {
		return ctx
	}
	return context.WithValue(ctx, traceContextKey{}, traceContext{parent: parent, state: h[traceStateHeader]})
}

// injectTraceContext writes the trace context ctx holds, if any, into h.
func injectTraceContext(ctx context.Context, h http.Header) {
	tc, ok := ctx.Value(traceContextKey{}).(traceContext)
	if !ok {
		return
	}
	h[traceParentHeader] = tc.parent
	if len(tc.state) > 0 {
		h[traceStateHeader] = tc.state
	}
}

// Observer watches the messages servers proxy, services handle and
// clients send, and carries what their contexts hold from process to
// process in the messages' headers: the hook of tracing integrations,
// such as the nanootel module of this repository. Its methods are called
// concurrently, on the path of every message: they must be quick and must
// not block.
type Observer interface {
	// Start is called when work on a message begins. pattern is the
	// registered pattern that routes it (for OpAct, the pattern given to
	// Act); header is the header the message came with (nil for OpAct).
	// Start returns the context the work goes on with, and a function
	// the library calls once when the work ends, with the status of the
	// answer (0 if there is none) and the error, if any.
	Start(ctx context.Context, op Op, pattern string, header http.Header) (context.Context, func(status int, err error))
	// Inject writes what ctx carries into the header of a message about
	// to be sent on: by a server to a service, and by Act.
	Inject(ctx context.Context, header http.Header)
}

// Op is the kind of work an Observer is told of.
type Op int

const (
	// OpProxy is a server sending a message on to a service and relaying
	// its answer.
	OpProxy Op = iota + 1
	// OpHandle is a service running a handler.
	OpHandle
	// OpAct is a client (or a service's Act) calling a service by
	// pattern.
	OpAct
)

// String returns "proxy", "handle" or "act".
func (op Op) String() string {
	switch op {
	case OpProxy:
		return "proxy"
	case OpHandle:
		return "handle"
	case OpAct:
		return "act"
	}
	return "Op(" + strconv.Itoa(int(op)) + ")"
}

// observe starts the work op with o, or returns ctx and a function that
// does nothing when o is nil.
func observe(ctx context.Context, o Observer, op Op, pattern string, header http.Header) (context.Context, func(int, error)) {
	if o == nil {
		return ctx, func(int, error) {}
	}
	return o.Start(ctx, op, pattern, header)
}

// inject writes what ctx carries into the header of a message about to
// be sent: through o when there is one, else the trace context of the
// incoming call ctx belongs to.
func inject(ctx context.Context, o Observer, h http.Header) {
	if o != nil {
		o.Inject(ctx, h)
		return
	}
	injectTraceContext(ctx, h)
}
