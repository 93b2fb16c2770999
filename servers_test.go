package nano_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Services and clients that name several servers: when the first stops
// answering, registrations, renewals and calls move on to the next.

// childVar, set in the environment of the test binary, makes it run as a
// program of the tests instead of running the tests (see init).
const childVar = "NANO_TEST_CHILD"

func init() {
	switch os.Getenv(childVar) {
	case "env-service":
		os.Exit(envService())
	case "env-server":
		os.Exit(envServer())
	}
}

// envServer is the test binary run as a server made by the original API's
// NewServer, with the in-memory registry, on the port NANO_TEST_SERVER_PORT,
// configured by the rest of its environment (NANO_TLS_*, NANO_IDENTITIES).
// It prints "listening" once it serves.
func envServer() int {
	port, err := strconv.Atoi(os.Getenv("NANO_TEST_SERVER_PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "NANO_TEST_SERVER_PORT:", err)
		return 2
	}
	srv := nano.NewServer("", "", 0, port)
	fmt.Println("listening")
	srv.Listen()
	return 0
}

// envService is the test binary run as a service made by the original
// API's NewService, for a test that needs NANO_SERVER_ADDRESS in the
// environment of NewService without setting it in its own: it serves
// role:env, answering {"ID":"env"}, on a loopback port, registered at the
// servers that NANO_SERVER_ADDRESS names on port NANO_TEST_SERVER_PORT,
// and prints "listening <host:port>" once it serves.
func envService() int {
	port, err := strconv.Atoi(os.Getenv("NANO_TEST_SERVER_PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "NANO_TEST_SERVER_PORT:", err)
		return 2
	}
	svc := nano.NewService("127.0.0.1", 0, "server.invalid", port)
	if err := svc.Handle("role:env", func([]byte) ([]byte, error) { return []byte(`{"ID":"env"}`), nil }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("listening", l.Addr())
	fmt.Fprintln(os.Stderr, svc.Serve(l))
	return 1
}

// listenPair listens on one port on both 127.0.0.1 and 127.0.0.2: two
// servers that NANO_SERVER_ADDRESS can name by host alone.
func listenPair(t *testing.T) (net.Listener, net.Listener) {
	t.Helper()
	for range 20 {
		first := listen(t)
		_, port, _ := net.SplitHostPort(first.Addr().String())
		second, err := net.Listen("tcp", "127.0.0.2:"+port)
		if err == nil {
			return first, second
		}
		first.Close()
	}
	t.Fatal("found no port free on both 127.0.0.1 and 127.0.0.2")
	return nil, nil
}

// TestServiceMovesToTheNextServer: two servers on one Redis with a TTL of
// 1.5 s; services that name both, by ServiceOptions.Servers and by
// NANO_SERVER_ADDRESS for the original API's NewService, register at the
// first. The first shuts down for three TTLs: every message sent through
// the second meanwhile is answered, and every Act call of a client that
// names both, first the one down; the registrations, renewed through the
// second server, stay alive in Redis.
func TestServiceMovesToTheNextServer(t *testing.T) {
	t.Parallel()
	opts := redisOptions(t, testRedis)
	opts.TTL = 1500 * time.Millisecond
	opts.ResyncInterval = 300 * time.Millisecond
	la, lb := listenPair(t)
	first := serverOn(t, opts, la)
	serverOn(t, opts, lb)
	a, b := la.Addr().String(), lb.Addr().String()
	_, port, _ := net.SplitHostPort(a)

	services := []struct {
		name, pattern, id string
		start             func(t *testing.T)
	}{
		{"ServiceOptions.Servers", "role:options", "options", func(t *testing.T) {
			startService(t, a, map[string]nano.HandlerFunc{
				"role:options": func([]byte) ([]byte, error) { return []byte(`{"ID":"options"}`), nil },
			}, func(o *nano.ServiceOptions) { o.Servers = []string{b} })
		}},
		{"NANO_SERVER_ADDRESS", "role:env", "env", func(t *testing.T) {
			p := startProgram(t, os.Args[0], childVar+"=env-service", "NANO_SERVER_ADDRESS=127.0.0.1, 127.0.0.2", "NANO_TEST_SERVER_PORT="+port)
			p.waitOutput(t, "listening ")
		}},
	}
	for _, s := range services {
		s.start(t)
		waitRegistered(t, a, s.pattern)
		waitRegistered(t, b, s.pattern)
	}
	client := newClient(t, nano.ClientOptions{Server: a, Servers: []string{b}, PeerTTL: -1, Timeout: 2 * time.Second})
	hc := &http.Client{Timeout: 2 * time.Second}

	if err := first.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	failures := map[string][]string{}
	sent := 0
	for ; time.Since(down) < 3*opts.TTL; sent++ {
		for _, s := range services {
			msg := fmt.Sprintf(`{"Pattern":%q}`, s.pattern)
			want := fmt.Sprintf(`{"ID":%q}`, s.id)
			resp, err := hc.Post("http://"+b+"/", "application/json", strings.NewReader(msg))
			if err != nil {
				failures[s.name] = append(failures[s.name], fmt.Sprintf("%v: %v", time.Since(down).Round(time.Millisecond), err))
			} else if body := readAll(resp); resp.StatusCode != http.StatusOK || body != want {
				failures[s.name] = append(failures[s.name], fmt.Sprintf("%v: %d %s", time.Since(down).Round(time.Millisecond), resp.StatusCode, strings.TrimSpace(body)))
			}
			got, err := client.Act([]byte(msg), s.pattern)
			if err != nil || string(got) != want {
				failures[s.name] = append(failures[s.name], fmt.Sprintf("%v: Act: %q %v", time.Since(down).Round(time.Millisecond), got, err))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range services {
		t.Run(s.name, func(t *testing.T) {
			t.Logf("first server down for %v (TTL %v): %d messages and %d Act calls through the second, %d failed",
				time.Since(down).Round(time.Millisecond), opts.TTL, sent, sent, len(failures[s.name]))
			if f := failures[s.name]; len(f) > 0 {
				t.Errorf("%d of %d calls failed, e.g. %q", len(f), 2*sent, f[:min(4, len(f))])
			}
			if n := liveInstances(t, testRedis, opts, s.pattern); n != 1 {
				t.Errorf("%d live registrations of %s in Redis; want the one, renewed through the second server", n, s.pattern)
			}
		})
	}
}
