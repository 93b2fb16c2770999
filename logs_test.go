package nano_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

// What servers log at the default level when registrations come, are
// refused, or cannot be written: a line per event, never a line per
// renewal or per message.

// infoSince returns the records l kept from the n-th on at info level and
// above, less go-redis's own lines: go-redis has one logger per process,
// which follows the most recent server made, whichever test made it.
func infoSince(l *logRecords, n int) []slog.Record {
	var out []slog.Record
	for i, r := range l.matching("") {
		if i >= n && r.Level >= slog.LevelInfo && !strings.HasPrefix(r.Message, "nano: redis:") {
			out = append(out, r)
		}
	}
	return out
}

// TestServerLogLines checks the lines a server logs about registrations.
func TestServerLogLines(t *testing.T) {
	t.Parallel()
	t.Run("a registration, once on each server", func(t *testing.T) {
		t.Parallel()
		// Through A, with both servers following the changes: A learns each
		// registration from the request and from its own event, B from the
		// change; checks every 100 ms and renewals every half second add
		// nothing.
		opts := redisOptions(t, testRedis)
		opts.TTL, opts.ResyncInterval = 1500*time.Millisecond, 100*time.Millisecond
		logs := map[string]*logRecords{"A": {}, "B": {}}
		servers := map[string]string{}
		for name, l := range logs {
			o := opts
			o.Logger = slog.New(l)
			_, servers[name] = startServer(t, o)
		}
		handlers := map[string]nano.HandlerFunc{}
		for i := range 30 {
			handlers[fmt.Sprintf("role:logged,n:%d", i)] = sumZero
		}
		startService(t, servers["A"], handlers)
		for name := range logs {
			waitListed(t, servers[name], len(handlers))
		}
		time.Sleep(2 * opts.TTL / 3) // two renewals, a few checks
		for name, l := range logs {
			checkRegisteredOnce(t, "server "+name, l, slices.Collect(maps.Keys(handlers)))
		}
	})

	t.Run("a registration learnt after a broken link, once too", func(t *testing.T) {
		t.Parallel()
		// B's link to Redis breaks while a service registers through A:
		// B's read of the changes fails, and it learns the registration
		// once it reads them again.
		opts := redisOptions(t, testRedis)
		opts.ResyncInterval = -1 // no checks: only the changes tell B
		_, a := startServer(t, opts)
		link := newRedisLink(t, testRedis.Addr)
		logs := &logRecords{}
		optsB := opts
		optsB.Redis = &redis.UniversalOptions{Addrs: []string{link.addr}}
		optsB.Logger = slog.New(logs)
		_, b := startServer(t, optsB)

		link.cut()
		registerAt(t, a, "role:missed", deadAddr(t))
		time.Sleep(200 * time.Millisecond)
		link.mend()
		waitListed(t, b, 1)
		checkRegisteredOnce(t, "server B", logs, []string{"role:missed"})
	})

	t.Run("a refused registration, with its origin", func(t *testing.T) {
		t.Parallel()
		logs := &logRecords{}
		_, addr := startServer(t, nano.ServerOptions{Token: "secret", Logger: slog.New(logs)})
		eventually(t, "the server logs that it listens", func() bool { return len(logs.matching("server listening")) == 1 })
		for _, c := range []struct {
			name, auth, body string
			status           int
		}{
			{"no token", "", `{"Pattern":"role:x","ServiceAddress":"127.0.0.1:1"}`, http.StatusUnauthorized},
			{"wrong token", "Bearer guess", `{"Pattern":"role:x","ServiceAddress":"127.0.0.1:1"}`, http.StatusUnauthorized},
			{"not a registration", "Bearer secret", `{"Pattern":""}`, http.StatusBadRequest},
		} {
			t.Run(c.name, func(t *testing.T) {
				var from string
				tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
					if err == nil {
						from = conn.LocalAddr().String()
					}
					return conn, err
				}}
				defer tr.CloseIdleConnections()
				req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/register", strings.NewReader(c.body))
				if c.auth != "" {
					req.Header.Set("Authorization", c.auth)
				}
				n := len(logs.matching(""))
				resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				readAll(resp)
				if resp.StatusCode != c.status {
					t.Fatalf("status %d; want %d", resp.StatusCode, c.status)
				}
				recs := infoSince(logs, n)
				if len(recs) != 1 || !strings.Contains(recs[0].Message, "registration refused") || recs[0].Level != slog.LevelWarn {
					t.Fatalf("logged %+v; want one warning that the registration was refused", recs)
				}
				if got := attr(recs[0], "from"); got != from {
					t.Errorf("from=%q; want the caller's address %s", got, from)
				}
				if got := attr(recs[0], "status"); got != strconv.Itoa(c.status) {
					t.Errorf("status=%q; want %d", got, c.status)
				}
			})
		}
	})

	t.Run("a registry outage under renewals, once when it starts and once when it ends", func(t *testing.T) {
		t.Parallel()
		r := newRedis(t)
		opts := redisOptions(t, r)
		opts.TTL, opts.RegistryTimeout = 900*time.Millisecond, 300*time.Millisecond
		logs := &logRecords{}
		opts.Logger = slog.New(logs)
		_, addr := startServer(t, opts)
		startService(t, addr, map[string]nano.HandlerFunc{"role:renewing": sumZero, "role:renewing,too:yes": sumZero},
			func(o *nano.ServiceOptions) { o.RetryInterval = 200 * time.Millisecond })
		waitRegistered(t, addr, "role:renewing", "role:renewing,too:yes")

		n := len(logs.matching(""))
		r.kill(t)
		time.Sleep(2 * time.Second) // some 15 renewals and retries refused
		r.restart(t)
		eventually(t, "the end of the outage is logged", func() bool { return len(logs.matching("registry reachable again")) > 0 })
		time.Sleep(time.Second) // renewals go on: nothing more to say
		// Redis came back empty: the server may also say, once each, that
		// the registry lost its data and, a TTL later, that it read it again.
		var recs []slog.Record
		var msgs []string
		for _, r := range infoSince(logs, n) {
			msgs = append(msgs, r.Message)
			if !strings.Contains(r.Message, "lost its data") && !strings.Contains(r.Message, "registry read again") {
				recs = append(recs, r)
			}
		}
		if len(msgs) > len(recs)+2 || len(recs) != 2 || !strings.Contains(recs[0].Message, "registry unreachable") || !strings.Contains(recs[1].Message, "registry reachable again") {
			t.Fatalf("logged %q; want one line when the outage starts and one when it ends", msgs)
		}
		if recs[0].Level != slog.LevelWarn || recs[1].Level != slog.LevelInfo {
			t.Errorf("levels %v and %v; want warning, then info", recs[0].Level, recs[1].Level)
		}
		if failed, err := strconv.Atoi(attr(recs[1], "failed_registrations")); err != nil || failed == 0 {
			t.Errorf("failed_registrations=%q; want the registrations refused meanwhile, some", attr(recs[1], "failed_registrations"))
		}
		t.Logf("logged %q; failed_registrations=%s", msgs, attr(recs[1], "failed_registrations"))
	})
}

// TestRedisLinesReachTheServerLogger points a server at a "sentinel" that
// is a plain Redis: go-redis's own line about the failed sentinel query
// arrives in the server's Logger, here a JSON handler, whose output stays
// JSON line by line.
//
// Not parallel: go-redis has one logger per process, which follows the
// most recent server made with Redis, and a test running beside this one
// could make one.
func TestRedisLinesReachTheServerLogger(t *testing.T) {
	out := &syncBuffer{}
	opts := redisOptions(t, testRedis)
	opts.Redis.MasterName = "nomaster"
	opts.RegistryTimeout = time.Second
	opts.Logger = slog.New(slog.NewJSONHandler(out, nil))
	if _, err := nano.NewServerWithOptions(opts); !errors.Is(err, nano.ErrRegistryUnavailable) {
		t.Fatalf("a server whose sentinel is not one: %v; want ErrRegistryUnavailable", err)
	}
	if !strings.Contains(out.String(), `"nano: sentinel: `) {
		t.Fatalf("no line of go-redis's in %q", out.String())
	}
	for line := range strings.SplitSeq(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var rec struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Msg == "" {
			t.Fatalf("not a JSON record: %q", line)
		}
		if strings.HasPrefix(rec.Msg, "nano: sentinel: ") {
			if rec.Level != slog.LevelWarn.String() {
				t.Errorf("go-redis's line %q at level %s; want WARN", rec.Msg, rec.Level)
			}
			t.Logf("go-redis: %s", line)
		}
	}
}

// checkRegisteredOnce fails the test unless l holds one "service
// registered" line at info level for each of patterns, and no other.
func checkRegisteredOnce(t *testing.T, who string, l *logRecords, patterns []string) {
	t.Helper()
	lines := map[string]int{}
	for _, r := range l.matching("service registered") {
		if r.Level != slog.LevelInfo {
			t.Errorf("%s: %q at level %v; want info", who, r.Message, r.Level)
		}
		lines[attr(r, "pattern")]++
	}
	var wrong []string
	for _, p := range patterns {
		if lines[p] != 1 {
			wrong = append(wrong, fmt.Sprintf("%s: %d", p, lines[p]))
		}
	}
	if len(wrong) > 0 || len(lines) != len(patterns) {
		slices.Sort(wrong)
		t.Errorf("%s: want one \"service registered\" line for each of %d patterns; got lines for %d patterns, and these counts where not one: %s",
			who, len(patterns), len(lines), strings.Join(wrong, ", "))
	}
}

// waitListed waits until the server at addr lists n patterns in GET
// /services, which reads its mirror and nothing else.
func waitListed(t *testing.T, addr string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("the server lists %d patterns", n), func() bool { return len(listed(t, addr)) == n })
}

// redisLink is a TCP proxy to a Redis whose connections a test can cut,
// and which counts, for each of some words, the chunks clients send that
// hold it: one per round trip of a request-response protocol such as
// Redis's, however many commands a pipeline holds.
type redisLink struct {
	addr   string
	chunks map[string]*atomic.Int64 // word -> chunks that hold it

	mu    sync.Mutex        // guards conns, down
	conns map[net.Conn]bool // both ends of every open connection
	down  bool              // new connections are closed at once
}

// newRedisLink proxies a loopback port to the Redis at backend until the
// test ends, counting the chunks that hold each of words.
func newRedisLink(t *testing.T, backend string, words ...string) *redisLink {
	t.Helper()
	l := listen(t)
	link := &redisLink{addr: l.Addr().String(), conns: map[net.Conn]bool{}, chunks: map[string]*atomic.Int64{}}
	for _, w := range words {
		link.chunks[w] = new(atomic.Int64)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		link.cut()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			link.mu.Lock()
			if link.down {
				c.Close()
				r.Close()
			} else {
				link.conns[c], link.conns[r] = true, true
				wg.Go(func() { link.forward(r, c); r.Close() })
				wg.Go(func() { io.Copy(c, r); c.Close() })
			}
			link.mu.Unlock()
		}
	})
	return link
}

// forward copies what a client sends to Redis, counting the chunks that
// hold each word.
func (l *redisLink) forward(to io.Writer, from io.Reader) {
	buf := make([]byte, 64<<10)
	for {
		n, err := from.Read(buf)
		for w, c := range l.chunks {
			if bytes.Contains(buf[:n], []byte(w)) {
				c.Add(1)
			}
		}
		if _, werr := to.Write(buf[:n]); werr != nil || err != nil {
			return
		}
	}
}

// count returns the number of chunks that held word.
func (l *redisLink) count(word string) int64 { return l.chunks[word].Load() }

// cut closes every connection of the link, and the new ones until mend.
func (l *redisLink) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for c := range l.conns {
		c.Close()
		delete(l.conns, c)
	}
}

// mend lets new connections through again.
func (l *redisLink) mend() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = false
}
