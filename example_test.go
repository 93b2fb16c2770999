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
	"strings"
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
		resp, err := http.Post(serverURL, "application/json", strings.NewReader(`{"Pattern":"`+p+`"}`))
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

	resp, err := http.Post(serverURL, "application/json", strings.NewReader(`{"Pattern":"role:math,cmd:sqrt","Value":-4}`))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.StatusCode, " ", string(body))
	// Output: 422 {"error":"no square root of a negative number"}
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
