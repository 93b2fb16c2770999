package nano_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Tests of ServiceOptions.Middleware.

type trailKey struct{}

// mark is a middleware that adds its name to the trail the context
// carries before the handler runs, and wraps the answer in "name(...)"
// after.
func mark(name string) func(nano.Handler) nano.Handler {
	return func(next nano.Handler) nano.Handler {
		return func(ctx context.Context, req *nano.Request) ([]byte, error) {
			trail, _ := ctx.Value(trailKey{}).([]string)
			ctx = context.WithValue(ctx, trailKey{}, append(slices.Clone(trail), name))
			out, err := next(ctx, req)
			if err != nil {
				return nil, err
			}
			return []byte(name + "(" + string(out) + ")"), nil
		}
	}
}

// requireToken is a middleware that refuses, with 401, a message whose
// request lacks the token in its Authorization field.
func requireToken(next nano.Handler) nano.Handler {
	return func(ctx context.Context, req *nano.Request) ([]byte, error) {
		if req.Header.Get("Authorization") != "Bearer open-sesame" {
			return nil, &nano.Error{Status: http.StatusUnauthorized, Message: "who goes there?"}
		}
		return next(ctx, req)
	}
}

// resolveAddr returns the address of the one instance the server at
// serverAddr resolves pattern to.
func resolveAddr(t *testing.T, serverAddr, pattern string) string {
	t.Helper()
	status, body := do(t, http.MethodGet, "http://"+serverAddr+"/resolve?pattern="+url.QueryEscape(pattern), "", nil)
	var res struct {
		Instances []struct{ ServiceAddress string }
	}
	if err := json.Unmarshal([]byte(body), &res); status != http.StatusOK || err != nil || len(res.Instances) != 1 {
		t.Fatalf("resolve %s: %d %s", pattern, status, body)
	}
	return res.Instances[0].ServiceAddress
}

// TestMiddleware: the service's middleware wraps every handler, those set
// with HandleContext, Handle and Add, the first of the slice outermost: it
// runs first and sees the answer last. A middleware sees the request's
// header and can refuse a message with an *Error of its choosing, and the
// handler then does not run.
func TestMiddleware(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	middleware := []func(nano.Handler) nano.Handler{mark("outer"), mark("inner"), requireToken}
	withMiddleware := func(o *nano.ServiceOptions) { o.Middleware = middleware }
	var runs atomic.Int64
	svc, svcAddr := startHandlers(t, addr, map[string]nano.Handler{
		"role:mw,kind:context": func(ctx context.Context, _ *nano.Request) ([]byte, error) {
			runs.Add(1)
			trail, _ := ctx.Value(trailKey{}).([]string)
			return []byte("context:" + strings.Join(trail, ",")), nil
		},
	}, withMiddleware)
	if err := svc.Handle("role:mw,kind:plain", func([]byte) ([]byte, error) {
		runs.Add(1)
		return []byte("plain"), nil
	}); err != nil {
		t.Fatal(err)
	}

	// A service of the original's kind, whose Add blocks while it serves.
	added, err := nano.NewServiceWithOptions(nano.ServiceOptions{
		Addr: "127.0.0.1:0", ListenAddr: "127.0.0.1:0", Server: addr, Logger: testLogger(), Middleware: middleware,
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		added.Add("role:mw,kind:add", func([]byte) ([]byte, error) {
			runs.Add(1)
			return []byte("add"), nil
		})
	}()
	t.Cleanup(func() {
		added.Shutdown(context.Background())
		<-served
	})
	waitRegistered(t, addr, "role:mw,kind:plain", "role:mw,kind:add")
	addedAddr := resolveAddr(t, addr, "role:mw,kind:add")

	token := http.Header{"Authorization": {"Bearer open-sesame"}}
	for _, h := range []struct {
		kind, to, answer string
	}{
		{"context", svcAddr, "outer(inner(context:outer,inner))"},
		{"plain", svcAddr, "outer(inner(plain))"},
		{"add", addedAddr, "outer(inner(add))"},
	} {
		msg := `{"Pattern":"role:mw,kind:` + h.kind + `"}`
		t.Run(h.kind+"/wrapped, in order", func(t *testing.T) {
			for _, to := range []string{addr, h.to} {
				status, body := do(t, http.MethodPost, "http://"+to+"/", msg, token)
				if status != http.StatusOK || body != h.answer {
					t.Errorf("got %d %q; want %q", status, body, h.answer)
				}
			}
		})
		t.Run(h.kind+"/refused without the token", func(t *testing.T) {
			before := runs.Load()
			for _, to := range []string{addr, h.to} {
				status, body := do(t, http.MethodPost, "http://"+to+"/", msg, http.Header{"Authorization": {"Bearer guess"}})
				if status != http.StatusUnauthorized || errorBody(t, body) != "who goes there?" {
					t.Errorf("got %d %s; want 401 who goes there?", status, body)
				}
			}
			c := newClient(t, nano.ClientOptions{Server: addr, Timeout: 5 * time.Second})
			_, err := c.Act([]byte(msg), "role:mw,kind:"+h.kind)
			if e, ok := errors.AsType[*nano.Error](err); !ok || e.Status != http.StatusUnauthorized || e.Message != "who goes there?" {
				t.Errorf("Act got %v; want the middleware's 401", err)
			}
			if n := runs.Load() - before; n != 0 {
				t.Errorf("the handler ran %d times for refused messages", n)
			}
		})
	}
}
