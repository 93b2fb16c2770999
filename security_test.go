package nano_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// registryState is every key under prefix with its members, sorted: what
// the hostile requests below must leave as it was.
func registryState(t *testing.T, rdb *redis.Client, prefix string) string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		if strings.HasSuffix(k, "}epoch") || strings.HasSuffix(k, "}seq") {
			continue
		}
		var members any
		if strings.HasSuffix(k, "}changes") {
			members, err = rdb.XLen(ctx, k).Result()
		} else {
			members, err = rdb.ZRange(ctx, k, 0, -1).Result()
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %v\n", k, members)
	}
	return b.String()
}

// TestHostileInput sends malformed, oversized and unauthorized requests to
// a server with a token and to a service, over real HTTP. For each it
// checks the status, that the server and the service still answer, and
// that the registry in Redis did not change.
func TestHostileInput(t *testing.T) {
	const token = "t0ken"
	opts := redisOptions(t, testRedis)
	opts.Token = token
	opts.MaxBodyBytes = 1 << 20
	opts.ReadHeaderTimeout = 300 * time.Millisecond
	opts.ReadTimeout = 300 * time.Millisecond
	_, addr := startServer(t, opts)
	_, svcAddr := startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum},
		func(o *nano.ServiceOptions) { o.Token = token; o.MaxBodyBytes = 1 << 20 })
	valid := `{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`
	waitAnswer(t, addr, valid, `{"Result":2}`)

	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	t.Cleanup(func() { rdb.Close() })
	before := registryState(t, rdb, opts.KeyPrefix)
	if before == "" {
		t.Fatal("the service's registration is not in Redis")
	}

	bearer := http.Header{"Authorization": {"Bearer " + token}}
	wrongToken := http.Header{"Authorization": {"Bearer " + token + "x"}}
	manyFields := strings.TrimSuffix(strings.Repeat("a:b,", 10_000), ",")
	hugePattern := strings.Repeat("x", 1<<20-100)
	reg := func(addr string) string {
		return fmt.Sprintf(`{"Pattern":"role:evil","ServiceAddress":%q}`, addr)
	}
	tests := []struct {
		name, method, path, body string
		header                   http.Header
		status                   int
	}{
		{"malformed JSON", "POST", "/", `{"Pattern":"role:math" "Left":1}`, nil, 400},
		{"truncated JSON", "POST", "/", `{"Pattern":"role:math,cmd:sum","Le`, nil, 400},
		{"empty body", "POST", "/", ``, nil, 400},
		{"array", "POST", "/", `[{"Pattern":"role:math,cmd:sum"}]`, nil, 400},
		{"string", "POST", "/", `"role:math,cmd:sum"`, nil, 400},
		{"number", "POST", "/", `42`, nil, 400},
		{"Pattern a number", "POST", "/", `{"Pattern":1}`, nil, 400},
		{"Pattern an object", "POST", "/", `{"Pattern":{"role":"math"}}`, nil, 400},
		{"Pattern an array", "POST", "/", `{"Pattern":["role:math"]}`, nil, 400},
		{"Pattern a bool", "POST", "/", `{"Pattern":true}`, nil, 400},
		{"10 000 fields", "POST", "/", `{"Pattern":"` + manyFields + `"}`, nil, 400},
		{"1 MiB pattern", "POST", "/", `{"Pattern":"` + hugePattern + `"}`, nil, 400},
		{"NUL in pattern", "POST", "/", `{"Pattern":"role:math\u0000,cmd:sum"}`, nil, 400},
		{"raw NUL byte", "POST", "/", "{\"Pattern\":\"role:math\x00\"}", nil, 400},
		{"invalid UTF-8", "POST", "/", "{\"Pattern\":\"role:\xff\xfe\"}", nil, 404},
		{"deep nesting", "POST", "/", strings.Repeat("[", 100_000), nil, 400},
		{"GET", "GET", "/", "", nil, 405},
		{"PUT", "PUT", "/", valid, nil, 405},
		{"DELETE", "DELETE", "/", valid, nil, 405},
		{"over the body limit", "POST", "/", `{"Pattern":"role:math,cmd:sum","Pad":"` + strings.Repeat("x", 1<<20) + `"}`, nil, 413},
		{"register without token", "POST", "/register", reg("127.0.0.1:1"), nil, 401},
		{"register with a wrong token", "POST", "/register", reg("127.0.0.1:1"), wrongToken, 401},
		{"deregister without token", "POST", "/deregister", fmt.Sprintf(`{"Pattern":"role:math,cmd:sum","ServiceAddress":%q}`, svcAddr), nil, 401},
		{"register by GET", "GET", "/register", "", bearer, 405},
		{"register malformed", "POST", "/register", `{"Pattern":`, bearer, 400},
		{"register no address", "POST", "/register", reg(""), bearer, 400},
		{"register a URL", "POST", "/register", reg("http://127.0.0.1:1/"), bearer, 400},
		{"register a path", "POST", "/register", reg("127.0.0.1:1/admin"), bearer, 400},
		{"register no host", "POST", "/register", reg(":8080"), bearer, 400},
		{"register port 0", "POST", "/register", reg("127.0.0.1:0"), bearer, 400},
		{"register port too high", "POST", "/register", reg("127.0.0.1:65536"), bearer, 400},
		{"register negative port", "POST", "/register", reg("127.0.0.1:-1"), bearer, 400},
		{"register spaces", "POST", "/register", reg("evil host:80"), bearer, 400},
		{"register user info", "POST", "/register", reg("user@127.0.0.1:80"), bearer, 400},
		{"register long host", "POST", "/register", reg(strings.Repeat("h", 300) + ":80"), bearer, 400},
		{"register bad pattern", "POST", "/register", `{"Pattern":"a,,b","ServiceAddress":"127.0.0.1:1"}`, bearer, 400},
		{"register oversized", "POST", "/register", `{"Pattern":"role:evil","ServiceAddress":"127.0.0.1:1","Pad":"` + strings.Repeat("x", 100<<10) + `"}`, bearer, 413},
	}
	check := func(t *testing.T) {
		t.Helper()
		if status, body := post(t, "http://"+addr+"/", valid); status != 200 || body != `{"Result":2}` {
			t.Fatalf("the server no longer serves: %d %s", status, body)
		}
		if status, body := post(t, "http://"+svcAddr+"/", valid); status != 200 || body != `{"Result":2}` {
			t.Fatalf("the service no longer serves: %d %s", status, body)
		}
		if after := registryState(t, rdb, opts.KeyPrefix); after != before {
			t.Fatalf("the registry changed:\n%s\nwas:\n%s", after, before)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			targets := []string{addr}
			if tt.path == "/" {
				targets = append(targets, svcAddr) // the service reads messages the same way
			}
			for _, target := range targets {
				status, body := do(t, tt.method, "http://"+target+tt.path, tt.body, tt.header)
				if status != tt.status {
					t.Fatalf("%s: got %d %.200s; want %d", target, status, body, tt.status)
				}
				errorBody(t, body)
			}
			check(t)
		})
	}

	t.Run("chunked body over the limit", func(t *testing.T) {
		for _, target := range []string{addr, svcAddr} {
			r, w := io.Pipe()
			go func() {
				w.Write([]byte(`{"Pattern":"role:math,cmd:sum","Pad":"`))
				chunk := strings.Repeat("x", 64<<10)
				for range 20 {
					if _, err := w.Write([]byte(chunk)); err != nil {
						return
					}
				}
				w.Write([]byte(`"}`))
				w.Close()
			}()
			req, _ := http.NewRequest(http.MethodPost, "http://"+target+"/", r)
			req.ContentLength = -1 // chunked
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.CloseWithError(io.ErrClosedPipe)
			if body := readAll(resp); resp.StatusCode != 413 {
				t.Fatalf("%s: got %d %s; want 413", target, resp.StatusCode, body)
			}
		}
		check(t)
	})
	t.Run("413 says the connection closes", func(t *testing.T) {
		// The rest of the body is never read, so the connection cannot
		// carry another request: the answer must say so, or a client would
		// send its next request on a connection about to close.
		for _, target := range []string{addr, svcAddr} {
			conn, err := net.Dial("tcp", target)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 3<<20)
			conn.Write([]byte(`{"Pattern":"role:math,cmd:sum","Pad":"` + strings.Repeat("x", 1200<<10)))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 413 || !resp.Close {
				t.Fatalf("%s: got %d, Connection %q; want 413 and close", target, resp.StatusCode, resp.Header.Get("Connection"))
			}
		}
	})
	t.Run("many header fields", func(t *testing.T) {
		// 20 000 fields, and a Connection header naming 20 000 of them:
		// the proxy refuses the second, and filters the first in time
		// linear in their number (a quadratic filter takes minutes here).
		many := http.Header{}
		names := make([]string, 0, 20_000)
		for i := range 20_000 {
			name := fmt.Sprintf("X-F%d", i)
			many.Set(name, "v")
			names = append(names, name)
		}
		if status, body := do(t, "POST", "http://"+addr+"/", valid, many); status != 200 || body != `{"Result":2}` {
			t.Fatalf("20 000 fields: %d %.200s", status, body)
		}
		many.Set("Connection", strings.Join(names, ","))
		if status, body := do(t, "POST", "http://"+addr+"/", valid, many); status != 400 || !strings.Contains(errorBody(t, body), "Connection") {
			t.Fatalf("Connection naming 20 000 fields: %d %.200s", status, body)
		}
		check(t)
	})
	t.Run("chunked body", func(t *testing.T) {
		for _, target := range []string{addr, svcAddr} {
			req, _ := http.NewRequest(http.MethodPost, "http://"+target+"/", io.MultiReader(strings.NewReader(valid)))
			req.ContentLength = -1
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(resp); resp.StatusCode != 200 || body != `{"Result":2}` {
				t.Fatalf("%s: got %d %s", target, resp.StatusCode, body)
			}
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		// Clients that send their headers, or their body, a byte at a
		// time are cut off after ReadHeaderTimeout or ReadTimeout, while
		// the others are served.
		for _, target := range []string{addr, svcAddr} {
			for _, slowBody := range []bool{false, true} {
				conn, err := net.Dial("tcp", target)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				head := "POST / HTTP/1.1\r\nHost: x\r\n"
				if slowBody {
					fmt.Fprintf(conn, "%sContent-Length: %d\r\n\r\n", head, len(valid))
				} else {
					conn.Write([]byte(head))
				}
				cutOff := make(chan bool, 1)
				go func() {
					for range 200 { // 10 s at most
						time.Sleep(50 * time.Millisecond)
						if _, err := conn.Write([]byte("X")); err != nil {
							cutOff <- true
							return
						}
					}
					cutOff <- false
				}()
				check(t)
				if !<-cutOff {
					t.Fatalf("%s: a client sending a byte every 50 ms kept its connection for 10 s", target)
				}
				conn.SetReadDeadline(time.Now().Add(time.Second))
				answer, _ := io.ReadAll(bufio.NewReader(conn))
				if strings.Contains(string(answer), " 200 ") {
					t.Fatalf("%s: a slow request was served: %s", target, answer)
				}
			}
		}
	})
	check(t)
}

func TestServerMaxPatterns(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{MaxPatterns: 2})
	register := func(pattern string) (int, string) {
		return post(t, "http://"+addr+"/register", fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":"127.0.0.1:1"}`, pattern))
	}
	for _, p := range []string{"role:a", "role:b"} {
		if status, body := register(p); status != 200 {
			t.Fatalf("register %s: %d %s", p, status, body)
		}
	}
	status, body := register("role:c")
	if status != http.StatusInsufficientStorage || !strings.Contains(errorBody(t, body), "registry full") {
		t.Fatalf("a third pattern: %d %s; want 507", status, body)
	}
	if status, body := register("role:a"); status != 200 {
		t.Fatalf("renewing a pattern it holds: %d %s", status, body)
	}
	if status, _ := post(t, "http://"+addr+"/", `{"Pattern":"role:c"}`); status != http.StatusNotFound {
		t.Fatalf("the refused pattern is routed: %d", status)
	}
}

// TestServerDoesNotFollowRedirects: a service's redirect goes back to the
// caller as it is; the server does not fetch the address it names.
func TestServerDoesNotFollowRedirects(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{})
	var fetched atomic.Bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { fetched.Store(true) }))
	t.Cleanup(elsewhere.Close)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/secret", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(ts.Close)
	reg := fmt.Sprintf(`{"Pattern":"role:redirect","ServiceAddress":%q}`, ts.Listener.Addr().String())
	if status, body := post(t, "http://"+addr+"/register", reg); status != 200 {
		t.Fatalf("register: %d %s", status, body)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Post("http://"+addr+"/", "application/json", strings.NewReader(`{"Pattern":"role:redirect"}`))
	if err != nil {
		t.Fatal(err)
	}
	readAll(resp)
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != elsewhere.URL+"/secret" || fetched.Load() {
		t.Fatalf("got %d Location %q, fetched %v; want the 307 passed back", resp.StatusCode, resp.Header.Get("Location"), fetched.Load())
	}
}

// TestRefusalDoesNotWaitForTheBody: a request refused before its body is
// read (here a registration without the token) is answered at once, and
// the connection closed, however slowly the body comes.
func TestRefusalDoesNotWaitForTheBody(t *testing.T) {
	_, addr := startServer(t, nano.ServerOptions{Token: "t", ReadTimeout: time.Minute})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while the body is missing: %v", err)
	}
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Fatalf("got %d, Connection %q; want 401 and close", resp.StatusCode, resp.Header.Get("Connection"))
	}
}
