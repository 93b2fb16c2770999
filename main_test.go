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
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// testRedis is the Redis every test of the package may use, each test
// under its own key prefix. TestMain starts it; tests that stop Redis
// start their own with newRedis.
var testRedis *redisProc

func TestMain(m *testing.M) {
	r, err := startRedis()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nano tests:", err)
		os.Exit(1)
	}
	testRedis = r
	code := m.Run()
	r.stop()
	os.Exit(code)
}

// redisProc is a redis-server the tests started, or a miniredis where no
// redis-server binary exists.
type redisProc struct {
	Addr string
	cmd  *exec.Cmd
	dir  string
	mini *miniredis.Miniredis
}

// redisArgs are the arguments of a test redis-server: loopback only, no
// persistence, so that a restarted one starts empty.
func redisArgs(port int, dir string) []string {
	return []string{"--bind", "127.0.0.1", "--port", fmt.Sprint(port),
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log")}
}

// startRedis starts a redis-server on a free loopback port in a temporary
// folder. Without a redis-server binary it falls back to miniredis, unless
// NANO_TEST_REQUIRE_REDIS is set (as CI sets it).
func startRedis() (*redisProc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("NANO_TEST_REQUIRE_REDIS") != "" {
			return nil, errors.New("redis-server not found and NANO_TEST_REQUIRE_REDIS is set")
		}
		mr, err := miniredis.Run()
		if err != nil {
			return nil, err
		}
		fmt.Fprintln(os.Stderr, "nano tests: redis-server not found; using the embedded miniredis instead")
		return &redisProc{Addr: mr.Addr(), mini: mr}, nil
	}
	dir, err := os.MkdirTemp("", "nano-redis-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &redisProc{Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
	if err := r.run(bin, port); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

// run starts the redis-server process and waits until it answers.
func (r *redisProc) run(bin string, port int) error {
	r.cmd = exec.Command(bin, redisArgs(port, r.dir)...)
	if err := r.cmd.Start(); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if rdb.Ping(context.Background()).Err() == nil {
			return nil
		}
		if time.Now().After(deadline) {
			r.cmd.Process.Kill()
			r.cmd.Wait()
			return fmt.Errorf("redis-server on %s did not start", r.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the redis-server abruptly, keeping its address for restart.
func (r *redisProc) kill(t *testing.T) {
	t.Helper()
	if r.mini != nil {
		r.mini.Close()
		return
	}
	r.cmd.Process.Kill()
	r.cmd.Wait()
}

// restart starts a killed Redis again on the same address, empty.
func (r *redisProc) restart(t *testing.T) {
	t.Helper()
	if r.mini != nil {
		if err := r.mini.Restart(); err != nil {
			t.Fatal(err)
		}
		r.mini.FlushAll()
		return
	}
	_, portStr, _ := net.SplitHostPort(r.Addr)
	var port int
	fmt.Sscan(portStr, &port)
	if err := r.run(r.cmd.Path, port); err != nil {
		t.Fatal(err)
	}
}

// stop kills the Redis and removes its folder.
func (r *redisProc) stop() {
	if r.mini != nil {
		r.mini.Close()
		return
	}
	if r.cmd.ProcessState == nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
	os.RemoveAll(r.dir)
}

// newRedis starts a Redis of the test's own, stopped at its end.
func newRedis(t *testing.T) *redisProc {
	t.Helper()
	r, err := startRedis()
	if err != nil {
		t.Fatal(err)
	}
	if r.mini != nil {
		t.Log("redis-server not found: using miniredis")
	}
	t.Cleanup(r.stop)
	return r
}

// prefixes numbers the key prefixes of redisOptions.
var prefixes atomic.Int64

// redisOptions selects a Redis with a key prefix of the test's own: tests
// run with -count=N do not see each other's registrations.
func redisOptions(t *testing.T, r *redisProc) nano.ServerOptions {
	return nano.ServerOptions{
		Redis:     &redis.UniversalOptions{Addrs: []string{r.Addr}},
		KeyPrefix: fmt.Sprintf("nanotest:%s:%d:", t.Name(), prefixes.Add(1)),
	}
}

// registries runs a test once with the embedded registry and once with
// Redis.
var registries = []struct {
	name string
	opts func(t *testing.T) nano.ServerOptions
}{
	{"embedded", func(*testing.T) nano.ServerOptions { return nano.ServerOptions{} }},
	{"redis", func(t *testing.T) nano.ServerOptions { return redisOptions(t, testRedis) }},
}

// testLogger discards logs unless NANO_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("NANO_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startServer serves a nano server on a loopback port until the test ends
// and returns its address.
func startServer(t *testing.T, opts nano.ServerOptions) (*nano.Server, string) {
	t.Helper()
	l := listen(t)
	return serverOn(t, opts, l), l.Addr().String()
}

// serverOn serves a nano server on l until the test ends.
func serverOn(t *testing.T, opts nano.ServerOptions, l net.Listener) *nano.Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	srv, err := nano.NewServerWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

// startService serves handlers on a loopback port until the test ends,
// registered at the server at serverAddr, and returns the service's
// address. It does not wait for the registrations.
func startService(t *testing.T, serverAddr string, handlers map[string]nano.HandlerFunc, configure ...func(*nano.ServiceOptions)) (*nano.Service, string) {
	t.Helper()
	return serveService(t, serverAddr, configure, func(svc *nano.Service) error {
		for p, h := range handlers {
			if err := svc.Handle(p, h); err != nil {
				return err
			}
		}
		return nil
	})
}

// serveService makes a service with the options configure sets, lets add
// give it its handlers, and serves it on a loopback port until the test
// ends.
func serveService(t *testing.T, serverAddr string, configure []func(*nano.ServiceOptions), add func(*nano.Service) error) (*nano.Service, string) {
	t.Helper()
	opts := nano.ServiceOptions{Addr: "127.0.0.1:0", Server: serverAddr, Logger: testLogger()}
	for _, c := range configure {
		c(&opts)
	}
	svc, err := nano.NewServiceWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := add(svc); err != nil {
		t.Fatal(err)
	}
	l := listen(t)
	go svc.Serve(l)
	t.Cleanup(func() { svc.Shutdown(context.Background()) })
	return svc, l.Addr().String()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// post sends body to url and returns the status and body of the answer.
// Like curl, it sends "Accept: */*": error answers come as JSON (see
// TestOriginalActSeesErrors for a client that sends no Accept field).
func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	return do(t, http.MethodPost, url, body, nil)
}

func do(t *testing.T, method, url, body string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "*/*")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// waitAnswer waits until a message through the server at serverAddr is
// answered with want.
func waitAnswer(t *testing.T, serverAddr, msg, want string) {
	t.Helper()
	var status int
	var got string
	eventually(t, fmt.Sprintf("%s answers %s (last: %d %s)", msg, want, status, got), func() bool {
		status, got = post(t, "http://"+serverAddr+"/", msg)
		return status == http.StatusOK && strings.TrimSpace(got) == want
	})
}

// Handlers of the math services used across the tests.

type sumMsg struct {
	Pattern     string
	Left, Right int
}

type valueMsg struct {
	Pattern string
	Value   int
}

func sum(body []byte) ([]byte, error) {
	var m sumMsg
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, &nano.Error{Status: http.StatusBadRequest, Message: "sum needs Left and Right"}
	}
	return json.Marshal(map[string]int{"Result": m.Left + m.Right})
}

func sumZero([]byte) ([]byte, error) { return []byte(`{"Result":0}`), nil }

func positive(body []byte) ([]byte, error) {
	var m valueMsg
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	return json.Marshal(map[string]bool{"Result": m.Value > 0})
}

// errorBody decodes a JSON error answer, failing the test when it is not one.
func errorBody(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == nil || *e.Error == "" {
		t.Fatalf("answer %q is not a JSON error body", body)
	}
	return *e.Error
}

// waitRegistered waits until the server at serverAddr resolves each of
// patterns to itself: registered, not merely covered by a shorter one.
func waitRegistered(t *testing.T, serverAddr string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		eventually(t, fmt.Sprintf("%s is registered", p), func() bool {
			resp, err := http.Get("http://" + serverAddr + "/resolve?pattern=" + url.QueryEscape(p))
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var res struct{ Pattern string }
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&res) == nil && res.Pattern == p
		})
	}
}
