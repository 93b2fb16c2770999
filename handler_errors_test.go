package nano_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Tests of errors: the text of *Error, the body of error answers, and how
// an Act caller tells a handler's error from one of the library.

// TestErrorText: the text of an *Error ends with its status, 500 for a
// status that is not an error's.
func TestErrorText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  *nano.Error
		want string
	}{
		{&nano.Error{Status: http.StatusBadRequest, Message: "Left must be a number"}, "Left must be a number (status 400)"},
		{&nano.Error{Status: http.StatusNotFound, Message: "no such thing"}, "no such thing (status 404)"},
		{&nano.Error{Status: http.StatusBadGateway, Err: io.ErrUnexpectedEOF}, "unexpected EOF (status 502)"},
		{&nano.Error{Status: http.StatusServiceUnavailable}, "Service Unavailable (status 503)"},
		{&nano.Error{Message: "zero status"}, "zero status (status 500)"},
		{&nano.Error{Status: http.StatusOK, Message: "not an error status"}, "not an error status (status 500)"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q; want %q", got, tc.want)
			}
		})
	}
}

// TestHandlerErrorOnTheWire: the *Error a handler returns is answered
// with its status and a body holding its message alone, not the status
// again, through the server as from the service: JSON for a client that
// names what it accepts, text for one that looks like the original
// library's Act (Go's default User-Agent, no Accept field).
func TestHandlerErrorOnTheWire(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{"role:err": badHandler})
	for _, to := range []struct{ name, addr string }{{"server", addr}, {"service", svcAddr}} {
		t.Run(to.name, func(t *testing.T) {
			for _, accept := range []string{"application/json", "*/*", ""} {
				req, _ := http.NewRequest(http.MethodPost, "http://"+to.addr+"/", strings.NewReader(`{"Pattern":"role:err"}`))
				req.Header.Set("Content-Type", "application/json")
				if accept != "" {
					req.Header.Set("Accept", accept)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body := readAll(resp)
				ct := resp.Header.Get("Content-Type")
				if accept == "" {
					if resp.StatusCode != http.StatusBadRequest || ct != "text/plain; charset=utf-8" || body != "Left must be a number\n" {
						t.Errorf("no Accept: got %d %s %q; want 400 and the message as text", resp.StatusCode, ct, body)
					}
					continue
				}
				if resp.StatusCode != http.StatusBadRequest || ct != "application/json" {
					t.Errorf("Accept %s: got %d %s; want 400 application/json", accept, resp.StatusCode, ct)
				}
				if msg := errorBody(t, body); msg != "Left must be a number" {
					t.Errorf("Accept %s: the error body says %q; want the handler's message alone", accept, msg)
				}
			}
		})
	}
}

// TestHandlerErrorsAndLibraryErrors: an Act caller gets a handler's own
// error as an *Error with the handler's status that unwraps to ErrHandler,
// and not to the sentinel of its status; an error of the library (a
// message it refuses, no service) unwraps to its sentinel and not to
// ErrHandler. A handler's 404 is its answer, not a missing handler: the
// message is not sent again.
func TestHandlerErrorsAndLibraryErrors(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	var notFoundRuns atomic.Int64
	startHandlers(t, addr, map[string]nano.Handler{
		"role:err,cmd:bad": badHandler,
		"role:err,cmd:missing": func(context.Context, *nano.Request) ([]byte, error) {
			notFoundRuns.Add(1)
			return nil, &nano.Error{Status: http.StatusNotFound, Message: "no such order"}
		},
	})
	for _, path := range actPaths {
		c := newClient(t, nano.ClientOptions{Server: addr, PeerTTL: path.peerTTL, Timeout: 5 * time.Second})
		for _, tc := range []struct {
			name, msg, pattern string
			status             int    // of the *Error; 0: none need be
			message            string // of the *Error; "": any
			is, isNot          error  // what the error unwraps to, and not
		}{
			{"the handler's 400", `{"Pattern":"role:err,cmd:bad"}`, "role:err,cmd:bad", http.StatusBadRequest, "Left must be a number", nano.ErrHandler, nano.ErrInvalidMessage},
			{"the handler's 404", `{"Pattern":"role:err,cmd:missing"}`, "role:err,cmd:missing", http.StatusNotFound, "no such order", nano.ErrHandler, nano.ErrNoService},
			{"not JSON", `Left=1&Right=2`, "role:err,cmd:bad", 0, "", nano.ErrInvalidMessage, nano.ErrHandler},
			{"an invalid Pattern in the message", `{"Pattern":"role:err,,cmd:bad"}`, "role:err,cmd:bad", http.StatusBadRequest, "", nano.ErrInvalidMessage, nano.ErrHandler},
			{"no service", `{"Pattern":"role:nothing"}`, "role:nothing", http.StatusNotFound, "", nano.ErrNoService, nano.ErrHandler},
		} {
			t.Run(fmt.Sprintf("%s/%s", path.name, tc.name), func(t *testing.T) {
				before := notFoundRuns.Load()
				_, err := c.Act([]byte(tc.msg), tc.pattern)
				if !errors.Is(err, tc.is) || errors.Is(err, tc.isNot) {
					t.Errorf("got %v; want an error that unwraps to %q and not to %q", err, tc.is, tc.isNot)
				}
				if tc.status != 0 {
					e, ok := errors.AsType[*nano.Error](err)
					if !ok || e.Status != tc.status || tc.message != "" && e.Message != tc.message {
						t.Errorf("got %v; want an *Error with status %d and message %q", err, tc.status, tc.message)
					}
				}
				if tc.status == http.StatusNotFound && tc.is == nano.ErrHandler {
					if runs := notFoundRuns.Load() - before; runs != 1 {
						t.Errorf("the handler ran %d times for one message; want 1", runs)
					}
				}
			})
		}
	}
}
