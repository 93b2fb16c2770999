package nano_test

import (
	"context"
	"crypto/tls"
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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
	"github.com/domWinter/go-nano/internal/testca"
)

// testCA is a certificate authority made for a test.
type testCA struct{ *testca.CA }

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	ca, err := testca.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{ca}
}

// leaf is a certificate the test CA issued, for 127.0.0.1 and
// "localhost", good for servers and clients both.
type leaf = testca.Leaf

// issue issues a leaf whose identity is id: a URI SAN when id has a
// scheme, a DNS SAN otherwise (besides "localhost").
func (ca testCA) issue(t *testing.T, id string) leaf {
	t.Helper()
	l, err := ca.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serving is the TLS configuration of a server or service presenting l;
// with requireClients, it requires client certificates ca signed.
func (ca testCA) serving(l leaf, requireClients bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{l.TLS}}
	if requireClients {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = ca.Pool
	}
	return c
}

// calling is the TLS configuration of a client that trusts ca and
// presents l, if it has a certificate.
func (ca testCA) calling(l leaf) *tls.Config {
	c := &tls.Config{RootCAs: ca.Pool}
	if l.CertPEM != nil {
		c.Certificates = []tls.Certificate{l.TLS}
	}
	return c
}

// httpsClient returns an HTTP client with the TLS configuration c.
func httpsClient(t *testing.T, c *tls.Config) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: c}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// getJSON GETs url with client and decodes the answer into v; it returns
// the status.
func getJSON(t *testing.T, client *http.Client, url string, v any) int {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, body)
		}
	}
	return resp.StatusCode
}

// waitRegisteredTLS waits until the server at addr, reached with client,
// resolves each pattern.
func waitRegisteredTLS(t *testing.T, client *http.Client, addr string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		eventually(t, p+" is registered", func() bool {
			resp, err := client.Get("https://" + addr + "/resolve?pattern=" + url.QueryEscape(p))
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var res struct{ Pattern string }
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&res) == nil && res.Pattern == p
		})
	}
}

// handshakes counts the TLS handshakes, full or resumed, a serving
// configuration makes.
func handshakes(c *tls.Config, n *atomic.Int64) *tls.Config {
	c = c.Clone()
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		n.Add(1)
		return nil, nil
	}
	return c
}

// TestTLSEveryHop: with TLS and client certificates required everywhere,
// registrations, messages through the server, /resolve and direct Act
// calls all work; every listener speaks TLS only, so none of them went
// in plaintext. The instances are registered as TLS, and warm
// connections make no handshake per call.
func TestTLSEveryHop(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "fleet")
	serverCert, sumCert, callerCert, clientCert := ca.issue(t, "nano-server"), ca.issue(t, "sum"), ca.issue(t, "caller"), ca.issue(t, "client")
	var serverHandshakes, serviceHandshakes atomic.Int64
	_, server := startServer(t, nano.ServerOptions{
		TLS:         handshakes(ca.serving(serverCert, true), &serverHandshakes),
		UpstreamTLS: ca.calling(serverCert),
	})
	var sawTLS atomic.Value
	_, _ = serveService(t, server, []func(*nano.ServiceOptions){func(o *nano.ServiceOptions) {
		o.TLS = handshakes(ca.serving(sumCert, true), &serviceHandshakes)
		o.ClientTLS = ca.calling(sumCert)
	}}, func(svc *nano.Service) error {
		return svc.HandleContext("role:math,cmd:sum", func(ctx context.Context, req *nano.Request) ([]byte, error) {
			if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
				sawTLS.Store(req.TLS.PeerCertificates[0].Subject.CommonName)
			}
			return sum(req.Body)
		})
	})
	admin := httpsClient(t, ca.calling(clientCert))
	waitRegisteredTLS(t, admin, server, "role:math,cmd:sum")

	var res struct {
		Instances []struct {
			ServiceAddress string
			TLS            bool
		}
	}
	if code := getJSON(t, admin, "https://"+server+"/resolve?pattern=role:math,cmd:sum", &res); code != 200 || len(res.Instances) != 1 || !res.Instances[0].TLS {
		t.Fatalf("/resolve: %d %+v; want one instance marked TLS", code, res)
	}

	// A message through the server: client -> server -> service.
	resp, err := admin.Post("https://"+server+"/", "application/json", strings.NewReader(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"Result":3`) {
		t.Fatalf("through the server: %d %s", resp.StatusCode, body)
	}
	if who := sawTLS.Load(); who != "nano-server" {
		t.Errorf("the service saw the certificate of %v on a routed message; want the server's", who)
	}

	// A service's Act: caller -> server (/resolve), then caller -> service.
	caller, _ := startService(t, server, nil, func(o *nano.ServiceOptions) {
		o.TLS = ca.serving(callerCert, true)
		o.ClientTLS = ca.calling(callerCert)
	})
	for i := range 20 {
		answer, err := caller.Act([]byte(fmt.Sprintf(`{"Pattern":"role:math,cmd:sum","Left":%d,"Right":1}`, i)), "role:math,cmd:sum")
		if err != nil || string(answer) != fmt.Sprintf(`{"Result":%d}`, i+1) {
			t.Fatalf("Act %d: %s, %v", i, answer, err)
		}
	}
	if who := sawTLS.Load(); who != "caller" {
		t.Errorf("the service saw the certificate of %v on a direct Act; want the caller's", who)
	}

	// A Client through the server only (no peer cache), then warm: no
	// handshake per call.
	client, err := nano.NewClient(nano.ClientOptions{Server: server, TLS: ca.calling(clientCert), PeerTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Act([]byte(`{"Pattern":"role:math,cmd:sum","Left":1}`), "role:math,cmd:sum"); err != nil {
		t.Fatal(err)
	}
	beforeServer, beforeService := serverHandshakes.Load(), serviceHandshakes.Load()
	for range 50 {
		if _, err := client.Act([]byte(`{"Pattern":"role:math,cmd:sum","Left":1}`), "role:math,cmd:sum"); err != nil {
			t.Fatal(err)
		}
		if _, err := caller.Act([]byte(`{"Pattern":"role:math,cmd:sum","Left":1}`), "role:math,cmd:sum"); err != nil {
			t.Fatal(err)
		}
	}
	if n, m := serverHandshakes.Load()-beforeServer, serviceHandshakes.Load()-beforeService; n > 0 || m > 0 {
		t.Errorf("100 warm calls made %d handshakes at the server and %d at the service; want none", n, m)
	}
}

// TestTLSRefusals: where TLS is required, plaintext gets nowhere; a peer
// whose certificate another authority signed, or that has none where one
// is required, is refused on every hop, and a service refused that way is
// not registered.
func TestTLSRefusals(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t, "fleet"), newTestCA(t, "other")
	serverCert, sumCert, clientCert, strangerCert := ca.issue(t, "nano-server"), ca.issue(t, "sum"), ca.issue(t, "client"), other.issue(t, "stranger")
	_, server := startServer(t, nano.ServerOptions{TLS: ca.serving(serverCert, true), UpstreamTLS: ca.calling(serverCert)})
	var calls atomic.Int64
	count := func(b []byte) ([]byte, error) { calls.Add(1); return sum(b) }
	startService(t, server, map[string]nano.HandlerFunc{"role:math,cmd:sum": count}, func(o *nano.ServiceOptions) {
		o.TLS, o.ClientTLS = ca.serving(sumCert, true), ca.calling(sumCert)
	})
	admin := httpsClient(t, ca.calling(clientCert))
	waitRegisteredTLS(t, admin, server, "role:math,cmd:sum")
	msg := []byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`)

	t.Run("plaintext", func(t *testing.T) {
		// net/http answers a plaintext request on a TLS port with 400.
		if code, body := post(t, "http://"+server+"/", string(msg)); code != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS server: %d %s", code, body)
		}
		plain, err := nano.NewClient(nano.ClientOptions{Server: server, PeerTTL: -1, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		if answer, err := plain.Act(msg, "role:math,cmd:sum"); err == nil {
			t.Errorf("a plaintext client's Act got %s", answer)
		}
		// A plaintext service cannot register.
		startService(t, server, map[string]nano.HandlerFunc{"role:plain": sum})
		time.Sleep(300 * time.Millisecond)
		if code := getJSON(t, admin, "https://"+server+"/resolve?pattern=role:plain", nil); code != http.StatusNotFound {
			t.Errorf("a plaintext service's pattern resolves: %d", code)
		}
	})

	t.Run("no client certificate", func(t *testing.T) {
		anonymous, err := nano.NewClient(nano.ClientOptions{Server: server, TLS: ca.calling(leaf{}), PeerTTL: -1, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer anonymous.Close()
		if answer, err := anonymous.Act(msg, "role:math,cmd:sum"); err == nil {
			t.Errorf("a client without a certificate got %s", answer)
		}
	})

	t.Run("wrong authority", func(t *testing.T) {
		// A client that trusts another authority refuses the server.
		misled, err := nano.NewClient(nano.ClientOptions{Server: server, TLS: other.calling(clientCert), PeerTTL: -1, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer misled.Close()
		if answer, err := misled.Act(msg, "role:math,cmd:sum"); err == nil {
			t.Errorf("a client trusting another authority got %s", answer)
		}
		// A service whose certificate another authority signed cannot
		// register.
		startService(t, server, map[string]nano.HandlerFunc{"role:stranger": sum}, func(o *nano.ServiceOptions) {
			o.TLS, o.ClientTLS = other.serving(strangerCert, false), ca.calling(strangerCert)
		})
		// A server that trusts another authority refuses the service.
		_, doubting := startServer(t, nano.ServerOptions{TLS: ca.serving(serverCert, false), UpstreamTLS: other.calling(serverCert)})
		startService(t, doubting, map[string]nano.HandlerFunc{"role:doubted": count}, func(o *nano.ServiceOptions) {
			o.TLS, o.ClientTLS = ca.serving(sumCert, false), ca.calling(sumCert)
		})
		waitRegisteredTLS(t, admin, doubting, "role:doubted")
		before := calls.Load()
		resp, err := admin.Post("https://"+doubting+"/", "application/json", strings.NewReader(`{"Pattern":"role:doubted","Left":1}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 500 || calls.Load() != before {
			t.Errorf("a server trusting another authority reached the service: %d %s", resp.StatusCode, body)
		}
		if code := getJSON(t, admin, "https://"+server+"/resolve?pattern=role:stranger", nil); code != http.StatusNotFound {
			t.Errorf("a service of another authority is registered: %d", code)
		}
	})

	// The legitimate caller still gets through, and only its calls
	// reached the handler.
	before := calls.Load()
	resp, err := admin.Post("https://"+server+"/", "application/json", strings.NewReader(string(msg)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || calls.Load() != before+1 {
		t.Errorf("the fleet's own client: %d, %d calls", resp.StatusCode, calls.Load()-before)
	}
}

// TestIdentities: a server with Identities takes from each certificate
// identity the registrations of its own patterns only; the others are
// answered 403 with a JSON error, logged and counted, and leave the
// registry (in Redis) as it was. Deregistrations follow the same rule.
func TestIdentities(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "fleet")
	serverCert := ca.issue(t, "nano-server")
	sumCert := ca.issue(t, "spiffe://fleet.test/ns/math/sa/sum")
	stockCert := ca.issue(t, "stock.fleet.test")
	nobodyCert := ca.issue(t, "spiffe://fleet.test/ns/x/sa/nobody")
	logs := &logRecords{}
	opts := redisOptions(t, testRedis)
	opts.TLS = ca.serving(serverCert, true)
	opts.UpstreamTLS = ca.calling(serverCert)
	opts.Logger = slog.New(logs)
	opts.Identities = nano.Identities{
		"spiffe://fleet.test/ns/math/sa/sum": {"role:math,cmd:sum"},
		"stock.fleet.test":                   {"role:stock"},
	}
	srv, server := startServer(t, opts)
	sumSvc, _ := startService(t, server, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum}, func(o *nano.ServiceOptions) {
		o.TLS, o.ClientTLS = ca.serving(sumCert, false), ca.calling(sumCert)
		o.RetryInterval = 200 * time.Millisecond
	})
	waitRegisteredTLS(t, httpsClient(t, ca.calling(sumCert)), server, "role:math,cmd:sum")
	rdb := redis.NewClient(&redis.Options{Addr: testRedis.Addr})
	defer rdb.Close()
	state := registryState(t, rdb, opts.KeyPrefix)

	send := func(cert leaf, path, pattern, addr string) (int, string) {
		t.Helper()
		body := fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":%q,"TLS":true}`, pattern, addr)
		req, _ := http.NewRequest(http.MethodPost, "https://"+server+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		resp, err := httpsClient(t, ca.calling(cert)).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	sumAddr := listedAddress(t, httpsClient(t, ca.calling(sumCert)), server, "role:math,cmd:sum")
	refusals := []struct {
		name               string
		cert               leaf
		path, pattern, who string
	}{
		{"another identity's pattern", sumCert, "/register", "role:stock,cmd:reserve", "spiffe://fleet.test/ns/math/sa/sum"},
		{"a longer field is not a prefix", stockCert, "/register", "role:stockroom", "stock.fleet.test"},
		{"a pattern under no identity", stockCert, "/register", "role:math", "stock.fleet.test"},
		{"an identity not listed", nobodyCert, "/register", "role:math,cmd:sum", "nobody"},
		{"deregistering another's instance", stockCert, "/deregister", "role:math,cmd:sum", "stock.fleet.test"},
	}
	for _, r := range refusals {
		code, body := send(r.cert, r.path, r.pattern, sumAddr)
		var e struct{ Error string }
		if code != http.StatusForbidden || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, r.who) {
			t.Errorf("%s: %d %s; want 403 with a JSON error naming %s", r.name, code, body, r.who)
		}
	}
	if got := registryState(t, rdb, opts.KeyPrefix); got != state {
		t.Errorf("refused requests changed the registry:\n%s\nwas:\n%s", got, state)
	}
	if n := len(logs.matching("registration refused")); n < len(refusals) {
		t.Errorf("%d refusals logged; want %d", n, len(refusals))
	}
	resp, err := httpsClient(t, ca.calling(sumCert)).Get("https://" + server + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf(`nano_registrations_refused_total{status="403"} %d`, len(refusals)); !strings.Contains(string(m), want) {
		t.Errorf("/metrics lacks %s", want)
	}

	// New identities apply at once; they cannot be turned off.
	if err := srv.SetIdentities(nano.Identities{"stock.fleet.test": {"role:stock"}, "spiffe://fleet.test/ns/math/sa/sum": {"role:math,cmd:sum", "role:extra"}}); err != nil {
		t.Fatal(err)
	}
	if code, body := send(sumCert, "/register", "role:extra", sumAddr); code != http.StatusOK {
		t.Errorf("sum registering role:extra once allowed: %d %s", code, body)
	}
	if code, _ := send(sumCert, "/deregister", "role:extra", sumAddr); code != http.StatusOK {
		t.Errorf("sum deregistering role:extra: %d", code)
	}
	if err := srv.SetIdentities(nil); !errors.Is(err, nano.ErrInvalidOptions) {
		t.Errorf("SetIdentities(nil): %v", err)
	}
	if err := srv.SetIdentities(nano.Identities{"a": {"role:a,"}}); !errors.Is(err, nano.ErrInvalidOptions) {
		t.Errorf("SetIdentities with a bad pattern: %v", err)
	}
	plain, _ := startServer(t, nano.ServerOptions{})
	if err := plain.SetIdentities(nano.Identities{"a": {"role:a"}}); !errors.Is(err, nano.ErrInvalidOptions) {
		t.Errorf("SetIdentities on a server without Identities: %v", err)
	}

	// What each identity may do, it does: a whole-field prefix covers
	// the longer patterns.
	if code, body := send(stockCert, "/register", "role:stock,cmd:reserve", sumAddr); code != http.StatusOK {
		t.Errorf("stock registering its own pattern: %d %s", code, body)
	}
	if code, body := send(stockCert, "/deregister", "role:stock,cmd:reserve", sumAddr); code != http.StatusOK {
		t.Errorf("stock deregistering its own pattern: %d %s", code, body)
	}
	// A service refused says so on its /readyz and asks again: once its
	// identity is allowed the pattern, it registers, without a restart.
	if err := sumSvc.Handle("role:admin", sum); err != nil {
		t.Fatal(err)
	}
	readyz := func() (int, string) {
		resp, err := httpsClient(t, ca.calling(sumCert)).Get("https://" + sumAddr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		return resp.StatusCode, readAll(resp)
	}
	eventually(t, "the service reports the refusal", func() bool {
		code, body := readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "role:admin")
	})
	if code := getJSON(t, httpsClient(t, ca.calling(sumCert)), "https://"+server+"/resolve?pattern=role:admin", nil); code != http.StatusNotFound {
		t.Errorf("role:admin resolves: %d", code)
	}
	if err := srv.SetIdentities(nano.Identities{"spiffe://fleet.test/ns/math/sa/sum": {"role:math,cmd:sum", "role:admin"}}); err != nil {
		t.Fatal(err)
	}
	waitRegisteredTLS(t, httpsClient(t, ca.calling(sumCert)), server, "role:admin")
	eventually(t, "the service is ready", func() bool { code, _ := readyz(); return code == http.StatusOK })
}

// listedAddress returns the address of the first instance the server at
// addr resolves pattern to.
func listedAddress(t *testing.T, client *http.Client, addr, pattern string) string {
	t.Helper()
	var res struct {
		Instances []struct{ ServiceAddress string }
	}
	if code := getJSON(t, client, "https://"+addr+"/resolve?pattern="+url.QueryEscape(pattern), &res); code != 200 || len(res.Instances) == 0 {
		t.Fatalf("/resolve %s: %d %+v", pattern, code, res)
	}
	return res.Instances[0].ServiceAddress
}

// TestTLSRotationUnderLoad: the server and a service read their
// certificates from files; new certificates written over them (the key
// first, so that for a moment the pair does not match) are presented to
// new connections within seconds, without a restart, while clients making
// new connections all along see no failed call.
func TestTLSRotationUnderLoad(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "fleet")
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(path(name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	install := func(name string, l leaf) {
		write(name+".key", l.KeyPEM)
		write(name+".crt", l.CertPEM)
	}
	write("ca.crt", ca.PEM)
	install("server", ca.issue(t, "nano-server"))
	install("sum", ca.issue(t, "sum"))
	clientCert := ca.issue(t, "client")
	files := func(name string) *nano.TLSFiles {
		f, err := nano.LoadTLSFiles(path(name+".crt"), path(name+".key"), path("ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	serverFiles, sumFiles := files("server"), files("sum")
	_, server := startServer(t, nano.ServerOptions{TLS: serverFiles.ServerConfig(true), UpstreamTLS: serverFiles.ClientConfig()})
	_, sumAddr := startService(t, server, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum}, func(o *nano.ServiceOptions) {
		o.TLS, o.ClientTLS = sumFiles.ServerConfig(true), sumFiles.ClientConfig()
	})
	waitRegisteredTLS(t, httpsClient(t, ca.calling(clientCert)), server, "role:math,cmd:sum")

	// presented returns the serial number of the certificate a new
	// connection to addr is shown.
	presented := func(addr string) int64 {
		conn, err := tls.Dial("tcp", addr, ca.calling(clientCert))
		if err != nil {
			t.Errorf("dial %s: %v", addr, err)
			return 0
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}

	// Clients through the server and clients calling the service
	// directly, each replaced after a few calls, so that new connections
	// and handshakes go on during the rotation.
	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			peerTTL := time.Duration(-1)
			if i%2 == 1 {
				peerTTL = time.Minute
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := nano.NewClient(nano.ClientOptions{Server: server, TLS: ca.calling(clientCert), PeerTTL: peerTTL})
				if err != nil {
					t.Error(err)
					return
				}
				for range 5 {
					if _, err := c.Act([]byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":1}`), "role:math,cmd:sum"); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					} else {
						ok.Add(1)
					}
				}
				c.Close()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	newServer, newSum := ca.issue(t, "nano-server"), ca.issue(t, "sum")
	install("server", newServer)
	install("sum", newSum)
	eventually(t, "the server presents its new certificate", func() bool { return presented(server) == newServer.Serial })
	eventually(t, "the service presents its new certificate", func() bool { return presented(sumAddr) == newSum.Serial })
	before := ok.Load()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d calls failed during the rotation; the first: %v", n, n+ok.Load(), firstErr.Load())
	}
	if ok.Load() == before {
		t.Error("no call succeeded after the rotation")
	}
	t.Logf("%d calls, %d after both new certificates were seen", ok.Load(), ok.Load()-before)
	if err := serverFiles.Err(); err != nil {
		t.Errorf("the server's files: %v", err)
	}
}

// TestNanoServerTLS: nano-server takes its certificate, key, CA bundle,
// the requirement of client certificates and the identities from flags,
// and a service made by the original API's NewService takes its own from
// the environment (NANO_TLS_CERT, NANO_TLS_KEY, NANO_TLS_CA), as does the
// sum program of the container examples: the services register over
// mutual TLS, as TLS, under the identities the file allows, and messages
// reach them through the server. The health ports answer in plain HTTP.
// Bad TLS settings stop the program with status 2 and a message naming
// the flag.
func TestNanoServerTLS(t *testing.T) {
	t.Parallel()
	bin := buildProgram(t, ".", "./cmd/nano-server")
	ca := newTestCA(t, "fleet")
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	for name, data := range map[string][]byte{"ca.crt": ca.PEM, "identities.json": []byte(`{"env.fleet.test": ["role:env"], "sum.fleet.test": ["role:math,cmd:sum"]}`)} {
		if err := os.WriteFile(path(name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, l := range map[string]leaf{"server": ca.issue(t, "nano-server"), "env": ca.issue(t, "env.fleet.test"), "sum": ca.issue(t, "sum.fleet.test"), "client": ca.issue(t, "client")} {
		if err := os.WriteFile(path(name+".crt"), l.CertPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path(name+".key"), l.KeyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	healthPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("127.0.0.1:%d", port)
	p := startProgramArgs(t, bin, []string{"-host", "127.0.0.1", "-port", fmt.Sprint(port), "-health-port", fmt.Sprint(healthPort),
		"-tls-cert", path("server.crt"), "-tls-key", path("server.key"), "-tls-ca", path("ca.crt"),
		"-tls-client-certs", "-identities", path("identities.json")})
	p.waitOutput(t, "listening")
	if !strings.Contains(p.out.String(), "tls=true") {
		t.Errorf("the startup line does not say TLS:\n%s", p.out.String())
	}
	startProgram(t, os.Args[0], childVar+"=env-service", "NANO_SERVER_ADDRESS=127.0.0.1", fmt.Sprintf("NANO_TEST_SERVER_PORT=%d", port),
		"NANO_TLS_CERT="+path("env.crt"), "NANO_TLS_KEY="+path("env.key"), "NANO_TLS_CA="+path("ca.crt")).waitOutput(t, "listening ")
	client := httpsClient(t, ca.calling(ca.issue(t, "client")))
	waitRegisteredTLS(t, client, server, "role:env")
	var res struct{ Instances []struct{ TLS bool } }
	if code := getJSON(t, client, "https://"+server+"/resolve?pattern=role:env", &res); code != 200 || len(res.Instances) != 1 || !res.Instances[0].TLS {
		t.Errorf("/resolve role:env: %d %+v; want one TLS instance", code, res)
	}
	resp, err := client.Post("https://"+server+"/", "application/json", strings.NewReader(`{"Pattern":"role:env"}`))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(resp); resp.StatusCode != 200 || body != `{"ID":"env"}` {
		t.Errorf("through the server: %d %s", resp.StatusCode, body)
	}
	// The sum program of the container examples, with its health port.
	sumPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	sumHealth, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	startProgram(t, buildProgram(t, ".", "./_examples/docker/sum"), "NANO_SERVER="+server, "NANO_SERVICE_ADDRESS=127.0.0.1",
		fmt.Sprintf("NANO_SERVICE_PORT=%d", sumPort), fmt.Sprintf("NANO_HEALTH_PORT=%d", sumHealth),
		"NANO_TLS_CERT="+path("sum.crt"), "NANO_TLS_KEY="+path("sum.key"), "NANO_TLS_CA="+path("ca.crt"), "NANO_TLS_CLIENT_CERTS=true")
	waitRegisteredTLS(t, client, server, "role:math,cmd:sum")
	resp, err = client.Post("https://"+server+"/", "application/json", strings.NewReader(`{"Pattern":"role:math,cmd:sum","Left":2,"Right":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(resp); resp.StatusCode != 200 || body != `{"Result":5}` {
		t.Errorf("the sum program through the server: %d %s", resp.StatusCode, body)
	}
	// Its TLS port requires a certificate; its health port is plain.
	if resp, err := httpsClient(t, ca.calling(leaf{})).Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", sumPort)); err == nil {
		t.Errorf("the sum program answered a caller without a certificate: %d", resp.StatusCode)
		resp.Body.Close()
	}
	for _, hp := range []int{healthPort, sumHealth} {
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			if code, body := do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", hp, path), "", nil); code != 200 {
				t.Errorf("health port %d: GET %s: %d %s", hp, path, code, body)
			}
		}
		if code, _ := do(t, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/resolve?pattern=role:env", hp), "", nil); code != http.StatusNotFound {
			t.Errorf("health port %d: /resolve answered %d; want 404", hp, code)
		}
	}

	// A plaintext server that trusts the CA (-tls-ca alone), as during a
	// move to TLS, calls a TLS service over HTTPS.
	plainPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	plainServer := fmt.Sprintf("127.0.0.1:%d", plainPort)
	startProgramArgs(t, bin, []string{"-host", "127.0.0.1", "-port", fmt.Sprint(plainPort), "-tls-ca", path("ca.crt")}).waitOutput(t, "listening")
	startService(t, plainServer, map[string]nano.HandlerFunc{"role:moving": sum}, func(o *nano.ServiceOptions) {
		o.TLS = ca.serving(ca.issue(t, "moving"), false)
	})
	waitRegistered(t, plainServer, "role:moving")
	if code, body := post(t, "http://"+plainServer+"/", `{"Pattern":"role:moving","Left":1,"Right":1}`); code != 200 || body != `{"Result":2}` {
		t.Errorf("a plaintext server calling a TLS service: %d %s", code, body)
	}

	// NewServer, the original API's constructor, takes the same settings
	// from its environment.
	envPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	startProgram(t, os.Args[0], childVar+"=env-server", fmt.Sprintf("NANO_TEST_SERVER_PORT=%d", envPort),
		"NANO_TLS_CERT="+path("server.crt"), "NANO_TLS_KEY="+path("server.key"), "NANO_TLS_CA="+path("ca.crt"),
		"NANO_TLS_CLIENT_CERTS=true", "NANO_IDENTITIES="+path("identities.json")).waitOutput(t, "listening")
	register := func(addr, cert, pattern string) int {
		t.Helper()
		pair, err := tls.LoadX509KeyPair(path(cert+".crt"), path(cert+".key"))
		if err != nil {
			t.Fatal(err)
		}
		c := httpsClient(t, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{pair}})
		var resp *http.Response
		eventually(t, addr+" answers over TLS", func() bool {
			resp, err = c.Post("https://"+addr+"/register", "application/json",
				strings.NewReader(fmt.Sprintf(`{"Pattern":%q,"ServiceAddress":"127.0.0.1:1"}`, pattern)))
			return err == nil
		})
		readAll(resp)
		return resp.StatusCode
	}
	envServer := fmt.Sprintf("127.0.0.1:%d", envPort)
	if code := register(envServer, "env", "role:env"); code != 200 {
		t.Errorf("NewServer: the env identity registering role:env: %d", code)
	}
	if code := register(envServer, "client", "role:env"); code != http.StatusForbidden {
		t.Errorf("NewServer: an identity not in the file registering role:env: %d; want 403", code)
	}

	// nano-server reads its identities file again when it changes, and
	// keeps what it had when the new file does not load.
	if code := register(server, "client", "role:late"); code != http.StatusForbidden {
		t.Errorf("client registering role:late before the change: %d; want 403", code)
	}
	// Each file is written whole and renamed into place, as the kubelet
	// swaps a ConfigMap's, so that no half-written file is read.
	replace := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(path(name+".new"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path(name+".new"), path(name)); err != nil {
			t.Fatal(err)
		}
	}
	replace("identities.json", []byte(`{"env.fleet.test": ["role:env"], "sum.fleet.test": ["role:math,cmd:sum"], "client": ["role:late"]}`))
	eventually(t, "the new identities apply", func() bool { return register(server, "client", "role:late") == 200 })
	broken := strings.Count(p.out.String(), "identities file does not load")
	replace("identities.json", []byte(`{"client": "role:late"`))
	eventually(t, "nano-server logs that the identities file does not load", func() bool {
		return strings.Count(p.out.String(), "identities file does not load") > broken
	})
	if code := register(server, "client", "role:late"); code != 200 {
		t.Errorf("client registering role:late after a broken change: %d; want the previous identities kept", code)
	}

	// nanoctl reaches it with the CA and a client certificate.
	nanoctl := buildProgram(t, ".", "./cmd/nanoctl")
	for _, c := range []struct {
		args   []string
		status int
	}{
		{[]string{"-tls-ca", path("ca.crt"), "-tls-cert", path("client.crt"), "-tls-key", path("client.key"), "ls"}, 0},
		{[]string{"-tls-ca", path("ca.crt"), "ls"}, 1},
		{[]string{"ls"}, 1},
		{[]string{"-tls-cert", path("client.crt"), "-tls-key", path("client.key"), "ls"}, 2},
	} {
		cmd := exec.Command(nanoctl, append([]string{"-server", server}, c.args...)...)
		cmd.Env = environWithout("NANO_")
		out, err := cmd.CombinedOutput()
		status := 0
		if exit, ok := errors.AsType[*exec.ExitError](err); ok {
			status = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if status != c.status || status == 0 && !strings.Contains(string(out), fmt.Sprintf("https://127.0.0.1:%d", sumPort)) {
			t.Errorf("nanoctl %q: status %d, %s; want status %d", c.args, status, out, c.status)
		}
	}

	// Plaintext gets net/http's 400 for a plaintext request on a TLS port.
	if resp, err := http.Get("http://" + server + "/healthz"); err == nil {
		if body := readAll(resp); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plaintext /healthz: %d %s", resp.StatusCode, body)
		}
	}

	// A certificate file that stops loading is logged, and the server
	// goes on with the last good one; and logged again when it loads.
	good, err := os.ReadFile(path("server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	replace("server.crt", []byte("not a certificate"))
	p.waitOutput(t, "TLS files do not load") // with no handshake to make it look
	// New connections get the last good certificate meanwhile.
	clientPair, err := tls.LoadX509KeyPair(path("client.crt"), path("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	fresh := httpsClient(t, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{clientPair}})
	if resp, err := fresh.Get("https://" + server + "/healthz"); err != nil {
		t.Errorf("a new connection while the certificate file is broken: %v", err)
	} else if readAll(resp); resp.StatusCode != 200 {
		t.Errorf("a new connection while the certificate file is broken: %d", resp.StatusCode)
	}
	replace("server.crt", good)
	p.waitOutput(t, "TLS files load again")

	t.Run("bad configuration", func(t *testing.T) {
		for _, c := range []struct {
			args  []string
			names string
		}{
			{[]string{"-tls-cert", path("missing.crt"), "-tls-key", path("server.key")}, "-tls-cert"},
			{[]string{"-tls-cert", path("server.crt")}, "-tls-cert"},
			{[]string{"-tls-cert", path("server.crt"), "-tls-key", path("env.key")}, "-tls-cert"},
			{[]string{"-tls-client-certs"}, "-tls-client-certs"},
			{[]string{"-port", "7000", "-health-port", "7000"}, "-health-port"},
			{[]string{"-tls-cert", path("server.crt"), "-tls-key", path("server.key"), "-tls-client-certs"}, "-tls-ca"},
			{[]string{"-tls-cert", path("server.crt"), "-tls-key", path("server.key"), "-tls-ca", path("ca.crt"), "-identities", path("identities.json")}, "-tls-client-certs"},
			{[]string{"-tls-cert", path("server.crt"), "-tls-key", path("server.key"), "-tls-ca", path("ca.crt"), "-tls-client-certs", "-identities", path("ca.crt")}, "-identities"},
		} {
			p := startProgramArgs(t, bin, append([]string{"-port", "0"}, c.args...))
			select {
			case err := <-p.done:
				p.done <- err
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(p.out.String(), c.names) {
					t.Errorf("%q: exit %v with output %q; want status 2 and a message naming %s", c.args, err, p.out.String(), c.names)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%q: still running with a bad configuration", c.args)
			}
		}
	})
}

// TestIdentitiesRules: an identities file must be one JSON object of
// lists of valid patterns, and a server refuses Identities without TLS
// that asks for client certificates.
func TestIdentitiesRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		name, content string
		ok            bool
	}{
		{"good", `{"spiffe://x/sa/a": ["role:a", " role:b , cmd:c "], "b.svc": ["*"]}`, true},
		{"null", `null`, false},
		{"list", `["role:a"]`, false},
		{"two values", `{} {}`, false},
		{"bad pattern", `{"a.svc": ["role:a,,cmd:b"]}`, false},
		{"empty identity", `{" ": ["role:a"]}`, false},
		{"not a list", `{"a.svc": "role:a"}`, false},
	} {
		file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".json")
		if err := os.WriteFile(file, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		ids, err := nano.LoadIdentities(file)
		if c.ok != (err == nil) || err != nil && !errors.Is(err, nano.ErrInvalidOptions) {
			t.Errorf("%s: %v", c.name, err)
		}
		if c.ok && strings.Join(ids["spiffe://x/sa/a"], "|") != "role:a|role:b,cmd:c" {
			t.Errorf("%s: patterns not canonical: %q", c.name, ids["spiffe://x/sa/a"])
		}
	}
	if _, err := nano.LoadIdentities(filepath.Join(dir, "missing.json")); !errors.Is(err, nano.ErrInvalidOptions) {
		t.Errorf("a missing file: %v", err)
	}

	ca := newTestCA(t, "fleet")
	cert := ca.issue(t, "nano-server")
	ids := nano.Identities{"a.svc": {"role:a"}}
	for name, data := range map[string][]byte{"tls.crt": cert.CertPEM, "tls.key": cert.KeyPEM, "ca.crt": ca.PEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, err := nano.LoadTLSFiles(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	withRedis := func(o nano.ServerOptions) nano.ServerOptions {
		r := redisOptions(t, testRedis)
		o.Redis, o.KeyPrefix = r.Redis, r.KeyPrefix
		return o
	}
	for _, c := range []struct {
		name string
		opts nano.ServerOptions
		ok   bool
	}{
		{"without TLS", nano.ServerOptions{Identities: ids}, false},
		{"TLS without client certificates", nano.ServerOptions{Identities: ids, TLS: ca.serving(cert, false)}, false},
		{"a bad pattern", nano.ServerOptions{Identities: nano.Identities{"a.svc": {"role:a,"}}, TLS: ca.serving(cert, true)}, false},
		{"mutual TLS", nano.ServerOptions{Identities: ids, TLS: ca.serving(cert, true)}, true},
		{"files without client certificates", nano.ServerOptions{Identities: ids, TLS: files.ServerConfig(false)}, false},
		{"files with client certificates", nano.ServerOptions{Identities: ids, TLS: files.ServerConfig(true)}, true},
		{"original keys", withRedis(nano.ServerOptions{Identities: ids, TLS: ca.serving(cert, true), OriginalKeys: true}), false},
	} {
		c.opts.Logger = testLogger()
		srv, err := nano.NewServerWithOptions(c.opts)
		if c.ok != (err == nil) || err != nil && !errors.Is(err, nano.ErrInvalidOptions) {
			t.Errorf("%s: %v", c.name, err)
		}
		if srv != nil {
			srv.Shutdown(context.Background())
		}
	}
}

// TestIdentitiesNeedVerifiedCertificates: only a certificate crypto/tls
// verified against ClientCAs counts. A program's own VerifyConnection on
// the top-level configuration does not run when GetConfigForClient
// replaces it, so a certificate of another authority that only reached a
// per-client configuration asking for any certificate is refused.
func TestIdentitiesNeedVerifiedCertificates(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t, "fleet"), newTestCA(t, "other")
	serverCert := ca.issue(t, "nano-server")
	forged := other.issue(t, "stock.fleet.test")
	var checked atomic.Bool
	serving := ca.serving(serverCert, true)
	serving.VerifyConnection = func(tls.ConnectionState) error {
		checked.Store(true)
		return errors.New("refused by the program")
	}
	serving.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{Certificates: []tls.Certificate{serverCert.TLS}, ClientAuth: tls.RequireAnyClientCert}, nil
	}
	_, server := startServer(t, nano.ServerOptions{TLS: serving, Identities: nano.Identities{"stock.fleet.test": {"role:stock"}}})
	req, _ := http.NewRequest(http.MethodPost, "https://"+server+"/register", strings.NewReader(`{"Pattern":"role:stock","ServiceAddress":"127.0.0.1:1"}`))
	req.Header.Set("Accept", "application/json")
	resp, err := httpsClient(t, ca.calling(forged)).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "verified") {
		t.Errorf("a certificate of another authority: %d %s; want 403", resp.StatusCode, body)
	}
	if checked.Load() {
		t.Error("the top-level VerifyConnection ran; the test no longer shows what it should")
	}
}

// TestTLSHandshakeIsBounded: a client that connects to a TLS server and
// never finishes its handshake (nothing sent, or half a ClientHello) is
// cut off after ReadHeaderTimeout, as one that never finishes its
// request headers is.
func TestTLSHandshakeIsBounded(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "fleet")
	_, server := startServer(t, nano.ServerOptions{TLS: ca.serving(ca.issue(t, "nano-server"), false), ReadHeaderTimeout: 200 * time.Millisecond})
	for name, send := range map[string][]byte{"nothing": nil, "half a hello": {0x16, 0x03, 0x01, 0x02, 0x00, 0x01}} {
		conn, err := net.Dial("tcp", server)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(send)
		start := time.Now()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(conn)
		conn.Close()
		if err != nil || time.Since(start) > 3*time.Second {
			t.Errorf("%s: the connection was not closed by the server (%v after %v)", name, err, time.Since(start).Round(time.Millisecond))
		}
	}
}
