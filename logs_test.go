package nano_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

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
		// Through A: A learns it from the request and from its own event,
		// B from the event or a resync, whichever comes first; renewals
		// every half second and resyncs every 100 ms add nothing.
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
		for i := range 10 {
			handlers[fmt.Sprintf("role:logged,n:%d", i)] = sumZero
		}
		startService(t, servers["A"], handlers)
		for name := range logs {
			for p := range handlers {
				waitRegistered(t, servers[name], p)
			}
		}
		time.Sleep(2 * opts.TTL / 3) // two renewals, a few resyncs
		for name := range logs {
			lines := map[string]int{}
			for _, r := range logs[name].matching("service registered") {
				if r.Level != slog.LevelInfo {
					t.Errorf("server %s: %q at level %v; want info", name, r.Message, r.Level)
				}
				lines[attr(r, "pattern")]++
			}
			for p := range handlers {
				if lines[p] != 1 {
					t.Errorf("server %s logged %d lines for the registration of %s; want 1 (all: %v)", name, lines[p], p, lines)
				}
			}
		}
	})

	t.Run("a refused registration, with its origin", func(t *testing.T) {
		t.Parallel()
		logs := &logRecords{}
		_, addr := startServer(t, nano.ServerOptions{Token: "secret", Logger: slog.New(logs)})
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
		recs := infoSince(logs, n)
		msgs := make([]string, len(recs))
		for i, r := range recs {
			msgs[i] = r.Message
		}
		if len(recs) != 2 || !strings.Contains(recs[0].Message, "registry unreachable") || !strings.Contains(recs[1].Message, "registry reachable again") {
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

// TestRedisLinesReachTheServerLogger kills Redis under a server's
// subscription: go-redis's own line about the broken connection arrives
// in the server's Logger, here a JSON handler, whose output stays JSON
// line by line.
//
// Not parallel: go-redis has one logger per process, which follows the
// most recent server made with Redis, and a test running beside this one
// could make one.
func TestRedisLinesReachTheServerLogger(t *testing.T) {
	r := newRedis(t)
	out := &syncBuffer{}
	opts := redisOptions(t, r)
	opts.Logger = slog.New(slog.NewJSONHandler(out, nil))
	startServer(t, opts)
	r.kill(t)
	eventually(t, "a line of go-redis's arrives", func() bool { return strings.Contains(out.String(), `"nano: redis: `) })
	for line := range strings.SplitSeq(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var rec struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Msg == "" {
			t.Fatalf("not a JSON record: %q", line)
		}
		if strings.HasPrefix(rec.Msg, "nano: redis: ") {
			if rec.Level != slog.LevelWarn.String() {
				t.Errorf("go-redis's line %q at level %s; want WARN", rec.Msg, rec.Level)
			}
			t.Logf("go-redis: %s", line)
		}
	}
	if !strings.Contains(out.String(), `"nano: server listening"`) {
		t.Errorf("the log holds %q; want the server's own lines too", out.String())
	}
}
