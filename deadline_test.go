package nano_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Tests of deadlines: the Nano-Timeout header that carries the time left
// to a call, the deadline of a Handler's context, and how callers see a
// deadline pass.

// deadlineProbe is a Handler that records the deadline of the context of
// each message it handles.
type deadlineProbe struct {
	seen chan deadlineSeen
	runs atomic.Int64
}

// deadlineSeen is the deadline of a handler's context, if it had one.
type deadlineSeen struct {
	at time.Time
	ok bool
}

func newDeadlineProbe() *deadlineProbe {
	return &deadlineProbe{seen: make(chan deadlineSeen, 64)}
}

func (p *deadlineProbe) handle(ctx context.Context, _ *nano.Request) ([]byte, error) {
	p.runs.Add(1)
	at, ok := ctx.Deadline()
	p.seen <- deadlineSeen{at, ok}
	return []byte(`"seen"`), nil
}

// next returns the deadline the handler saw for the next message.
func (p *deadlineProbe) next(t *testing.T) deadlineSeen {
	t.Helper()
	select {
	case d := <-p.seen:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not run within 5 s")
		return deadlineSeen{}
	}
}

// TestNanoTimeoutRefused: the server and the service refuse with 400,
// without running the handler, a Nano-Timeout that is not one field of 1
// to 10 digits, and accept one that is.
func TestNanoTimeoutRefused(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	p := newDeadlineProbe()
	_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{"role:budget": p.handle})
	for _, target := range []struct{ name, addr string }{{"server", addr}, {"service", svcAddr}} {
		for _, tc := range []struct {
			name   string
			values []string
			want   int
		}{
			{"letters", []string{"abc"}, http.StatusBadRequest},
			{"negative", []string{"-5"}, http.StatusBadRequest},
			{"fraction", []string{"1.5"}, http.StatusBadRequest},
			{"exponent", []string{"1e3"}, http.StatusBadRequest},
			{"plus sign", []string{"+5"}, http.StatusBadRequest},
			{"with a unit", []string{"100ms"}, http.StatusBadRequest},
			{"empty", []string{""}, http.StatusBadRequest},
			{"eleven digits", []string{"10000000000"}, http.StatusBadRequest},
			{"two fields", []string{"100", "200"}, http.StatusBadRequest},
			{"a list in one field", []string{"100, 200"}, http.StatusBadRequest},
			{"ten digits", []string{"9999999999"}, http.StatusOK},
			{"leading zeros", []string{"0005000"}, http.StatusOK},
			{"five seconds", []string{"5000"}, http.StatusOK},
		} {
			t.Run(target.name+"/"+tc.name, func(t *testing.T) {
				before := p.runs.Load()
				status, body := do(t, http.MethodPost, "http://"+target.addr+"/", `{"Pattern":"role:budget"}`, http.Header{"Nano-Timeout": tc.values})
				if status != tc.want {
					t.Fatalf("Nano-Timeout %q: %d %s; want %d", tc.values, status, body, tc.want)
				}
				runs := p.runs.Load() - before
				if tc.want != http.StatusOK {
					errorBody(t, body)
					if runs != 0 {
						t.Errorf("the handler ran %d times for a refused message", runs)
					}
					return
				}
				if runs != 1 {
					t.Errorf("the handler ran %d times; want 1", runs)
				}
				if d := p.next(t); !d.ok {
					t.Errorf("the handler's context has no deadline")
				}
			})
		}
	}
}

// TestSpentBudget: a message whose time is up when a server or a service
// gets to it, because it came with "Nano-Timeout: 0" or because its
// budget passed while its body arrived, is answered with 504 and its
// handler does not run.
func TestSpentBudget(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	p := newDeadlineProbe()
	_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{"role:spent": p.handle})
	const msg = `{"Pattern":"role:spent"}`
	zero := func(target string) func(t *testing.T) (int, string) {
		return func(t *testing.T) (int, string) {
			return do(t, http.MethodPost, "http://"+target+"/", msg, http.Header{"Nano-Timeout": {"0"}})
		}
	}
	slow := func(target string) func(t *testing.T) (int, string) {
		return func(t *testing.T) (int, string) {
			return postSlowly(t, target, http.Header{"Nano-Timeout": {"30"}}, msg, 150*time.Millisecond)
		}
	}
	for _, tc := range []struct {
		name string
		send func(t *testing.T) (int, string)
	}{
		{"server/Nano-Timeout 0", zero(addr)},
		{"service/Nano-Timeout 0", zero(svcAddr)},
		{"server/the budget passes while the body arrives", slow(addr)},
		{"service/the budget passes while the body arrives", slow(svcAddr)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := p.runs.Load()
			status, body := tc.send(t)
			if status != http.StatusGatewayTimeout {
				t.Fatalf("got %d %s; want 504", status, body)
			}
			errorBody(t, body)
			if runs := p.runs.Load() - before; runs != 0 {
				t.Errorf("the handler ran %d times for a message whose time was up", runs)
			}
		})
	}
	// The same budget with time to spare is served: the 504s above are
	// the budget's doing.
	if status, body := postSlowly(t, addr, http.Header{"Nano-Timeout": {"5000"}}, msg, 150*time.Millisecond); status != http.StatusOK {
		t.Fatalf("with time to spare: %d %s; want 200", status, body)
	}
}

// TestSpentBudgetAtTheNextHop: a handler that calls on with its context
// after the call's deadline passed gets context.DeadlineExceeded, and the
// next service's handler does not run, whether the call would go to a
// cached peer or through the server. The first caller, whose deadline it
// was, gets context.DeadlineExceeded too, though the handler's answer
// with its Act's error may reach it before its own deadline fires.
func TestSpentBudgetAtTheNextHop(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	for i, path := range actPaths {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			b := newDeadlineProbe()
			patternB := fmt.Sprintf("role:next,hop:%d", i)
			startHandlers(t, addr, map[string]nano.Handler{patternB: b.handle})
			var a atomic.Pointer[nano.Service]
			actErr := make(chan error, 1)
			patternA := fmt.Sprintf("role:first,hop:%d", i)
			svcA, _ := startHandlers(t, addr, map[string]nano.Handler{
				patternA: func(ctx context.Context, req *nano.Request) ([]byte, error) {
					late := strings.Contains(string(req.Body), "late")
					if late {
						<-ctx.Done()
					}
					out, err := a.Load().ActContext(ctx, []byte(`{"Pattern":"`+patternB+`"}`), patternB)
					if late {
						actErr <- err
					}
					return out, err
				},
			}, func(o *nano.ServiceOptions) { o.PeerTTL = path.peerTTL })
			a.Store(svcA)
			c := newClient(t, nano.ClientOptions{Server: addr, Timeout: 5 * time.Second})
			// A first call resolves B's peers, so that the late one would
			// go straight to B.
			if _, err := c.Act([]byte(`{"Pattern":"`+patternA+`"}`), patternA); err != nil {
				t.Fatal(err)
			}
			b.next(t)
			before := b.runs.Load()

			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			if _, err := c.ActContext(ctx, []byte(`{"Pattern":"`+patternA+`","late":true}`), patternA); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("the caller got %v; want context.DeadlineExceeded", err)
			}
			select {
			case err := <-actErr:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("the handler's late ActContext returned %v; want context.DeadlineExceeded", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler's late ActContext had not returned after 5 s")
			}
			if runs := b.runs.Load() - before; runs != 0 {
				t.Errorf("the next handler ran %d times for a call whose time was up", runs)
			}
		})
	}
}

// TestHandlerDeadline: the deadline of a Handler's context is the
// Nano-Timeout the message came with, through the server or straight to
// the service, bounded by the server's UpstreamTimeout and by the Act
// caller's Timeout; a message without one, sent straight to the service,
// has none.
func TestHandlerDeadline(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	_, bounded := startServer(t, nano.ServerOptions{UpstreamTimeout: time.Second})
	p := newDeadlineProbe()
	const pattern = "role:deadline"
	_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{pattern: p.handle})
	registerAt(t, bounded, pattern, svcAddr)
	waitRegistered(t, bounded, pattern)
	const msg = `{"Pattern":"` + pattern + `"}`

	raw := func(target, timeout string) func(t *testing.T) {
		return func(t *testing.T) {
			h := http.Header{}
			if timeout != "" {
				h.Set("Nano-Timeout", timeout)
			}
			if status, body := do(t, http.MethodPost, "http://"+target+"/", msg, h); status != http.StatusOK {
				t.Fatalf("%d %s", status, body)
			}
		}
	}
	act := func(t *testing.T) {
		c := newClient(t, nano.ClientOptions{Server: addr, Timeout: time.Second})
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if _, err := c.ActContext(ctx, []byte(msg), pattern); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		send   func(t *testing.T)
		budget time.Duration // 0: no deadline
	}{
		{"through the server, Nano-Timeout", raw(addr, "2000"), 2 * time.Second},
		{"to the service, Nano-Timeout", raw(svcAddr, "2000"), 2 * time.Second},
		{"through the server, UpstreamTimeout shorter than Nano-Timeout", raw(bounded, "9000"), time.Second},
		{"through the server, UpstreamTimeout without Nano-Timeout", raw(bounded, ""), time.Second},
		{"through the server, Nano-Timeout shorter than UpstreamTimeout", raw(bounded, "700"), 700 * time.Millisecond},
		{"act, its Timeout shorter than its context", act, time.Second},
		{"to the service, no Nano-Timeout", raw(svcAddr, ""), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent := time.Now()
			tc.send(t)
			answered := time.Now()
			d := p.next(t)
			if tc.budget == 0 {
				if d.ok {
					t.Fatalf("the handler's context has a deadline %v after the message was sent; want none", d.at.Sub(sent))
				}
				return
			}
			const slack = 500 * time.Millisecond
			if !d.ok {
				t.Fatal("the handler's context has no deadline")
			}
			if d.at.After(answered.Add(tc.budget)) || d.at.Before(sent.Add(tc.budget-slack)) {
				t.Errorf("the handler's deadline is %v after the message was sent; want %v (the call took %v)",
					d.at.Sub(sent).Round(time.Millisecond), tc.budget, answered.Sub(sent).Round(time.Microsecond))
			}
		})
	}
}

// TestDeadlineNoLaterThanTheCaller: the deadline of the handler at the end
// of a chain of calls is never later than the deadline of the first
// caller's context, nor much earlier: after one hop (ActContext to a
// service, directly or through the server) and after three (ActContext
// through the server to service A, whose handler calls service B with
// ActContext and its own context). Each chain is called many times, as
// the time lost in rounding to milliseconds differs from call to call;
// a call or two whose message was held up in transit may be late.
func TestDeadlineNoLaterThanTheCaller(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	const calls = 100
	for i, tc := range []struct {
		name    string
		hops    int
		peerTTL time.Duration // of the caller of the last service
	}{
		{"one hop, act direct", 1, 0},
		{"one hop, act through the server", 1, -1},
		{"three hops, A acts direct", 3, 0},
		{"three hops, A acts through the server", 3, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newDeadlineProbe()
			patternB := fmt.Sprintf("role:chain,b:%d", i)
			startHandlers(t, addr, map[string]nano.Handler{patternB: b.handle})
			first := patternB
			clientTTL := tc.peerTTL
			a := newDeadlineProbe()
			if tc.hops == 3 {
				first, clientTTL = fmt.Sprintf("role:chain,a:%d", i), -1
				var svcA atomic.Pointer[nano.Service]
				s, _ := startHandlers(t, addr, map[string]nano.Handler{
					first: func(ctx context.Context, req *nano.Request) ([]byte, error) {
						a.handle(ctx, req)
						return svcA.Load().ActContext(ctx, []byte(`{"Pattern":"`+patternB+`"}`), patternB)
					},
				}, func(o *nano.ServiceOptions) { o.PeerTTL = tc.peerTTL })
				svcA.Store(s)
			}
			c := newClient(t, nano.ClientOptions{Server: addr, PeerTTL: clientTTL, Timeout: 10 * time.Second})
			var late, lateA, early int
			var latest time.Duration
			for range calls {
				ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
				deadline, _ := ctx.Deadline()
				_, err := c.ActContext(ctx, []byte(`{"Pattern":"`+first+`"}`), first)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if tc.hops == 3 {
					if d := a.next(t); !d.ok || d.at.After(deadline) {
						lateA++
					}
				}
				d := b.next(t)
				switch {
				case !d.ok:
					t.Fatal("the last handler's context has no deadline")
				case d.at.After(deadline):
					late++
					latest = max(latest, d.at.Sub(deadline))
				case d.at.Before(deadline.Add(-time.Second)):
					early++
				}
			}
			// A budget is relative: a message that spends longer in transit
			// than the allowance taken off for it (a machine loaded by the
			// race detector and parallel tests) lands a deadline that much
			// later. Without the allowance, or with the budget rounded up,
			// nearly every call would be late; an odd one a few
			// milliseconds late is the machine's.
			if late+lateA > calls/50 || latest > 50*time.Millisecond {
				t.Errorf("%d of %d calls gave the last handler a deadline later than the caller's (the latest by %v); %d gave service A one",
					late, calls, latest, lateA)
			}
			if early > 0 {
				t.Errorf("%d of %d calls gave the last handler a deadline over 1 s earlier than the caller's", early, calls)
			}
		})
	}
}

// budgetTransport carries calls as its RoundTripper does, but with the
// budget it holds in Nano-Timeout, whatever the caller's context says: "0"
// sends every message with its time up, as if it had passed on the way.
type budgetTransport struct {
	http.RoundTripper
	budget string
}

func (b budgetTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost {
		r = r.Clone(r.Context())
		r.Header.Set("Nano-Timeout", b.budget)
	}
	return b.RoundTripper.RoundTrip(r)
}

// withBudget returns a client of the server at addr whose calls carry
// budget in Nano-Timeout (see budgetTransport).
func withBudget(t *testing.T, addr string, peerTTL time.Duration, budget string) *nano.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return newClient(t, nano.ClientOptions{Server: addr, PeerTTL: peerTTL, Timeout: 5 * time.Second, Transport: budgetTransport{tr, budget}})
}

// TestActDeadlineErrors: ActContext returns an error that unwraps to
// context.DeadlineExceeded (and ErrTimeout) when its context's deadline
// passes while the handler works, whether the handler goes on working or
// gives up with its context's error as its deadline passes, and when the
// far side answers 504: the server's UpstreamTimeout passed, or the
// budget was spent when the message reached the server or the service.
func TestActDeadlineErrors(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	_, bounded := startServer(t, nano.ServerOptions{UpstreamTimeout: 150 * time.Millisecond})

	// slow works on for a while after its deadline; a held handler gives
	// up at once, returning ctx.Err().
	const slow = 300 * time.Millisecond
	ctxDeadline := func(path callPath) func(t *testing.T, pattern string, h *heldHandler) error {
		return func(t *testing.T, pattern string, h *heldHandler) error {
			c := newClient(t, nano.ClientOptions{Server: addr, PeerTTL: path.peerTTL, Timeout: 5 * time.Second})
			ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
			defer cancel()
			_, err := c.ActContext(ctx, []byte(`{"Pattern":"`+pattern+`"}`), pattern)
			// Its deadline, or the caller hanging up at its own: which
			// comes first is TestDeadlineNoLaterThanTheCaller's concern.
			h.waitEnded(t)
			return err
		}
	}
	upstream := func(t *testing.T, pattern string, h *heldHandler) error {
		c := newClient(t, nano.ClientOptions{Server: bounded, PeerTTL: -1, Timeout: 5 * time.Second})
		_, err := c.ActContext(t.Context(), []byte(`{"Pattern":"`+pattern+`"}`), pattern)
		return err
	}
	spent := func(path callPath) func(t *testing.T, pattern string, h *heldHandler) error {
		return func(t *testing.T, pattern string, h *heldHandler) error {
			c := withBudget(t, addr, path.peerTTL, "0")
			_, err := c.ActContext(t.Context(), []byte(`{"Pattern":"`+pattern+`"}`), pattern)
			if runs := h.runs.Load(); runs != 0 {
				t.Errorf("the handler ran %d times for a message whose time was up", runs)
			}
			return err
		}
	}
	// The service's deadline passes while the caller's context has time
	// left: only the service's answer can tell the caller.
	shorter := func(t *testing.T, pattern string, h *heldHandler) error {
		c := withBudget(t, addr, 0, "100")
		_, err := c.ActContext(t.Context(), []byte(`{"Pattern":"`+pattern+`"}`), pattern)
		h.waitEnded(t)
		return err
	}
	for i, tc := range []struct {
		name    string
		call    func(t *testing.T, pattern string, h *heldHandler) error
		linger  time.Duration // how long the handler works on after its context ended
		far504  bool          // the error is the far side's 504
		bounded bool          // the service is registered at the bounded server
	}{
		{"act direct, the deadline passes, the handler works on", ctxDeadline(actPaths[0]), slow, false, false},
		{"act through the server, the deadline passes, the handler works on", ctxDeadline(actPaths[1]), slow, false, false},
		{"act direct, the deadline passes, the handler returns ctx.Err()", ctxDeadline(actPaths[0]), 0, false, false},
		{"act through the server, the deadline passes, the handler returns ctx.Err()", ctxDeadline(actPaths[1]), 0, false, false},
		{"act direct, the service's budget passes first, the handler returns ctx.Err()", shorter, 0, true, false},
		{"the server's UpstreamTimeout passes", upstream, slow, true, true},
		{"the service gets a spent budget", spent(actPaths[0]), 0, true, false},
		{"the server gets a spent budget", spent(actPaths[1]), 0, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHeldHandler()
			h.linger = tc.linger
			pattern := fmt.Sprintf("role:late,case:%d", i)
			_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{pattern: h.handle})
			if tc.bounded {
				registerAt(t, bounded, pattern, svcAddr)
				waitRegistered(t, bounded, pattern)
			}
			start := time.Now()
			err := tc.call(t, pattern, h)
			if elapsed := time.Since(start); elapsed >= time.Second {
				t.Errorf("the call returned after %v; want it soon after its deadline", elapsed.Round(time.Millisecond))
			}
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, nano.ErrTimeout) {
				t.Fatalf("got %v; want an error that unwraps to context.DeadlineExceeded and ErrTimeout", err)
			}
			if e, ok := errors.AsType[*nano.Error](err); tc.far504 && (!ok || e.Status != http.StatusGatewayTimeout) {
				t.Errorf("got %v; want the far side's 504 as an *Error", err)
			}
		})
	}
}

// TestHandlerGivesUpAtItsDeadline: a handler that returns its context's
// error when the call's deadline passes is answered as a call whose time
// ran out, 504 with a JSON error body, not as a handler failure.
func TestHandlerGivesUpAtItsDeadline(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	h := newHeldHandler()
	_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{"role:giveup": h.handle})
	status, body := do(t, http.MethodPost, "http://"+svcAddr+"/", `{"Pattern":"role:giveup"}`, http.Header{"Nano-Timeout": {"100"}})
	if err := h.waitEnded(t); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the handler's context ended with %v; want context.DeadlineExceeded", err)
	}
	if status != http.StatusGatewayTimeout {
		t.Errorf("got %d %s; want 504", status, body)
	}
	errorBody(t, body)
}

// budgetRecorder is a plain net/http service that records the
// Nano-Timeout fields of each message and answers as a nano service does.
type budgetRecorder struct {
	addr string
	seen chan []string
}

func startBudgetRecorder(t *testing.T) *budgetRecorder {
	t.Helper()
	r := &budgetRecorder{seen: make(chan []string, 16)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		r.seen <- req.Header.Values("Nano-Timeout")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Nano-Service", "role:wire")
		io.WriteString(w, `"seen"`)
	}))
	t.Cleanup(ts.Close)
	r.addr = ts.Listener.Addr().String()
	return r
}

// next returns the Nano-Timeout fields of the next message.
func (r *budgetRecorder) next(t *testing.T) []string {
	t.Helper()
	select {
	case v := <-r.seen:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("no message reached the service within 5 s")
		return nil
	}
}

// TestNanoTimeoutOnTheWire: ActContext sends the time left to its
// context in whole milliseconds, rounded down, and none when its context
// has no deadline and the client no Timeout; a server passes on the time
// left of the budget it received, never more, and none when it received
// none and has no UpstreamTimeout.
// transit is what each hop takes off the budget it passes on, for the time
// the message spends on the way to the next one.
const transit = 5 * time.Millisecond

func TestNanoTimeoutOnTheWire(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: -1})
	rec := startBudgetRecorder(t)
	const pattern = "role:wire"
	registerAt(t, addr, pattern, rec.addr)
	waitRegistered(t, addr, pattern)
	const msg = `{"Pattern":"` + pattern + `"}`

	// The deadline is half a millisecond past a whole number of them, so
	// that rounding up would show.
	const budget = 2*time.Second + 500*time.Microsecond
	act := func(path callPath, timeout time.Duration, deadline bool) func(t *testing.T) (time.Duration, time.Duration) {
		return func(t *testing.T) (before, after time.Duration) {
			c := newClient(t, nano.ClientOptions{Server: addr, PeerTTL: path.peerTTL, Timeout: timeout})
			ctx := t.Context()
			if deadline {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, budget)
				defer cancel()
			}
			d, _ := ctx.Deadline()
			before = time.Until(d)
			if _, err := c.ActContext(ctx, []byte(msg), pattern); err != nil {
				t.Fatal(err)
			}
			return before, time.Until(d)
		}
	}
	raw := func(t *testing.T) (time.Duration, time.Duration) {
		sent := time.Now()
		if status, body := do(t, http.MethodPost, "http://"+addr+"/", msg, http.Header{"Nano-Timeout": {"1500"}}); status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		return 1500 * time.Millisecond, 1500*time.Millisecond - time.Since(sent)
	}
	for _, tc := range []struct {
		name      string
		call      func(t *testing.T) (before, after time.Duration) // the time left before and after the call
		roundings int                                              // how many times the budget was rounded down on the way
	}{
		{"act direct", act(actPaths[0], -1, true), 1},
		{"act through the server", act(actPaths[1], -1, true), 2},
		{"act direct, no deadline, no Timeout", act(actPaths[0], -1, false), 0},
		{"act through the server, no deadline, no Timeout", act(actPaths[1], -1, false), 0},
		{"curl through the server", raw, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, after := tc.call(t)
			got := rec.next(t)
			if tc.roundings == 0 {
				if len(got) != 0 {
					t.Fatalf("Nano-Timeout %q sent for a call without a deadline", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("Nano-Timeout %q; want one field", got)
			}
			ms, err := strconv.ParseInt(got[0], 10, 64)
			if err != nil {
				t.Fatalf("Nano-Timeout %q: %v", got[0], err)
			}
			// Each hop takes 5 ms off for the time in transit, and each
			// rounding down after the first may take up to a millisecond
			// more than the time that passed.
			least := (after - time.Duration(tc.roundings)*transit - time.Duration(tc.roundings-1)*time.Millisecond).Milliseconds()
			if ms > (before-transit).Milliseconds() || ms < least {
				t.Errorf("Nano-Timeout %d ms; want the time left when it was sent, less %v a hop, rounded down: from %v to %v", ms, transit, after, before)
			}
		})
	}
}

// TestServerBoundsTheCall: a server answers 504 when the budget of a
// message, or its UpstreamTimeout, passes before the service answers,
// without waiting for a handler that works on.
func TestServerBoundsTheCall(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{UpstreamTimeout: 5 * time.Second})
	_, bounded := startServer(t, nano.ServerOptions{UpstreamTimeout: 200 * time.Millisecond})
	h := newHeldHandler()
	h.linger = 600 * time.Millisecond
	_, svcAddr := startHandlers(t, addr, map[string]nano.Handler{"role:linger": h.handle})
	registerAt(t, bounded, "role:linger", svcAddr)
	waitRegistered(t, bounded, "role:linger")
	for _, tc := range []struct {
		name, server string
		header       http.Header
	}{
		{"Nano-Timeout", addr, http.Header{"Nano-Timeout": {"200"}}},
		{"UpstreamTimeout", bounded, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			status, body := do(t, http.MethodPost, "http://"+tc.server+"/", `{"Pattern":"role:linger"}`, tc.header)
			elapsed := time.Since(start)
			if status != http.StatusGatewayTimeout {
				t.Fatalf("got %d %s; want 504", status, body)
			}
			errorBody(t, body)
			if elapsed < 200*time.Millisecond || elapsed >= 550*time.Millisecond {
				t.Errorf("the 504 came after %v; want it soon after 200 ms", elapsed.Round(time.Millisecond))
			}
		})
	}
}
