package nano_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// The conformance tests send the same raw bytes to a nano server, to a
// nano service and to a plain net/http server with the same limits, and
// expect the three to answer alike: net/http is the reference for every
// HTTP behaviour, and nano may only be stricter where a case says so.

// conformanceLimit is the body limit of the three targets.
const conformanceLimit = 64 << 10

// conformanceToken guards the registry of the nano server, so that no
// input sent to it registers or removes a service.
const conformanceToken = "conformance-token"

// sumPattern is the pattern the sum handler of the targets serves.
const sumPattern = "role:math,cmd:sum"

// httpTargets are a nano server, a nano service registered at it and a
// plain net/http server, serving with the same body limit, header limit
// and timeouts.
type httpTargets struct {
	server, service, plain string // addresses

	smuggled tagCounts // the Smuggled tags of the messages a handler ran
	plainRan sync.Map  // remote address -> struct{}: connections whose requests reached the plain handler
}

// targetList names the addresses of ts, the reference first.
func (ts *httpTargets) targetList() []struct{ name, addr string } {
	return []struct{ name, addr string }{
		{"plain", ts.plain}, {"server", ts.server}, {"service", ts.service},
	}
}

// tagCounts counts strings; it is safe for concurrent use.
type tagCounts struct {
	mu sync.Mutex     // guards n
	n  map[string]int // tag -> times seen
}

func (c *tagCounts) add(tag string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[tag]++
}

func (c *tagCounts) count(tag string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[tag]
}

// startTargets serves the three targets on loopback listeners until the
// test ends, each with timeout as its ReadHeaderTimeout and ReadTimeout,
// and waits until the server routes sumPattern to the service. It takes a
// testing.TB, unlike startServer, so that a fuzz target can use it.
func startTargets(tb testing.TB, timeout time.Duration) *httpTargets {
	tb.Helper()
	ts := &httpTargets{}
	const idle = 5 * time.Second

	srv, err := nano.NewServerWithOptions(nano.ServerOptions{
		Token:             conformanceToken,
		MaxBodyBytes:      conformanceLimit,
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		IdleTimeout:       idle,
		Logger:            testLogger(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ts.server = serveOn(tb, srv.Serve, func() { srv.Shutdown(context.Background()) })

	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{
		Addr:              "127.0.0.1:0",
		Server:            ts.server,
		Token:             conformanceToken,
		MaxBodyBytes:      conformanceLimit,
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		IdleTimeout:       idle,
		Logger:            testLogger(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := svc.Handle(sumPattern, ts.sum); err != nil {
		tb.Fatal(err)
	}
	ts.service = serveOn(tb, svc.Serve, func() { svc.Shutdown(context.Background()) })

	plain := &http.Server{
		Handler:           http.HandlerFunc(ts.plainHandler),
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    http.DefaultMaxHeaderBytes, // what nano servers and services use
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	if os.Getenv("NANO_TEST_LOG") != "" {
		plain.ErrorLog = log.New(os.Stderr, "plain: ", 0)
	}
	ts.plain = serveOn(tb, plain.Serve, func() { plain.Close() })

	waitRoutes(tb, ts.server, sumPattern)
	return ts
}

// serveOn runs serve on a new loopback listener, calls stop when the test
// ends, and returns the listener's address.
func serveOn(tb testing.TB, serve func(net.Listener) error, stop func()) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go serve(l)
	tb.Cleanup(stop)
	return l.Addr().String()
}

// waitRoutes waits until the server at addr resolves pattern to itself, as
// waitRegistered does for a *testing.T.
func waitRoutes(tb testing.TB, addr, pattern string) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/resolve?pattern=" + url.QueryEscape(pattern))
		if err == nil {
			var res struct{ Pattern string }
			ok := resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&res) == nil && res.Pattern == pattern
			resp.Body.Close()
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting until %s is registered at %s", pattern, addr)
		}
	}
}

// sum is the handler of the service, and the plain server's answer to a
// valid message: the sum handler's answer, padded with Pad bytes when the
// message asks for them. A message with a Smuggled tag is counted: the
// cases hide such messages where no request may be read.
func (ts *httpTargets) sum(body []byte) ([]byte, error) {
	var m struct {
		Smuggled string
		Pad      int
	}
	if json.Unmarshal(body, &m) == nil && m.Smuggled != "" {
		ts.smuggled.add(m.Smuggled)
	}
	out, err := sum(body)
	if err != nil || m.Pad <= 0 {
		return out, err
	}
	var r struct{ Result int }
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		Result int
		Pad    string
	}{r.Result, strings.Repeat("x", min(m.Pad, 1<<20))})
}

// plainHandler is the handler of the plain server. It answers as nano
// does at the message level, so that what differs is HTTP alone: /healthz
// for GET, 405 for other methods, 413 for an announced length over the
// limit (at once, as nano refuses it: before any 100 Continue) or a body
// that grows past it, 400 for a body that cannot be read or is not a
// message for the sum handler, else the sum handler's answer.
func (ts *httpTargets) plainHandler(w http.ResponseWriter, r *http.Request) {
	ts.plainRan.Store(r.RemoteAddr, struct{}{})
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		io.WriteString(w, `{"status":"ok"}`+"\n")
		return
	}
	fail := func(status int) {
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":%q}`+"\n", http.StatusText(status))
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > conformanceLimit {
		fail(http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, conformanceLimit))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		fail(http.StatusRequestEntityTooLarge)
		return
	}
	var m struct{ Pattern string }
	if err != nil || json.Unmarshal(body, &m) != nil || m.Pattern != sumPattern {
		fail(http.StatusBadRequest)
		return
	}
	out, err := ts.sum(body)
	if err != nil {
		fail(http.StatusBadRequest)
		return
	}
	w.Write(out)
}

// probe is the request sent after a case's answers: answered with 200
// where the connection is still open.
const probe = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

// Connection states after a case, as the probe finds them.
const (
	stateOpen   = "open"   // the probe is answered
	stateClosed = "closed" // the connection ends without answering it
	stateSilent = "silent" // neither: no byte and no end within the wait
)

// exchange is what a target did with a case's bytes.
type exchange struct {
	statuses []int            // the statuses of the answers, 1xx included
	answers  []*http.Response // the answers, their bodies read into bodies
	bodies   [][]byte
	raw      []byte // every byte received
	state    string // stateOpen, stateClosed, stateSilent, or the answer that came instead of the probe's
	err      error  // why fewer answers came than expected
}

// String sums the exchange up for error messages.
func (ex *exchange) String() string {
	s := fmt.Sprintf("statuses %v, %s", ex.statuses, ex.state)
	if ex.err != nil {
		s += fmt.Sprintf(" (%v)", ex.err)
	}
	return s
}

// answerWait bounds the wait for each answer: longer than the timeouts of
// the targets, so that a target that waits for more bytes shows how it
// ends the wait.
const answerWait = 3 * time.Second

// converse writes input to a new connection to addr, reads finals final
// answers (and any 1xx before them), then sends the probe and reads what
// comes back.
func converse(t *testing.T, addr string, input []byte, finals int) *exchange {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(2 * answerWait))
	written := make(chan error, 1)
	go func() { // a target may answer before it reads all of a large input
		_, err := c.Write(input)
		written <- err
	}()

	ex := &exchange{}
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	defer func() { ex.raw = raw.Bytes() }()
	for n := 0; n < finals; {
		c.SetReadDeadline(time.Now().Add(answerWait))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			ex.err = fmt.Errorf("answer %d: %w", len(ex.statuses)+1, err)
			ex.state = connEnd(err)
			return ex
		}
		body, err := io.ReadAll(resp.Body)
		ex.statuses = append(ex.statuses, resp.StatusCode)
		ex.answers = append(ex.answers, resp)
		ex.bodies = append(ex.bodies, body)
		if err != nil { // a body cut by the end of the connection
			ex.state = stateClosed
			return ex
		}
		if resp.StatusCode >= 200 {
			n++
		}
	}
	if err := <-written; err != nil {
		ex.state = connEnd(err)
		return ex
	}
	c.SetDeadline(time.Now().Add(answerWait))
	if _, err := io.WriteString(c, probe); err != nil {
		ex.state = connEnd(err)
		return ex
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		ex.state = connEnd(err)
		return ex
	}
	body, _ := io.ReadAll(resp.Body)
	ex.state = stateOpen
	if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte("Result")) {
		ex.state = fmt.Sprintf("answer %d %.60q instead of the probe's", resp.StatusCode, body)
	}
	return ex
}

// connEnd names how a read or a write that failed ended.
func connEnd(err error) string {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return stateSilent
	}
	return stateClosed
}

// conformanceCase is a raw input and the answers net/http gives it.
type conformanceCase struct {
	name string
	raw  string
	// want are the statuses of the answers, 1xx included; nil means one
	// final answer whose status net/http defines (the test logs it).
	want []int
	// state is the connection's state after the answers; empty means
	// whatever net/http does.
	state string
	// mayClose lets a nano target close the connection, saying so, where
	// net/http keeps it: the answer refuses the request before reading
	// its body, and closing is the stricter choice.
	mayClose bool
	// check, when set, checks more of each target's exchange.
	check func(t *testing.T, ex *exchange)
}

// finals is the number of final (non-1xx) answers c expects.
func (c *conformanceCase) finals() int {
	if c.want == nil {
		return 1
	}
	n := 0
	for _, s := range c.want {
		if s >= 200 {
			n++
		}
	}
	return n
}

// TestHTTPConformance sends each case's bytes to a nano server, a nano
// service and a plain net/http server, and expects from the three the
// same statuses and the same state of the connection after them, which
// are also the case's own.
func TestHTTPConformance(t *testing.T) {
	t.Parallel()
	ts := startTargets(t, 500*time.Millisecond)
	for _, tc := range conformanceCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ref *exchange
			for _, target := range ts.targetList() {
				before := ts.smuggled.count(tc.name)
				ex := converse(t, target.addr, []byte(tc.raw), tc.finals())
				if ref == nil {
					ref = ex
				}
				tc.compare(t, target.name, ex, ref)
				if ts.smuggled.count(tc.name) != before {
					t.Errorf("%s: served a request hidden where no request may be read", target.name)
				}
				if tc.check != nil {
					t.Run(target.name, func(t *testing.T) { tc.check(t, ex) })
				}
			}
		})
	}
}

// compare fails t unless the exchange ex of the target named name has the
// case's statuses and state, and those of ref, the plain server's.
func (tc *conformanceCase) compare(t *testing.T, name string, ex, ref *exchange) {
	t.Helper()
	if tc.want == nil {
		t.Logf("%s: %v", name, ex)
	}
	for i, body := range ex.bodies {
		if ex.statuses[i] == http.StatusOK && !bytes.HasPrefix(body, []byte(`{"Result":3`)) {
			t.Errorf("%s: answer %d is 200 with body %.100q; want the sum of the case's message", name, i+1, body)
		}
	}
	stricter := ex != ref && tc.mayClose && len(ex.answers) > 0 && ex.state == stateClosed && ref.state == stateOpen
	if stricter && !ex.answers[len(ex.answers)-1].Close {
		t.Errorf("%s: closed the connection without saying so in its answer", name)
	}
	switch {
	case tc.want != nil && !slices.Equal(ex.statuses, tc.want):
		t.Errorf("%s: %v; want statuses %v", name, ex, tc.want)
	case stricter:
	case tc.state != "" && ex.state != tc.state:
		t.Errorf("%s: %v; want the connection %s", name, ex, tc.state)
	case !slices.Equal(ex.statuses, ref.statuses) || ex.state != ref.state:
		t.Errorf("%s: %v; plain net/http: %v", name, ex, ref)
	}
}

// valid is the message of the cases: a request that gets through the HTTP
// layer is answered 200 by all three targets.
const valid = `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`

// request is a POST of body with its Content-Length, over HTTP/1.1 with a
// Host unless header says otherwise.
func request(header, body string) string {
	return requestProto("HTTP/1.1", "Host: x\r\n"+header, body)
}

// requestProto is a POST of body with its Content-Length.
func requestProto(proto, header, body string) string {
	return fmt.Sprintf("POST / %s\r\n%sContent-Length: %d\r\n\r\n%s", proto, header, len(body), body)
}

// head is a POST's request line and Host, to be followed by more header
// fields.
const head = "POST / HTTP/1.1\r\nHost: x\r\n"

// chunk is one chunk of data, its size written with format.
func chunk(format, data string) string {
	return fmt.Sprintf(format, len(data)) + "\r\n" + data + "\r\n"
}

// chunked is valid as a chunked body.
func chunked() string { return chunk("%x", valid) + "0\r\n\r\n" }

// smuggled is a request hidden where no request may be read, tagged with
// the case's name: a handler that runs it counts the tag.
func smuggled(tag string) string {
	t, _ := json.Marshal(tag)
	return request("", fmt.Sprintf(`{"Pattern":"role:math,cmd:sum","Left":40,"Right":2,"Smuggled":%s}`, t))
}

// hiding is a case whose body holds a request of its own, and whose
// framing has a field that net/http refuses: field, with %d for the
// length of the body, which is prefix and the hidden request. A target
// that takes the field for another or ignores it may run the request.
func hiding(name, field, prefix string) conformanceCase {
	name += " hides a request"
	body := prefix + smuggled(name)
	return conformanceCase{name: name, raw: head + fmt.Sprintf(field, len(body)) + "\r\n" + body,
		want: []int{http.StatusBadRequest}, state: stateClosed}
}

// noContinue fails t when an interim 100 Continue was sent.
func noContinue(t *testing.T, ex *exchange) {
	t.Helper()
	if bytes.Contains(ex.raw, []byte(" 100 ")) || slices.Contains(ex.statuses, http.StatusContinue) {
		t.Errorf("a 100 Continue was sent:\n%.300s", ex.raw)
	}
}

// notChunked fails t unless every answer is framed without chunks, as an
// answer to HTTP/1.0 must be.
func notChunked(t *testing.T, ex *exchange) {
	t.Helper()
	for i, a := range ex.answers {
		if len(a.TransferEncoding) > 0 {
			t.Errorf("answer %d to HTTP/1.0 has Transfer-Encoding %v", i+1, a.TransferEncoding)
		}
	}
}

// lengthOnly fails t unless every answer has a Content-Length and no
// Transfer-Encoding: the framing that keeps an HTTP/1.0 connection open.
func lengthOnly(t *testing.T, ex *exchange) {
	t.Helper()
	notChunked(t, ex)
	for i, a := range ex.answers {
		if a.ContentLength < 0 {
			t.Errorf("answer %d to HTTP/1.0 keep-alive has no Content-Length", i+1)
		}
	}
}

// conformanceCases are the inputs of TestHTTPConformance and the seeds of
// FuzzServerRawHTTP.
func conformanceCases() []conformanceCase {
	const (
		ok       = http.StatusOK
		bad      = http.StatusBadRequest
		tooLarge = http.StatusRequestEntityTooLarge
		teNotImp = http.StatusNotImplemented
		open     = stateOpen
		closed   = stateClosed
	)
	padded := fmt.Sprintf(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2,"Pad":%d}`, 100<<10)
	overLimit := `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2,"X":"` + strings.Repeat("x", conformanceLimit) + `"}`
	overLimitHead := fmt.Sprintf("Content-Length: %d\r\n\r\n", len(overLimit))
	return []conformanceCase{
		// Header field names.
		{name: "space before the colon of Transfer-Encoding", raw: head + "Transfer-Encoding : chunked\r\n\r\n" + chunked(), want: []int{bad}, state: closed},
		{name: "tab before the colon of Transfer-Encoding", raw: head + "Transfer-Encoding\t: chunked\r\n\r\n" + chunked(), want: []int{bad}, state: closed},
		{name: "space inside a field name", raw: request("X A: 1\r\n", valid), want: []int{bad}, state: closed},
		hiding("space before the colon of Content-Length", "Content-Length : %d\r\n", ""),
		hiding("tab before the colon of Content-Length", "Content-Length\t: %d\r\n", ""),
		hiding("space before the colon of Transfer-Encoding, with a Content-Length", "Transfer-Encoding : chunked\r\nContent-Length: %d\r\n", "0\r\n\r\n"),
		{name: "empty field name", raw: request(": v\r\n", valid), want: []int{bad}, state: closed},
		{name: "field without a colon", raw: request("NoColon\r\n", valid), want: []int{bad}, state: closed},
		{name: "field name with a slash", raw: request("X/A: 1\r\n", valid), want: []int{bad}, state: closed},
		{name: "first field line folded", raw: "POST / HTTP/1.1\r\n Host: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},

		// Transfer-Encoding, with and without Content-Length.
		{name: "chunked", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunked(), want: []int{ok}, state: open},
		{name: "Content-Length and Transfer-Encoding", raw: head + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(), want: []int{ok}, state: open},
		{name: "Transfer-Encoding and an invalid Content-Length", raw: head + "Content-Length: abc\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(), want: []int{bad}, state: closed},
		{name: "Transfer-Encoding chunked twice", raw: head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(), want: []int{teNotImp}, state: closed},
		{name: "Transfer-Encoding chunked, chunked", raw: head + "Transfer-Encoding: chunked, chunked\r\n\r\n" + chunked(), want: []int{teNotImp}, state: closed},
		{name: "Transfer-Encoding gzip, chunked", raw: head + "Transfer-Encoding: gzip, chunked\r\n\r\n" + chunked(), want: []int{teNotImp}, state: closed},
		{name: "Transfer-Encoding chunked, identity", raw: head + "Transfer-Encoding: chunked, identity\r\n\r\n" + chunked(), want: []int{teNotImp}, state: closed},
		{name: "Transfer-Encoding identity", raw: head + "Transfer-Encoding: identity\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{teNotImp}, state: closed},
		{name: "Transfer-Encoding CHUNKED", raw: head + "Transfer-Encoding: CHUNKED\r\n\r\n" + chunked(), want: []int{ok}, state: open},
		{name: "Transfer-Encoding in HTTP/1.0 with a Content-Length", raw: requestProto("HTTP/1.0", "Transfer-Encoding: chunked\r\n", valid), want: []int{ok}, state: closed, check: notChunked},
		{name: "Transfer-Encoding in HTTP/1.0 alone", raw: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(), want: []int{bad}, state: closed, check: notChunked},

		// Content-Length.
		{name: "Content-Length twice with the same value", raw: request(fmt.Sprintf("Content-Length: %d\r\n", len(valid)), valid), want: []int{ok}, state: open},
		{name: "Content-Length twice with different values", raw: request(fmt.Sprintf("Content-Length: %d\r\n", len(valid)-1), valid), want: []int{bad}, state: closed},
		{name: "Content-Length listing the same value twice", raw: head + fmt.Sprintf("Content-Length: %d, %d\r\n\r\n%s", len(valid), len(valid), valid), want: []int{bad}, state: closed},
		{name: "Content-Length +N", raw: head + fmt.Sprintf("Content-Length: +%d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "Content-Length -1", raw: head + "Content-Length: -1\r\n\r\n" + valid, want: []int{bad}, state: closed},
		{name: "Content-Length with spaces around", raw: head + fmt.Sprintf("Content-Length:   %d  \r\n\r\n%s", len(valid), valid), want: []int{ok}, state: open},
		{name: "Content-Length after a tab", raw: head + fmt.Sprintf("Content-Length:\t%d\r\n\r\n%s", len(valid), valid), want: []int{ok}, state: open},
		{name: "Content-Length with a space inside", raw: head + fmt.Sprintf("Content-Length: %d %d\r\n\r\n%s", len(valid), len(valid), valid), want: []int{bad}, state: closed},
		{name: "Content-Length in hex", raw: head + fmt.Sprintf("Content-Length: 0x%x\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "Content-Length empty", raw: head + "Content-Length: \r\n\r\n" + valid, want: []int{bad}, state: closed},
		{name: "Content-Length over int64", raw: head + "Content-Length: 99999999999999999999\r\n\r\n" + valid, want: []int{bad}, state: closed},
		{name: "Content-Length of 1 TiB", raw: head + "Content-Length: 1099511627776\r\n\r\n" + valid, want: []int{tooLarge}, state: closed},
		{name: "Content-Length over the limit, body sent", raw: head + overLimitHead + overLimit, want: []int{tooLarge}, state: open, mayClose: true},
		{name: "Content-Length over the limit with Expect 100-continue", raw: head + "Expect: 100-continue\r\n" + overLimitHead, want: []int{tooLarge}, state: closed, check: noContinue},
		{name: "Content-Length folded onto the next line", raw: head + fmt.Sprintf("Content-Length:\r\n %d\r\n\r\n%s", len(valid), valid)},

		// Chunks.
		{name: "chunk sizes in upper-case hex", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk("%X", valid[:10]) + chunk("%X", valid[10:25]) + chunk("%X", valid[25:]) + "0\r\n\r\n", want: []int{ok}, state: open},
		{name: "chunk size with leading zeros", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk("%08x", valid) + "000\r\n\r\n", want: []int{ok}, state: open},
		{name: "chunk extensions", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk(`%x;name=value;quoted="a;b"`, valid) + "0;last\r\n\r\n", want: []int{ok}, state: open},
		{name: "chunk size followed by spaces", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk("%x  ", valid) + "0\r\n\r\n"},
		{name: "chunk size overflowing int64", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + "10000000000000032\r\n" + valid + "\r\n0\r\n\r\n", want: []int{bad}, state: closed},
		{name: "chunk size of 16 hex digits", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + "ffffffffffffffff\r\n" + valid, want: []int{bad}, state: closed},
		{name: "chunk size not hex", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk("%xg", valid) + "0\r\n\r\n", want: []int{bad}, state: closed},
		{name: "chunk size 0x", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk("0x%x", valid) + "0\r\n\r\n", want: []int{bad}, state: closed},
		{name: "chunk size negative", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + "-1\r\n" + valid + "\r\n0\r\n\r\n", want: []int{bad}, state: closed},
		{name: "chunk data without its CRLF", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%sXX0\r\n\r\n", len(valid), valid), want: []int{bad}, state: closed},
		{name: "chunk data longer than its size", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(valid)-2, valid), want: []int{bad}, state: closed},
		{name: "trailer after the last chunk", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk("%x", valid) + "0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n", want: []int{ok}, state: open},
		{name: "malformed trailer", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk("%x", valid) + "0\r\nNot a trailer\r\n\r\n", want: []int{bad}, state: closed},
		{name: "bare LF after a chunk size", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\n%s\r\n0\r\n\r\n", len(valid), valid), want: []int{bad}, state: closed},
		{name: "bare LF after chunk data", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\n0\r\n\r\n", len(valid), valid), want: []int{bad}, state: closed},
		{name: "bare LF after the last chunk", raw: head + "Transfer-Encoding: chunked\r\n\r\n" + chunk("%x", valid) + "0\n\n", want: []int{bad}, state: closed},

		// Pipelining and connection management.
		{name: "two requests in one write", raw: request("", valid) + request("", valid), want: []int{ok, ok}, state: open},
		{name: "three requests in one write", raw: request("", valid) + head + "Transfer-Encoding: chunked\r\n\r\n" + chunked() + request("", valid), want: []int{ok, ok, ok}, state: open},
		{name: "a request then garbage", raw: request("", valid) + "NONSENSE\r\n\r\n", want: []int{ok, bad}, state: closed},
		{name: "a request, an empty line, a request", raw: request("", valid) + "\r\n" + request("", valid), want: []int{ok, ok}, state: open},
		{name: "empty line before the first request", raw: "\r\n" + request("", valid)},
		{name: "Connection: close", raw: request("Connection: close\r\n", valid) + request("", valid), want: []int{ok}, state: closed},
		{name: "bare LF line ends in the header", raw: fmt.Sprintf("POST / HTTP/1.1\nHost: x\nContent-Length: %d\n\n%s", len(valid), valid), want: []int{ok}, state: open},

		// HTTP/1.0.
		{name: "HTTP/1.0", raw: requestProto("HTTP/1.0", "", padded) + request("", valid), want: []int{ok}, state: closed, check: notChunked},
		{name: "HTTP/1.0 keep-alive", raw: requestProto("HTTP/1.0", "Connection: keep-alive\r\n", valid), want: []int{ok}, state: open, check: lengthOnly},
		{name: "HTTP/1.0 Expect 100-continue", raw: requestProto("HTTP/1.0", "Expect: 100-continue\r\n", valid), want: []int{ok}, state: closed, check: noContinue},

		// Expect.
		{name: "Expect 100-continue", raw: request("Expect: 100-continue\r\n", valid), want: []int{http.StatusContinue, ok}, state: open},
		{name: "Expect 100-Continue in another case", raw: request("Expect: 100-Continue\r\n", valid), want: []int{http.StatusContinue, ok}, state: open},
		{name: "unknown Expect", raw: request("Expect: 200-ok\r\n", valid), want: []int{http.StatusExpectationFailed}, state: closed},

		// Host.
		{name: "HTTP/1.1 without Host", raw: "POST / HTTP/1.1\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "two Host fields", raw: request("Host: y\r\n", valid), want: []int{bad}, state: closed},
		{name: "Host with a space", raw: requestProto("HTTP/1.1", "Host: exa mple\r\n", valid), want: []int{bad}, state: closed},
		{name: "Host with a quote", raw: requestProto("HTTP/1.1", "Host: x\"y\r\n", valid), want: []int{bad}, state: closed},
		{name: "empty Host", raw: requestProto("HTTP/1.1", "Host:\r\n", valid), want: []int{ok}, state: open},

		// Request line.
		{name: "HTTP/2.0", raw: requestProto("HTTP/2.0", "Host: x\r\n", valid), want: []int{http.StatusHTTPVersionNotSupported}, state: closed},
		{name: "HTTP/0.9", raw: requestProto("HTTP/0.9", "Host: x\r\n", valid), want: []int{http.StatusHTTPVersionNotSupported}, state: closed},
		{name: "HTTP/2 preface", raw: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{name: "HTTP/1.2", raw: requestProto("HTTP/1.2", "Host: x\r\n", valid), want: []int{ok}, state: open},
		{name: "HTTP/1.10", raw: requestProto("HTTP/1.10", "Host: x\r\n", valid), want: []int{bad}, state: closed},
		{name: "lower-case http/1.1", raw: requestProto("http/1.1", "Host: x\r\n", valid), want: []int{bad}, state: closed},
		{name: "lower-case method", raw: "post / HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{http.StatusMethodNotAllowed}, state: open, mayClose: true},
		{name: "method with an invalid byte", raw: "PO@ST / HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "target without a slash", raw: "POST foo HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "absolute-form target", raw: "POST http://x/ HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{ok}, state: open},
		{name: "absolute-form target with a bad host", raw: "POST http://%zz/ HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "absolute-form target with an open bracket", raw: "POST http://[::1/ HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "space in the target", raw: "POST /a b HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "empty target", raw: "POST  HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "two spaces after the method", raw: "POST  / HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},
		{name: "request line without a version", raw: "POST /\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{bad}, state: closed},

		// Field values and sizes.
		{name: "obs-fold continuation line", raw: request("X-A: 1\r\n 2\r\n\tthree\r\n", valid)},
		{name: "NUL in a value", raw: request("X-A: a\x00b\r\n", valid), want: []int{bad}, state: closed},
		{name: "CR alone in a value", raw: request("X-A: a\rb\r\n", valid), want: []int{bad}, state: closed},
		{name: "DEL in a value", raw: request("X-A: a\x7fb\r\n", valid), want: []int{bad}, state: closed},
		{name: "obs-text in a value", raw: request("X-A: caf\xc3\xa9 \xff\r\n", valid), want: []int{ok}, state: open},
		{name: "header over the limit", raw: request("X-Big: "+strings.Repeat("x", 2<<20)+"\r\n", valid), want: []int{http.StatusRequestHeaderFieldsTooLarge}, state: closed},
		{name: "many fields over the limit", raw: request(strings.Repeat("X-Field: "+strings.Repeat("y", 1000)+"\r\n", 1100), valid), want: []int{http.StatusRequestHeaderFieldsTooLarge}, state: closed},
		{name: "request line over the limit", raw: "POST /" + strings.Repeat("a", 1100<<10) + " HTTP/1.1\r\nHost: x\r\n" + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(valid), valid), want: []int{http.StatusRequestHeaderFieldsTooLarge}, state: closed},
	}
}
