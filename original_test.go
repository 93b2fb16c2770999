package nano_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/armon/go-radix"
	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// The original library's side of the wire, simulated: its Act as a caller
// built with it uses it, and its services. These tests check that
// programs built with the original work beside this library's servers and
// services, in both directions.

// originalAnswer is the shape the original's Act decodes every answer
// into, whatever its status.
type originalAnswer struct {
	Service originalRegistration `json:"Service"`
	Payload []byte               `json:"Payload"`
}

// originalRegistration is what an original service sends to register,
// and names itself with in its envelope: its exported fields, among them
// its (empty) peer cache.
type originalRegistration struct {
	Cache          struct{} `json:"Cache"`
	Pattern        string   `json:"Pattern"`
	ServiceAddress string   `json:"ServiceAddress"`
	ServicePort    int      `json:"ServicePort"`
	ServerAddress  string   `json:"ServerAddress"`
	ServerPort     int      `json:"ServerPort"`
}

// originalCaller calls services as the original's Act does: it looks the
// pattern up in its cache by byte prefix; on a miss it posts the message
// to its server; on a hit to the cached service, then, if that cannot be
// reached, to the server the service named, dropping the entry when both
// fail. Every answer is decoded into originalAnswer, whatever its status:
// the call fails only when the body is not that JSON. A named service is
// cached; its Payload is returned, else the body as it came.
type originalCaller struct {
	server string

	mu    sync.Mutex
	cache *radix.Tree // pattern -> originalRegistration
}

func newOriginalCaller(server string) *originalCaller {
	return &originalCaller{server: server, cache: radix.New()}
}

// post sends msg to addr as the original does: a new http.Client with
// Go's defaults, Content-Type and nothing else.
func (c *originalCaller) post(addr string, msg []byte) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr, bytes.NewBuffer(msg))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{}
	return client.Do(req)
}

func (c *originalCaller) Act(msg []byte, pattern string) ([]byte, error) {
	c.mu.Lock()
	matched, v, hit := c.cache.LongestPrefix(pattern)
	c.mu.Unlock()
	var resp *http.Response
	var err error
	update := false
	if !hit {
		resp, err = c.post(c.server, msg)
	} else {
		cached := v.(originalRegistration)
		resp, err = c.post(cached.ServiceAddress, msg)
		if err != nil {
			resp, err = c.post(cached.ServerAddress, msg)
			if err != nil {
				c.mu.Lock()
				c.cache.Delete(matched)
				c.mu.Unlock()
				return nil, err
			}
			update = true
		}
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var answer originalAnswer
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, err
	}
	if !hit && answer.Service.ServiceAddress != "" || update {
		c.mu.Lock()
		c.cache.Insert(answer.Service.Pattern, answer.Service)
		c.mu.Unlock()
	}
	if answer.Service.Pattern == "" {
		return body, nil
	}
	return answer.Payload, nil
}

// cached returns the address the caller has cached for pattern, if any.
func (c *originalCaller) cached(pattern string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.cache.Get(pattern); ok {
		return v.(originalRegistration).ServiceAddress
	}
	return ""
}

// originalService is a service as the original builds it: one pattern,
// registered once at its server with originalRegistration; it answers a
// message whose Pattern contains its own with the handler's bytes, in the
// JSON envelope when the message asks for it, and every failure with a
// status and no body.
type originalService struct {
	reg    originalRegistration
	addr   string
	calls  atomicCounter
	ts     *httptest.Server
	handle func([]byte) ([]byte, error)
}

// atomicCounter counts, safe for concurrent use.
type atomicCounter struct {
	mu sync.Mutex
	n  int
}

func (c *atomicCounter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *atomicCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// startOriginalService serves handle for pattern until the test ends. It
// does not register; register does.
func startOriginalService(t *testing.T, serverAddr, pattern string, handle func([]byte) ([]byte, error)) *originalService {
	t.Helper()
	s := &originalService{handle: handle}
	s.serve(t, listen(t))
	_, port, _ := net.SplitHostPort(s.addr)
	_, serverPort, _ := net.SplitHostPort(serverAddr)
	s.reg = originalRegistration{Pattern: pattern, ServiceAddress: s.addr, ServerAddress: serverAddr}
	s.reg.ServicePort, _ = strconv.Atoi(port)
	s.reg.ServerPort, _ = strconv.Atoi(serverPort)
	return s
}

// serve serves the service on l until the test ends or stop.
func (s *originalService) serve(t *testing.T, l net.Listener) {
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.ts.Listener.Close()
	s.ts.Listener = l
	s.ts.Start()
	t.Cleanup(s.ts.Close)
	s.addr = l.Addr().String()
}

// stop stops the service: its address refuses connections.
func (s *originalService) stop() { s.ts.Close() }

// restart serves the service again at the same address.
func (s *originalService) restart(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	s.serve(t, l)
}

// originalBody reads the body of a POST as the original's servers and
// services did, answering anything else with a status and no body.
func originalBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return nil, false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

func (s *originalService) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls.add()
	body, ok := originalBody(w, r)
	if !ok {
		return
	}
	var msg struct {
		Pattern        string
		ServiceRequest bool
	}
	if json.Unmarshal(body, &msg) != nil || !strings.Contains(msg.Pattern, s.reg.Pattern) {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	payload, err := s.handle(body)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if msg.ServiceRequest {
		payload, _ = json.Marshal(originalAnswer{Service: s.reg, Payload: payload})
	}
	w.WriteHeader(http.StatusOK)
	w.Write(payload)
}

// register registers the service at its server once, as the original's
// Add does, and fails the test unless the server answers 200.
func (s *originalService) register(t *testing.T) {
	t.Helper()
	body, _ := json.Marshal(s.reg)
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.reg.ServerAddress+"/register", bytes.NewBuffer(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("original registration of %s: %d", s.reg.Pattern, resp.StatusCode)
	}
}

// TestOriginalActSeesErrors: a caller built with the original gets an
// error for every failure it got one for against the original (no service
// for the pattern, a handler's error, a message refused), through this
// library's server and from its services directly, and the handler's
// bytes when the call succeeds. The same requests from a client that names
// what it accepts get JSON error bodies.
func TestOriginalActSeesErrors(t *testing.T) {
	t.Parallel()
	_, serverAddr := startServer(t, nano.ServerOptions{})
	startService(t, serverAddr, map[string]nano.HandlerFunc{
		"role:math,cmd:sum": sum,
		"role:fail": func(msg []byte) ([]byte, error) {
			if strings.Contains(string(msg), `"Fail":true`) {
				return nil, errors.New("it broke")
			}
			return []byte(`"fine"`), nil
		},
		"role:null": func([]byte) ([]byte, error) {
			return nil, &nano.Error{Status: http.StatusConflict, Message: "null"}
		},
	})
	orig := startOriginalService(t, serverAddr, "role:old", func([]byte) ([]byte, error) { return nil, errors.New("old broke") })
	orig.register(t)
	for _, p := range []string{"role:math,cmd:sum", "role:fail", "role:null", "role:old"} {
		waitInstances(t, serverAddr, p, 1)
	}

	caller := newOriginalCaller(serverAddr)
	// A success, asking for the envelope as the original's callers do to
	// learn the service: the payload, and the service cached.
	got, err := caller.Act([]byte(`{"Pattern":"role:math,cmd:sum","ServiceRequest":true,"Left":1,"Right":2}`), "role:math,cmd:sum")
	if err != nil || string(got) != `{"Result":3}` {
		t.Fatalf("sum through the server: %s, %v", got, err)
	}
	if caller.cached("role:math,cmd:sum") == "" {
		t.Fatal("the envelope did not name the service")
	}
	// Without the envelope: the handler's bytes as they are.
	got, err = caller.Act([]byte(`{"Pattern":"role:math,cmd:sum","Left":2,"Right":2}`), "role:math,cmd:sum")
	if err != nil || string(got) != `{"Result":4}` {
		t.Fatalf("sum, directly: %s, %v", got, err)
	}

	for _, c := range []struct{ name, msg, pattern string }{
		{"no service", `{"Pattern":"role:none"}`, "role:none"},
		{"handler error", `{"Pattern":"role:fail","Fail":true}`, "role:fail"},
		{"handler error whose message is JSON", `{"Pattern":"role:null"}`, "role:null"},
		{"original service's error", `{"Pattern":"role:old"}`, "role:old"},
		{"not JSON", `Pattern=role:math`, "role:x"},
		{"no Pattern", `{"Left":1}`, "role:x"},
		{"invalid pattern", `{"Pattern":"role:math,,cmd:sum"}`, "role:x"},
		{"directly: no handler", `{"Pattern":"role:math,cmd:product"}`, "role:math,cmd:sum"},
		{"directly: bad message", `{"Pattern":1}`, "role:math,cmd:sum"},
	} {
		got, err := caller.Act([]byte(c.msg), c.pattern)
		if err == nil {
			t.Errorf("%s: the original's Act got %q and no error", c.name, got)
		}
	}
	// A handler's error when the service is called directly.
	if _, err := caller.Act([]byte(`{"Pattern":"role:fail","ServiceRequest":true}`), "role:fail"); err != nil {
		t.Fatal(err)
	}
	if caller.cached("role:fail") == "" {
		t.Fatal("role:fail is not cached")
	}
	if got, err := caller.Act([]byte(`{"Pattern":"role:fail","Fail":true}`), "role:fail"); err == nil {
		t.Fatalf("role:fail, directly: %q and no error", got)
	}
}

// TestOriginalFields: programs that read the original's exported fields
// compile and read what the original gave them.
func TestOriginalFields(t *testing.T) {
	t.Setenv("NANO_SERVICE_ADDRESS", "")
	t.Setenv("NANO_SERVER_ADDRESS", "")
	svc := nano.NewService("127.0.0.1", 3333, "127.0.0.1", 9999)
	t.Cleanup(func() { svc.Shutdown(context.Background()) })
	if svc.ServiceAddress != "127.0.0.1:3333" || svc.ServicePort != 3333 ||
		svc.ServerAddress != "127.0.0.1:9999" || svc.ServerPort != 9999 {
		t.Errorf("fields %q %d %q %d; want 127.0.0.1:3333 3333 127.0.0.1:9999 9999",
			svc.ServiceAddress, svc.ServicePort, svc.ServerAddress, svc.ServerPort)
	}
	if svc.Pattern != "" {
		t.Errorf("Pattern before Add = %q; want empty", svc.Pattern)
	}
	if err := svc.Handle("role:math,cmd:sum", func(m []byte) ([]byte, error) { return m, nil }); err != nil {
		t.Fatal(err)
	}
	if svc.Pattern != "role:math,cmd:sum" {
		t.Errorf("Pattern after Handle = %q; want role:math,cmd:sum", svc.Pattern)
	}
	// The caches are usable radix trees, as the original's were.
	svc.Cache.Insert("role:x", 1)
	if _, ok := svc.Cache.Get("role:x"); !ok {
		t.Error("Service.Cache does not hold what was inserted")
	}
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	srv.Cache.Insert("role:x", 1)
	if srv.Cache.Len() != 1 {
		t.Error("Server.Cache does not hold what was inserted")
	}
}

// originalStore is where a simulated original server keeps its registry:
// one key per pattern, whose value is the address of the service.
type originalStore interface {
	get(key string) (string, bool)
	set(key, value string)
	del(key string)
}

// mapStore is an originalStore in memory.
type mapStore struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *mapStore) get(k string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok && v != ""
}

func (s *mapStore) set(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]string)
	}
	s.m[k] = v
}

func (s *mapStore) del(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
}

// originalServer is a simulated original server: POST /register stores
// the pattern's address; POST on any other path looks the message's
// Pattern up, key by key from the whole pattern down to its first field,
// sends the body on in a request of its own (Content-Type only) and relays
// the status and body of the answer. A service it cannot reach is deleted
// from the store and answered 404, as the original did once its cache had
// known the service; a GET is answered 405 with no body.
type originalServer struct {
	ts      *httptest.Server
	addr    string
	proxied atomicCounter
}

func startOriginalServer(t *testing.T, store originalStore) *originalServer {
	t.Helper()
	s := &originalServer{}
	s.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := originalBody(w, r)
		if !ok {
			return
		}
		if r.URL.Path == "/register" {
			var reg struct{ Pattern, ServiceAddress string }
			if json.Unmarshal(body, &reg) != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			store.set(reg.Pattern, reg.ServiceAddress)
			w.WriteHeader(http.StatusOK)
			return
		}
		s.proxied.add()
		var msg struct{ Pattern string }
		if json.Unmarshal(body, &msg) != nil || msg.Pattern == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var key, addr string
		for fields := strings.Split(msg.Pattern, ","); len(fields) > 0; fields = fields[:len(fields)-1] {
			key = strings.Join(fields, ",")
			if v, ok := store.get(key); ok {
				addr = v
				break
			}
		}
		if addr == "" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{}).Do(req)
		if err != nil {
			store.del(key)
			w.WriteHeader(http.StatusNotFound)
			return
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		w.WriteHeader(resp.StatusCode)
		w.Write(answer)
	}))
	t.Cleanup(s.ts.Close)
	s.addr = s.ts.Listener.Addr().String()
	return s
}

// TestActKeepsKnownInstancesWithoutServer: while its server cannot be
// reached, a Client keeps calling the instances it knows, long past
// PeerTTL and the registrations' expiry, until they fail themselves;
// against this library's server and against an original one.
func TestActKeepsKnownInstancesWithoutServer(t *testing.T) {
	t.Parallel()
	const msg = `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`
	check := func(t *testing.T, serverAddr string, stopServer func()) {
		svc, _ := startService(t, serverAddr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum})
		waitAnswer(t, serverAddr, msg, `{"Result":3}`)
		c := newClient(t, nano.ClientOptions{Server: serverAddr, PeerTTL: 100 * time.Millisecond, Timeout: 5 * time.Second})
		act := func() ([]byte, error) { return c.Act([]byte(msg), "role:math,cmd:sum") }
		if got, err := act(); err != nil || string(got) != `{"Result":3}` {
			t.Fatalf("Act = %s, %v", got, err)
		}
		stopServer()
		deadline := time.Now().Add(1500 * time.Millisecond) // past PeerTTL, and the server's TTL of 1 s
		for i := 0; time.Now().Before(deadline); i++ {
			if got, err := act(); err != nil || string(got) != `{"Result":3}` {
				t.Fatalf("call %d with the server down: %s, %v; want the known instance's answer", i, got, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		svc.Shutdown(context.Background())
		if got, err := act(); err == nil {
			t.Fatalf("Act with the server and the service down = %s; want an error", got)
		}
	}
	t.Run("this library's server", func(t *testing.T) {
		t.Parallel()
		srv, addr := startServer(t, nano.ServerOptions{TTL: time.Second})
		check(t, addr, func() { srv.Shutdown(context.Background()) })
	})
	t.Run("original server", func(t *testing.T) {
		t.Parallel()
		orig := startOriginalServer(t, &mapStore{})
		check(t, orig.addr, orig.ts.Close)
	})
}

// TestOriginalServiceStaysRegistered: a service that registers once, in
// the original's form, stays registered past the server's TTL, where a
// registration without it expires; it leaves every server and the
// registry when it refuses a connection, and comes back when it registers
// again.
func TestOriginalServiceStaysRegistered(t *testing.T) {
	t.Parallel()
	const ttl = 300 * time.Millisecond
	for _, reg := range registries {
		t.Run(reg.name, func(t *testing.T) {
			t.Parallel()
			opts := reg.opts(t)
			opts.TTL = ttl
			_, addr := startServer(t, opts)
			servers := []string{addr}
			if opts.Redis != nil { // a second server on the same registry
				_, other := startServer(t, opts)
				servers = append(servers, other)
			}
			answer := func([]byte) ([]byte, error) { return []byte(`{"Result":"old"}`), nil }
			old := startOriginalService(t, addr, "role:old", answer)
			old.register(t)
			// The same service registered without the original's fields:
			// a registration of this library, which expires.
			plain := startOriginalService(t, addr, "role:plain", answer)
			if status, body := post(t, "http://"+addr+"/register", fmt.Sprintf(`{"Pattern":"role:plain","ServiceAddress":%q}`, plain.addr)); status != 200 {
				t.Fatalf("register: %d %s", status, body)
			}
			for _, srv := range servers {
				waitAnswer(t, srv, `{"Pattern":"role:old"}`, `{"Result":"old"}`)
			}
			time.Sleep(4 * ttl)
			for _, srv := range servers {
				if status, body := post(t, "http://"+srv+"/", `{"Pattern":"role:old"}`); status != 200 || body != `{"Result":"old"}` {
					t.Errorf("%s, after 4 TTLs: %d %s; want the original service's answer", srv, status, body)
				}
				if _, body := do(t, http.MethodGet, "http://"+srv+"/resolve?pattern=role:old", "", nil); !strings.Contains(body, `"Permanent":true`) {
					t.Errorf("%s: /resolve %s; want the instance marked permanent", srv, body)
				}
				if status, _ := post(t, "http://"+srv+"/", `{"Pattern":"role:plain"}`); status != http.StatusNotFound {
					t.Errorf("%s, after 4 TTLs: %d for the registration without renewals; want 404", srv, status)
				}
			}
			if opts.Redis != nil {
				rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
				defer rdb.Close()
				if pttl, err := rdb.PTTL(context.Background(), patternKey(t, rdb, opts.KeyPrefix, "role:old")).Result(); err != nil || pttl != -1 {
					t.Errorf("PTTL of the original service's set = %v, %v; want no expiry (-1)", pttl, err)
				}
			}

			old.stop()
			if status, _ := post(t, "http://"+addr+"/", `{"Pattern":"role:old"}`); status == http.StatusOK {
				t.Fatal("a stopped service answered")
			}
			for _, srv := range servers {
				eventually(t, srv+" forgets the stopped service", func() bool { return resolveCount(t, srv, "role:old") == 0 })
			}
			if opts.Redis != nil {
				eventually(t, "the registry forgets the stopped service", func() bool { return liveInstances(t, testRedis, opts, "role:old") == 0 })
			}

			old.restart(t)
			old.register(t)
			for _, srv := range servers {
				waitAnswer(t, srv, `{"Pattern":"role:old"}`, `{"Result":"old"}`)
			}
		})
	}
}
