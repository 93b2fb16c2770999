package nano_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/armon/go-radix"

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
	reg   originalRegistration
	addr  string
	calls atomicCounter
	ts    *httptest.Server
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
	s := &originalService{}
	s.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.add()
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
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
		payload, err := handle(body)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if msg.ServiceRequest {
			payload, _ = json.Marshal(originalAnswer{Service: s.reg, Payload: payload})
		}
		w.WriteHeader(http.StatusOK)
		w.Write(payload)
	}))
	t.Cleanup(s.ts.Close)
	s.addr = s.ts.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(s.addr)
	_, serverPort, _ := net.SplitHostPort(serverAddr)
	s.reg = originalRegistration{Pattern: pattern, ServiceAddress: s.addr, ServerAddress: serverAddr}
	s.reg.ServicePort, _ = strconv.Atoi(port)
	s.reg.ServerPort, _ = strconv.Atoi(serverPort)
	return s
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
