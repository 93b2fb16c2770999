package nano_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	nano "github.com/domWinter/go-nano"
)

// The fuzz tests below drive the HTTP entry points with any body. Plain
// `go test` runs their seeds; `go test -fuzz FuzzName` explores.

// checkAnswer fails t unless rec holds an answer of one of the statuses
// allowed, and an error answer has a JSON error body.
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder, allowed ...int) {
	t.Helper()
	ok := false
	for _, s := range allowed {
		ok = ok || rec.Code == s
	}
	if !ok {
		t.Fatalf("status %d, want one of %v: %s", rec.Code, allowed, rec.Body)
	}
	if rec.Code >= 400 {
		var eb struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
			t.Fatalf("status %d with body %q: not a JSON error", rec.Code, rec.Body)
		}
	}
}

var messageSeeds = []string{
	`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`,
	`{"Pattern":"role:math,cmd:sum,extra:1","ServiceRequest":true}`,
	`{"Pattern":"role:math"}`,
	`{"Pattern":"role:math,,cmd:sum"}`,
	`{"Pattern":1}`,
	`{"pattern":"ROLE:math"}`,
	`[]`,
	`null`,
	`{"Pattern":"role:math,cmd:sum","Left":"x"}`,
	"{\"Pattern\":\"role:\x00\"}",
	``,
}

// fuzzService is a service with a sum handler, and one that fails.
func fuzzService(t testing.TB, serverAddr string) *nano.Service {
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:0", Server: serverAddr, Logger: testLogger(), MaxBodyBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	svc.Handle("role:math,cmd:sum", sum)
	svc.Handle("role:fail", func([]byte) ([]byte, error) { return nil, fmt.Errorf("failed") })
	return svc
}

func FuzzServiceEndpoint(f *testing.F) {
	for _, s := range messageSeeds {
		f.Add([]byte(s))
	}
	h := fuzzService(f, "127.0.0.1:1").Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
		checkAnswer(t, rec, 200, 400, 404, 413, 500)
	})
}

func FuzzServerProxy(f *testing.F) {
	for _, s := range messageSeeds {
		f.Add([]byte(s))
	}
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: testLogger(), MaxBodyBytes: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	svc := httptest.NewServer(fuzzService(f, "127.0.0.1:1").Handler())
	f.Cleanup(svc.Close)
	for _, p := range []string{"role:math,cmd:sum", "role:fail"} {
		rec := httptest.NewRecorder()
		reg := fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":%q}`, p, svc.Listener.Addr().String())
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/register", bytes.NewReader([]byte(reg))))
		if rec.Code != 200 {
			f.Fatalf("register: %d %s", rec.Code, rec.Body)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body)))
		checkAnswer(t, rec, 200, 400, 404, 413, 500)
	})
}

func FuzzServerRegister(f *testing.F) {
	for _, s := range []string{
		`{"Pattern":"role:math,cmd:sum","ServiceAddress":"127.0.0.1","ServicePort":8080,"ServerAddress":"127.0.0.1","ServerPort":3000}`,
		`{"Pattern":"role:math","ServiceAddress":"[::1]:8080"}`,
		`{"Pattern":"role:math","ServiceAddress":"svc.default.svc.cluster.local:80","Cache":{}}`,
		`{"Pattern":"role:math","ServiceAddress":"http://x:1/"}`,
		`{"Pattern":"","ServiceAddress":"127.0.0.1:1"}`,
		`{"Pattern":"a","ServicePort":-1}`,
		`{"Pattern":"a","ServiceAddress":"127.0.0.1","ServicePort":99999}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	srv, err := nano.NewServerWithOptions(nano.ServerOptions{Logger: testLogger()})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/register", bytes.NewReader(body)))
		checkAnswer(t, rec, 200, 400, 413)
		if rec.Code != 200 {
			return
		}
		// What was accepted is a pattern and a host:port that resolve finds;
		// it is removed again so that the registry stays small.
		var reg nano.Registration
		if err := json.Unmarshal(rec.Body.Bytes(), &reg); err != nil {
			t.Fatalf("registration answer %s: %v", rec.Body, err)
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/resolve?pattern="+url.QueryEscape(reg.Pattern), nil))
		var res struct {
			Pattern   string
			Instances []struct{ ServiceAddress string }
		}
		json.Unmarshal(rec.Body.Bytes(), &res)
		if rec.Code != 200 || res.Pattern != reg.Pattern || len(res.Instances) != 1 || res.Instances[0].ServiceAddress != reg.ServiceAddress {
			t.Fatalf("registered %+v, resolve says %d %s", reg, rec.Code, rec.Body)
		}
		again, _ := json.Marshal(reg)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/deregister", bytes.NewReader(again)))
		if rec.Code != 200 {
			t.Fatalf("deregister %s: %d %s", again, rec.Code, rec.Body)
		}
	})
}
