package nanootel_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"

	nano "github.com/domWinter/go-nano"
)

// traceFields records the trace context header fields of the messages a
// handler receives.
type traceFields struct {
	mu   sync.Mutex // guards seen
	seen []http.Header
}

// wrap returns h, recording the trace context of each message first.
func (f *traceFields) wrap(h nano.Handler) nano.Handler {
	return func(ctx context.Context, req *nano.Request) ([]byte, error) {
		f.mu.Lock()
		f.seen = append(f.seen, http.Header{
			"Traceparent": req.Header.Values("Traceparent"),
			"Tracestate":  req.Header.Values("Tracestate"),
		})
		f.mu.Unlock()
		return h(ctx, req)
	}
}

// only fails the test unless exactly one message was recorded, with the
// trace context fields of want.
func (f *traceFields) only(t *testing.T, who string, want http.Header) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) != 1 {
		t.Fatalf("%s received %d messages, want 1", who, len(f.seen))
	}
	for _, k := range []string{"Traceparent", "Tracestate"} {
		if got := f.seen[0][k]; !slices.Equal(got, want[k]) {
			t.Errorf("%s received %s %q, want %q", who, k, got, want[k])
		}
	}
}

// Without an Observer, the core carries the W3C trace context a client
// sends through the server unchanged, and a handler's Act made with its
// context sends on the trace context its message came with, directly or
// through the server.
func TestUntracedPassesTraceContextOn(t *testing.T) {
	traced := http.Header{
		"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		"Tracestate":  {"congo=t61rcWkgMzE"},
	}
	for _, mode := range []string{direct, through} {
		for _, sent := range []http.Header{traced, {}} {
			name := mode + "/with trace context"
			if len(sent) == 0 {
				name = mode + "/without"
			}
			t.Run(name, func(t *testing.T) {
				var atA, atB traceFields
				_, addr := startServer(t, nil)
				b := newService(t, addr, nil, 0)
				add(t, b, "role:math,cmd:sum", atB.wrap(sum))
				serve(t, b, addr, "role:math,cmd:sum")
				a := newService(t, addr, nil, peerTTL(mode))
				add(t, a, "role:report", atA.wrap(relay(a)))
				serve(t, a, addr, "role:report")

				if status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:report","Call":"role:math,cmd:sum"}`, sent); status != http.StatusOK {
					t.Fatalf("got %d %s, want 200", status, body)
				}
				atA.only(t, "service A", sent)
				atB.only(t, "service B", sent)
			})
		}
	}
}
