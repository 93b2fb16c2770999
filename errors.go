package nano

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// Errors returned by the package, usually wrapped with context. Test for them
// with errors.Is. Errors that arrive over the wire from a server or a service
// are *Error values that unwrap to the sentinel matching their status code,
// or to ErrHandler when a handler returned the error.
var (
	// ErrInvalidPattern reports a pattern that is empty, has an empty field or
	// exceeds MaxPatternBytes or MaxPatternFields (HTTP 400).
	ErrInvalidPattern = errors.New("nano: invalid pattern")
	// ErrInvalidMessage reports a message that is not a JSON object with a
	// string Pattern field, or a registration that is not valid (HTTP 400).
	ErrInvalidMessage = errors.New("nano: invalid message")
	// ErrNoService reports that no registered pattern matches a request (HTTP 404).
	ErrNoService = errors.New("nano: no service matches the pattern")
	// ErrMethodNotAllowed reports a request that is not a POST (HTTP 405).
	ErrMethodNotAllowed = errors.New("nano: method not allowed")
	// ErrMessageTooLarge reports a body over the size limit (HTTP 413).
	ErrMessageTooLarge = errors.New("nano: message too large")
	// ErrUnauthorized reports a write without the shared token (HTTP 401).
	ErrUnauthorized = errors.New("nano: unauthorized")
	// ErrForbidden reports a registration or deregistration of a pattern
	// the caller's certificate identity may not register, or one made
	// without a verified certificate where ServerOptions.Identities is set
	// (HTTP 403).
	ErrForbidden = errors.New("nano: forbidden")
	// ErrRegistryUnavailable reports that the registry (Redis) cannot be
	// reached (HTTP 503).
	ErrRegistryUnavailable = errors.New("nano: registry unavailable")
	// ErrRegistryFull reports that a server refused a registration of a new
	// pattern because it holds ServerOptions.MaxPatterns already (HTTP 507).
	ErrRegistryFull = errors.New("nano: registry full")
	// ErrServiceUnavailable reports that the service a pattern resolved to
	// could not be reached or answered badly (HTTP 502).
	ErrServiceUnavailable = errors.New("nano: service unavailable")
	// ErrTimeout reports that a service did not answer in time, or that
	// the deadline of a call passed (HTTP 504). Such errors also satisfy
	// errors.Is(err, context.DeadlineExceeded).
	ErrTimeout = errors.New("nano: service timed out")
	// ErrHandler reports that a handler failed (HTTP 500), or returned an
	// error of its own with the status it chose: an *Error from Act that
	// unwraps to ErrHandler came from the handler, whatever its status,
	// where one that unwraps to, say, ErrInvalidMessage came from the
	// library.
	ErrHandler = errors.New("nano: handler failed")
	// ErrNoInstance reports that a registered pattern matches, but none of
	// its instances can be reached now (HTTP 503, with Retry-After): as
	// opposed to ErrNoService, nothing is registered for it.
	ErrNoInstance = errors.New("nano: no instance of the service can be reached")
	// ErrClosed reports a call on a Server, Service or Client that was shut down.
	ErrClosed = errors.New("nano: closed")
	// ErrInvalidOptions reports options a constructor cannot work with.
	ErrInvalidOptions = errors.New("nano: invalid options")
)

// Error is an error with an HTTP status code. A handler returns one to choose
// the status and message its caller receives; Act and ActContext return one
// when a server or service answered with an error status.
//
// A Status outside 400-599, the zero value included, means 500 Internal
// Server Error: an error is never answered with a success status.
type Error struct {
	// Status is the HTTP status code, e.g. http.StatusBadRequest.
	Status int
	// Message is sent to the caller as {"error": Message}. When empty, the
	// text of Err or the status text is sent instead.
	Message string
	// Err is the underlying error, if any; errors.Is and errors.As see it.
	Err error
}

// Error returns the message, or the text of the underlying error, followed
// by the status: `Left must be a number (status 400)`.
func (e *Error) Error() string {
	return e.text() + " (status " + strconv.Itoa(e.status()) + ")"
}

// text is what the error says, without its status: the message, or the
// text of the underlying error, or the status text.
func (e *Error) text() string {
	switch {
	case e.Message != "":
		return e.Message
	case e.Err != nil:
		return e.Err.Error()
	default:
		return http.StatusText(e.status())
	}
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

func (e *Error) status() int {
	if e.Status < 400 || e.Status > 599 {
		return http.StatusInternalServerError
	}
	return e.Status
}

// statusOf maps an error to the status code it is answered with.
func statusOf(err error) int {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.status()
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.status
		}
	}
	return http.StatusInternalServerError
}

// sentinelFor returns the sentinel error that stands for an HTTP status, or
// nil if none does. A 400 stands for ErrInvalidMessage, the wider of the two
// sentinels answered with 400.
func sentinelFor(status int) error {
	for _, s := range sentinels {
		if s.status == status {
			return s.err
		}
	}
	if status >= 500 {
		return ErrHandler
	}
	return nil
}

var sentinels = []struct {
	err    error
	status int
}{
	{ErrInvalidMessage, http.StatusBadRequest},
	{ErrInvalidPattern, http.StatusBadRequest},
	{ErrUnauthorized, http.StatusUnauthorized},
	{ErrForbidden, http.StatusForbidden},
	{ErrNoService, http.StatusNotFound},
	{ErrMethodNotAllowed, http.StatusMethodNotAllowed},
	{ErrMessageTooLarge, http.StatusRequestEntityTooLarge},
	{ErrHandler, http.StatusInternalServerError},
	{ErrServiceUnavailable, http.StatusBadGateway},
	{ErrRegistryUnavailable, http.StatusServiceUnavailable},
	{ErrNoInstance, http.StatusServiceUnavailable},
	{ErrClosed, http.StatusServiceUnavailable},
	{ErrRegistryFull, http.StatusInsufficientStorage},
	{ErrTimeout, http.StatusGatewayTimeout},
	{context.DeadlineExceeded, http.StatusGatewayTimeout},
}

// errorBody is the JSON body of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

// writeError answers the request r with err's status and an error body:
// JSON, {"error": "..."}, unless r comes from a caller that would take any
// JSON answer for a success (see plainErrors); then the message as text.
// r may be nil when there is no request to go by.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	if status == http.StatusMethodNotAllowed && w.Header().Get("Allow") == "" {
		w.Header().Set("Allow", http.MethodPost)
	}
	msg := publicMessage(err)
	if msg == "" {
		msg = http.StatusText(status)
	}
	h := w.Header()
	var body []byte
	if r != nil && plainErrors(r.Header) {
		body = plainError(msg)
		h["Content-Type"] = textContentType
	} else {
		body, _ = json.Marshal(errorBody{Error: msg})
		body = append(body, '\n')
		h["Content-Type"] = jsonContentType
	}
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(body)
}

// plainErrors reports whether the error answers to a request with header
// h are written as text rather than JSON. The original library's Act
// ignores the status of an answer and fails only when the body is not
// JSON: a JSON error body would reach its caller as an answer. Its
// requests are told apart by what they lack: they carry Go's default
// User-Agent ("Go-http-client/..."), no Accept field, and no Nano-Envelope
// field (which this library's clients send). Any other client, curl or a
// Go program that sends an Accept field among them, gets JSON.
func plainErrors(h http.Header) bool {
	if len(h[envelopeHeader]) > 0 || len(h["Accept"]) > 0 {
		return false
	}
	return strings.HasPrefix(h.Get("User-Agent"), "Go-http-client/")
}

// plainError is the text body of an error with message msg: msg and a
// newline, never valid JSON, so that a caller that decodes it fails.
func plainError(msg string) []byte {
	if json.Valid([]byte(msg)) { // a handler's message such as "null" or "{}"
		msg = "error: " + msg
	}
	return []byte(msg + "\n")
}

// textContentType is the Content-Type of text error bodies.
var textContentType = []string{"text/plain; charset=utf-8"}

// publicMessage is the text of err that a caller may see. An *Error in
// err's chain says it, without its status, which the answer's status line
// carries. A registry error names the registry's addresses and says what
// failed inside: the caller learns only that the registry is unavailable
// (the server logs the rest). Other errors are worded by this package,
// naming nothing but the caller's own message and pattern, or chosen by a
// handler.
func publicMessage(err error) string {
	if e, ok := errors.AsType[*Error](err); ok { // its status goes in the status line
		return e.text()
	}
	if errors.Is(err, ErrRegistryUnavailable) {
		return ErrRegistryUnavailable.Error()
	}
	return err.Error()
}

// errorFromResponse turns an error answer, of status and header, into an
// *Error that unwraps to ErrHandler when a handler chose it (the answer's
// Nano-Error says so), ErrNoInstance when a server found no instance to
// reach, else to the sentinel of its status. Its message is the body's:
// JSON as this library writes it, or text.
func errorFromResponse(status int, header http.Header, body []byte) *Error {
	by := header.Get(errorHeader)
	var eb errorBody
	if json.Unmarshal(body, &eb) != nil || eb.Error == "" {
		eb.Error = ""
		if strings.HasPrefix(header.Get("Content-Type"), "text/plain") {
			eb.Error = plainMessage(body)
		}
	}
	if eb.Error == "" {
		eb.Error = http.StatusText(status)
	}
	e := &Error{Status: status, Message: eb.Error, Err: sentinelFor(status)}
	switch {
	case by == handlerError:
		e.Err = ErrHandler
	case by == noInstanceError:
		e.Err = ErrNoInstance
	case status == http.StatusGatewayTimeout:
		e.Err = errTimedOut
	}
	return e
}

// plainMessage returns the message of a text error answer: its first
// line, if it is short printable text, else "".
func plainMessage(body []byte) string {
	line, _, _ := bytes.Cut(body, []byte("\n"))
	line = bytes.TrimSpace(line)
	if len(line) == 0 || len(line) > 512 || !utf8.Valid(line) {
		return ""
	}
	for _, c := range string(line) {
		if !unicode.IsPrint(c) {
			return ""
		}
	}
	return strings.TrimPrefix(string(line), "error: ")
}

// errTimedOut is what a 504 from the far side unwraps to: a deadline passed.
var errTimedOut = fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded)

// callError is the error a caller sees for a call to a service or a server
// that failed: it unwraps to context.DeadlineExceeded (and ErrTimeout) or
// context.Canceled when ctx ended, and otherwise to ErrServiceUnavailable,
// with a reason that names no address. A call that cannot have been
// delivered keeps saying so (see failover).
func callError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded)
	case ctx.Err() != nil:
		return fmt.Errorf("nano: call canceled: %w", context.Canceled)
	case failover(err): // a dial that timed out is one too
		return &notHandledError{fmt.Errorf("%w: %s", ErrServiceUnavailable, netReason(err))}
	case errors.Is(err, context.DeadlineExceeded): // a time limit of the transport's own
		return fmt.Errorf("%w: %s", ErrTimeout, netReason(err))
	default:
		return fmt.Errorf("%w: %s", ErrServiceUnavailable, netReason(err))
	}
}

// netReason says why a call failed, in words that name no address: the
// texts of network errors name both ends of the connection.
func netReason(err error) string {
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &dns):
		return "cannot resolve the host"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "connection broken"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before the whole answer"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case dialFailed(err):
		return "cannot connect"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return "connection failed"
	}
	return "invalid answer"
}

// failover reports whether a call failed in a way that proves it reached
// no handler, so that it may be sent to another instance: the instance
// could not be reached, or answered that none of its handlers matches.
func failover(err error) bool {
	_, ok := errors.AsType[*notHandledError](err)
	return ok || dialFailed(err)
}

// dialFailed reports whether err is the failure to connect.
func dialFailed(err error) bool {
	op, ok := errors.AsType[*net.OpError](err)
	return ok && op.Op == "dial"
}

// notHandledError wraps the failure of a call that reached no handler: the
// peer could not be reached, or answered that none of its handlers
// matches. Only such a call may be sent again elsewhere.
type notHandledError struct{ err error }

// Error returns the text of the failure.
func (e *notHandledError) Error() string { return e.err.Error() }

// Unwrap returns the failure.
func (e *notHandledError) Unwrap() error { return e.err }
