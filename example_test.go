package nano_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	nano "github.com/domWinter/go-nano"
)

// A nano server with the embedded registry, a service registered at it,
// and a message routed through the server.
func Example() {
	quiet := slog.New(slog.DiscardHandler)
	server, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer server.Shutdown(context.Background())
	ts := httptest.NewServer(server.Handler())
	defer ts.Close()

	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{
		Addr:   "127.0.0.1:0", // advertise the port of the listener below
		Server: ts.Listener.Addr().String(),
		Logger: quiet,
	})
	if err != nil {
		panic(err)
	}
	defer svc.Shutdown(context.Background())
	svc.Handle("role:math,cmd:sum", func(msg []byte) ([]byte, error) {
		var m struct{ Left, Right int }
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int{"Result": m.Left + m.Right})
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go svc.Serve(l)
	waitRouted(ts.URL, "role:math,cmd:sum")

	resp, err := http.Post(ts.URL, "application/json",
		strings.NewReader(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 {"Result":3}
}

// Patterns match by whole fields, and the longest registered pattern wins.
func ExampleService_Handle() {
	serverURL, cleanup := exampleSystem(map[string]nano.HandlerFunc{
		"role:math,cmd:sum":             func([]byte) ([]byte, error) { return []byte(`"sum"`), nil },
		"role:math,cmd:sum,return:zero": func([]byte) ([]byte, error) { return []byte(`"zero"`), nil },
	})
	defer cleanup()

	for _, p := range []string{
		"role:math,cmd:sum",
		"role:math,cmd:sum,return:zero",
		"role:math,cmd:sum,verbose:true",
		"role:math,cmd:summary",
	} {
		resp, err := postJSON(serverURL, `{"Pattern":"`+p+`"}`)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%-32s %d %s", p, resp.StatusCode, strings.TrimSpace(string(body))+"\n")
	}
	// Output:
	// role:math,cmd:sum                200 "sum"
	// role:math,cmd:sum,return:zero    200 "zero"
	// role:math,cmd:sum,verbose:true   200 "sum"
	// role:math,cmd:summary            404 {"error":"nano: no service matches the pattern \"role:math,cmd:summary\""}
}

// A program that is not a service calls services with a Client. The first
// call goes through the server; the next ones go to the service directly.
func ExampleClient_Act() {
	serverURL, cleanup := exampleSystem(map[string]nano.HandlerFunc{
		"role:math,cmd:positive": func(msg []byte) ([]byte, error) {
			var m struct{ Value int }
			if err := json.Unmarshal(msg, &m); err != nil {
				return nil, err
			}
			return json.Marshal(map[string]bool{"Result": m.Value > 0})
		},
	})
	defer cleanup()

	client, err := nano.NewClient(nano.ClientOptions{Server: strings.TrimPrefix(serverURL, "http://")})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	for _, v := range []int{-1, 1} {
		msg := fmt.Sprintf(`{"Pattern":"role:math,cmd:positive","Value":%d}`, v)
		answer, err := client.Act([]byte(msg), "role:math,cmd:positive")
		fmt.Println(string(answer), err)
	}
	_, err = client.Act([]byte(`{"Pattern":"role:math,cmd:negative"}`), "role:math,cmd:negative")
	fmt.Println(errors.Is(err, nano.ErrNoService))
	// Output:
	// {"Result":false} <nil>
	// {"Result":true} <nil>
	// true
}

// A handler chooses the status of its error answer with an *Error.
func ExampleError() {
	serverURL, cleanup := exampleSystem(map[string]nano.HandlerFunc{
		"role:math,cmd:sqrt": func(msg []byte) ([]byte, error) {
			return nil, &nano.Error{Status: http.StatusUnprocessableEntity, Message: "no square root of a negative number"}
		},
	})
	defer cleanup()

	resp, err := postJSON(serverURL, `{"Pattern":"role:math,cmd:sqrt","Value":-4}`)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.StatusCode, " ", string(body))
	// Output: 422 {"error":"no square root of a negative number"}
}

// postJSON posts a message to url as curl or a browser would: with an
// Accept field, so that an error comes as a JSON body. (A request with Go's
// default User-Agent and no Accept field looks like the original
// library's Act, and gets its errors as text; see docs/migrating.md.)
func postJSON(url, msg string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(msg))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return http.DefaultClient.Do(req)
}

// exampleSystem runs a server on the embedded registry and one service
// with the handlers, waits for their registration and returns the server's
// URL and a function that stops both.
func exampleSystem(handlers map[string]nano.HandlerFunc) (string, func()) {
	quiet := slog.New(slog.DiscardHandler)
	server, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: quiet})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(server.Handler())
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:0", Server: ts.Listener.Addr().String(), Logger: quiet})
	if err != nil {
		panic(err)
	}
	for p, h := range handlers {
		if err := svc.Handle(p, h); err != nil {
			panic(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go svc.Serve(l)
	for p := range handlers {
		waitRouted(ts.URL, p)
	}
	return ts.URL, func() {
		svc.Shutdown(context.Background())
		ts.Close()
		server.Shutdown(context.Background())
	}
}

// waitRouted waits until the server at url routes pattern somewhere, as
// services register in the background.
func waitRouted(url, pattern string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		resp, err := http.Post(url, "application/json", strings.NewReader(`{"Pattern":"`+pattern+`"}`))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				return
			}
		}
	}
	panic("pattern " + pattern + " was not registered")
}

// A Handler gets the message's context and request: the context ends with
// the caller's deadline, which travels with the call, and the request
// holds the matched pattern and the header of the call.
func ExampleService_HandleContext() {
	serverAddr, svc, cleanup := exampleServer(nano.ServiceOptions{})
	defer cleanup()
	svc.HandleContext("role:clock", func(ctx context.Context, req *nano.Request) ([]byte, error) {
		deadline, ok := ctx.Deadline()
		left := time.Until(deadline).Round(time.Second)
		return json.Marshal(map[string]any{"Pattern": req.Pattern, "HasDeadline": ok, "Left": left.String()})
	})
	waitResolved(serverAddr, "role:clock")

	client, err := nano.NewClient(nano.ClientOptions{Server: serverAddr})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	answer, err := client.ActContext(ctx, []byte(`{"Pattern":"role:clock,unit:s"}`), "role:clock,unit:s")
	fmt.Println(string(answer), err)
	// Output: {"HasDeadline":true,"Left":"5s","Pattern":"role:clock"} <nil>
}

// A call whose deadline passes unwraps to context.DeadlineExceeded,
// wherever the deadline struck.
func ExampleClient_ActContext() {
	serverAddr, svc, cleanup := exampleServer(nano.ServiceOptions{})
	defer cleanup()
	svc.HandleContext("role:slow", func(ctx context.Context, _ *nano.Request) ([]byte, error) {
		<-ctx.Done() // the handler's context ends with the caller's deadline
		return nil, ctx.Err()
	})
	waitResolved(serverAddr, "role:slow")

	client, err := nano.NewClient(nano.ClientOptions{Server: serverAddr})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = client.ActContext(ctx, []byte(`{"Pattern":"role:slow"}`), "role:slow")
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output: true
}

// Middleware runs around every handler of a service, the first given
// outermost: here a log of each call, then a check of a header.
func ExampleServiceOptions_middleware() {
	logCalls := func(next nano.Handler) nano.Handler {
		return func(ctx context.Context, req *nano.Request) ([]byte, error) {
			out, err := next(ctx, req)
			fmt.Println("called", req.Pattern, "error:", err != nil)
			return out, err
		}
	}
	requireUser := func(next nano.Handler) nano.Handler {
		return func(ctx context.Context, req *nano.Request) ([]byte, error) {
			if req.Header.Get("X-User") == "" {
				return nil, &nano.Error{Status: http.StatusUnauthorized, Message: "who are you?"}
			}
			return next(ctx, req)
		}
	}
	serverAddr, svc, cleanup := exampleServer(nano.ServiceOptions{
		Middleware: []func(nano.Handler) nano.Handler{logCalls, requireUser},
	})
	defer cleanup()
	svc.Handle("role:greet", func([]byte) ([]byte, error) { return []byte(`"hello"`), nil })
	waitResolved(serverAddr, "role:greet")

	for _, user := range []string{"", "ada"} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+serverAddr+"/", strings.NewReader(`{"Pattern":"role:greet"}`))
		req.Header.Set("Accept", "application/json")
		if user != "" {
			req.Header.Set("X-User", user)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, strings.TrimSpace(string(body)))
	}
	// Output:
	// called role:greet error: true
	// 401 {"error":"who are you?"}
	// called role:greet error: false
	// 200 "hello"
}

// HandleJSON and ActJSON spare handlers and callers the encoding: a
// message that does not decode is refused with 400, naming the field.
func ExampleHandleJSON() {
	serverAddr, svc, cleanup := exampleServer(nano.ServiceOptions{})
	defer cleanup()
	type sum struct{ Left, Right int }
	type result struct{ Result int }
	nano.HandleJSON(svc, "role:math,cmd:sum", func(_ context.Context, in sum) (result, error) {
		return result{in.Left + in.Right}, nil
	})
	waitResolved(serverAddr, "role:math,cmd:sum")

	client, err := nano.NewClient(nano.ClientOptions{Server: serverAddr})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	out, err := nano.ActJSON[result](context.Background(), client, "role:math,cmd:sum", sum{Left: 1, Right: 2})
	fmt.Println(out.Result, err)
	_, err = client.Act([]byte(`{"Pattern":"role:math,cmd:sum","Left":"one"}`), "role:math,cmd:sum")
	fmt.Println(err)
	// Output:
	// 3 <nil>
	// nano: invalid message: field Left of the message: a JSON string, not a int (status 400)
}

// An error a handler returns reaches an Act caller as an *Error with the
// status the handler chose, and unwraps to ErrHandler: the caller tells it
// apart from the library's own refusals.
func ExampleError_handler() {
	serverAddr, svc, cleanup := exampleServer(nano.ServiceOptions{})
	defer cleanup()
	svc.Handle("role:math,cmd:sqrt", func([]byte) ([]byte, error) {
		return nil, &nano.Error{Status: http.StatusBadRequest, Message: "no square root of a negative number"}
	})
	waitResolved(serverAddr, "role:math,cmd:sqrt")

	client, err := nano.NewClient(nano.ClientOptions{Server: serverAddr})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	_, err = client.Act([]byte(`{"Pattern":"role:math,cmd:sqrt","Value":-4}`), "role:math,cmd:sqrt")
	fmt.Println(err)
	fmt.Println(errors.Is(err, nano.ErrHandler), errors.Is(err, nano.ErrInvalidMessage))
	_, err = client.Act([]byte(`{"Pattern":"role:math,cmd:sqrt","Value":}`), "role:math,cmd:sqrt")
	fmt.Println(errors.Is(err, nano.ErrHandler), errors.Is(err, nano.ErrInvalidMessage))
	// Output:
	// no square root of a negative number (status 400)
	// true false
	// false true
}

// An Observer is told of every message a server proxies, a service
// handles and Act sends, and carries what the context holds in the
// header of the next call: the hook of tracing (see the nanootel module).
func ExampleObserver() {
	var mu sync.Mutex
	var seen []string
	obs := observerFunc(func(ctx context.Context, op nano.Op, pattern string, _ http.Header) (context.Context, func(int, error)) {
		return ctx, func(status int, _ error) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprint(op, " ", pattern, " ", status))
		}
	})
	serverAddr, svc, cleanup := exampleServer(nano.ServiceOptions{Observer: obs})
	defer cleanup()
	svc.Handle("role:echo", func(msg []byte) ([]byte, error) { return msg, nil })
	waitResolved(serverAddr, "role:echo")

	if _, err := svc.ActContext(context.Background(), []byte(`{"Pattern":"role:echo"}`), "role:echo"); err != nil {
		panic(err)
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Println(strings.Join(seen, "\n"))
	// Output:
	// handle role:echo 200
	// act role:echo 200
}

// observerFunc is an Observer from a function, which injects nothing.
type observerFunc func(ctx context.Context, op nano.Op, pattern string, h http.Header) (context.Context, func(int, error))

func (f observerFunc) Start(ctx context.Context, op nano.Op, pattern string, h http.Header) (context.Context, func(int, error)) {
	return f(ctx, op, pattern, h)
}

func (observerFunc) Inject(context.Context, http.Header) {}

// A service answers GET /metrics: its handler calls by pattern and status,
// their latency, the handlers running, and its Act calls by outcome.
func ExampleService_metrics() {
	_, svc, cleanup := exampleServer(nano.ServiceOptions{})
	defer cleanup()
	svc.Handle("role:echo", func(msg []byte) ([]byte, error) { return msg, nil })
	h := svc.Handler()
	for range 2 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"Pattern":"role:echo"}`)))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(line, "nano_handler_calls_total{") || strings.HasPrefix(line, "nano_handlers_in_flight ") {
			fmt.Print(line)
		}
	}
	// Output:
	// nano_handler_calls_total{pattern="role:echo",status="200"} 2
	// nano_handlers_in_flight 0
}

// waitResolved waits until the server at addr resolves pattern, as
// services register in the background, without sending it a message.
func waitResolved(addr, pattern string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/resolve?pattern=" + url.QueryEscape(pattern))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	panic("pattern " + pattern + " was not registered")
}

// exampleServer runs a server on the embedded registry and a service with
// opts (Addr, Server and Logger filled in) that serves but has no handler
// yet; it returns the server's address, the service and a function that
// stops both.
func exampleServer(opts nano.ServiceOptions) (string, *nano.Service, func()) {
	quiet := slog.New(slog.DiscardHandler)
	server, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: quiet})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(server.Handler())
	opts.Addr, opts.Server, opts.Logger = "127.0.0.1:0", ts.Listener.Addr().String(), quiet
	svc, err := nano.NewServiceWithOptions(opts)
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go svc.Serve(l)
	return ts.Listener.Addr().String(), svc, func() {
		svc.Shutdown(context.Background())
		ts.Close()
		server.Shutdown(context.Background())
	}
}

// A server of its own: NewServerWithOptions checks the options and reads
// the registry (here the embedded one); Serve answers on a listener until
// Shutdown.
func ExampleNewServerWithOptions() {
	server, err := nano.NewServerWithOptions(nano.ServerOptions{
		Addr:   "127.0.0.1:0",
		TTL:    10 * time.Second, // services renew every 3.3 s
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go server.Serve(l)
	defer server.Shutdown(context.Background())

	resp, err := http.Get("http://" + l.Addr().String() + "/readyz")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, strings.TrimSpace(string(body)))

	_, err = nano.NewServerWithOptions(nano.ServerOptions{TTL: time.Millisecond})
	fmt.Println(errors.Is(err, nano.ErrInvalidOptions))
	// Output:
	// 200 {"status":"ready"}
	// true
}

// A handler that calls another service with Act: the first call asks the
// server where the service is, the next ones go to it directly.
func ExampleService_Act() {
	serverAddr, svc, cleanup := exampleServer(nano.ServiceOptions{})
	defer cleanup()
	svc.Handle("role:math,cmd:double", func(msg []byte) ([]byte, error) {
		var m struct{ Value int }
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, err
		}
		return json.Marshal(map[string]int{"Result": 2 * m.Value})
	})
	svc.Handle("role:math,cmd:quadruple", func(msg []byte) ([]byte, error) {
		var m struct{ Value int }
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, err
		}
		answer, err := svc.Act([]byte(fmt.Sprintf(`{"Pattern":"role:math,cmd:double","Value":%d}`, 2*m.Value)), "role:math,cmd:double")
		if err != nil {
			return nil, err
		}
		return answer, nil
	})
	waitResolved(serverAddr, "role:math,cmd:double")
	waitResolved(serverAddr, "role:math,cmd:quadruple")

	resp, err := postJSON("http://"+serverAddr, `{"Pattern":"role:math,cmd:quadruple","Value":5}`)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output: {"Result":20}
}

// Programs written for the original library build and run unchanged: a
// server on Redis (here, with no address, the embedded registry) and a
// service whose Add registers, serves and blocks.
func ExampleNewService() {
	serverPort, servicePort := examplePort(), examplePort()
	server := nano.NewServer("", "", 0, serverPort)
	go server.Listen()
	defer server.Shutdown(context.Background())

	svc := nano.NewService("127.0.0.1", servicePort, "127.0.0.1", serverPort)
	added := make(chan struct{})
	go func() {
		defer close(added)
		svc.Add("role:math,cmd:positive", func(msg []byte) ([]byte, error) {
			var m struct{ Value int }
			json.Unmarshal(msg, &m)
			return json.Marshal(map[string]bool{"Result": m.Value > 0})
		})
	}()
	waitResolved(fmt.Sprintf("127.0.0.1:%d", serverPort), "role:math,cmd:positive")

	caller := nano.NewService("127.0.0.1", examplePort(), "127.0.0.1", serverPort)
	answer, err := caller.Act([]byte(`{"Pattern":"role:math,cmd:positive","Value":1}`), "role:math,cmd:positive")
	fmt.Println(string(answer), err, svc.ServiceAddress == fmt.Sprintf("127.0.0.1:%d", servicePort), svc.Pattern)

	caller.Shutdown(context.Background())
	svc.Shutdown(context.Background())
	<-added // Add returns once the service has shut down
	// Output: {"Result":true} <nil> true role:math,cmd:positive
}

// examplePort is freePort for an Example, which has no test to fail.
func examplePort() int {
	port, err := freePort()
	if err != nil {
		panic(err)
	}
	return port
}

// A server over mutual TLS, with its certificate, key and CA bundle read
// from files (as a Kubernetes Secret mounts them) and read again when they
// change: every client must present a certificate the bundle signs, and
// each certificate identity may register only the patterns the identities
// file gives it. (Not run: it needs the files.)
func ExampleLoadTLSFiles() {
	files, err := nano.LoadTLSFiles("/etc/nano/tls/tls.crt", "/etc/nano/tls/tls.key", "/etc/nano/tls/ca.crt")
	if err != nil {
		panic(err)
	}
	ids, err := nano.LoadIdentities("/etc/nano/identities.json")
	if err != nil {
		panic(err)
	}
	server, err := nano.NewServerWithOptions(nano.ServerOptions{
		TLS:         files.ServerConfig(true), // require client certificates
		UpstreamTLS: files.ClientConfig(),     // check services' certificates, present ours
		Identities:  ids,
	})
	if err != nil {
		panic(err)
	}
	if err := server.ListenAndServe(); !errors.Is(err, nano.ErrClosed) {
		panic(err)
	}
}
