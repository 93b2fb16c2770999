package nano_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Outlier ejection: an instance that fails again and again gets no
// message for a while, longer each time, counted and logged once per
// ejection; never more than a share of a pattern, never all of it.

// unavailable is a 503 answer with no Nano-Error field: the instance's
// own failure, not one its handler chose.
const unavailable = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{\"error\":\"drained\"}"

// flakyService is a scripted instance that fails every message, with a
// 503 and a reset in turn, until it is told to answer.
type flakyService struct {
	*scriptedService
	healthy atomic.Bool // answer {"ID":"flaky"} from now on
}

func startFlaky(t *testing.T) *flakyService {
	t.Helper()
	f := &flakyService{}
	f.scriptedService = startScripted(t, func(c net.Conn, n int, _ string) bool {
		switch {
		case f.healthy.Load():
			_, err := io.WriteString(c, nanoAnswer(`{"ID":"flaky"}`))
			return err == nil
		case n%2 == 1:
			_, err := io.WriteString(c, unavailable)
			return err == nil
		default:
			resetConn(c) // after reading the message: it may have been handled
			return false
		}
	})
	return f
}

// outlierPath is where outlier detection runs: in a server, for the
// messages it proxies; in the client of a service (ServiceOptions.Outliers),
// or in a Client of its own (ClientOptions.Outliers), for Act calls to
// cached peers.
type outlierPath string

const (
	serverOutliers  outlierPath = "server"
	serviceOutliers outlierPath = "service act"
	clientOutliers  outlierPath = "client act"
)

var outlierPaths = []outlierPath{serverOutliers, serviceOutliers, clientOutliers}

// outlierRig is what a test of outlier detection drives along a path.
type outlierRig struct {
	server  string       // where instances register
	send    func() error // sends one message of the pattern; nil when answered 200
	metrics string       // the address whose /metrics counts the ejections, if any
	counter string       // the name of that counter
	gauge   bool         // the metrics show nano_ejected_instances too
}

// open starts a server and what calls through the path, with the
// outlier options o on the path's side and its logs going to log.
func (p outlierPath) open(t *testing.T, pattern string, o nano.Outliers, log *slog.Logger) outlierRig {
	t.Helper()
	msg := []byte(fmt.Sprintf(`{"Pattern":%q}`, pattern))
	act := func(c interface {
		ActContext(context.Context, []byte, string) ([]byte, error)
	}) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := c.ActContext(ctx, msg, pattern)
			return err
		}
	}
	switch p {
	case serverOutliers:
		_, addr := startServer(t, nano.ServerOptions{Outliers: o, Logger: log})
		return outlierRig{
			server: addr,
			send: func() error {
				if status, body := post(t, "http://"+addr+"/", string(msg)); status != 200 {
					return fmt.Errorf("%d %s", status, strings.TrimSpace(body))
				}
				return nil
			},
			metrics: addr,
			counter: "nano_ejections_total",
			gauge:   true,
		}
	case serviceOutliers:
		_, addr := startServer(t, nano.ServerOptions{})
		svc, svcAddr := startService(t, addr, nil, func(so *nano.ServiceOptions) {
			so.Outliers, so.Logger, so.PeerTTL = o, log, time.Minute
		})
		return outlierRig{server: addr, send: act(svc), metrics: svcAddr, counter: "nano_act_ejections_total"}
	default:
		_, addr := startServer(t, nano.ServerOptions{})
		c := newClient(t, nano.ClientOptions{Server: addr, Outliers: o, Logger: log, PeerTTL: time.Minute})
		return outlierRig{server: addr, send: act(c)}
	}
}

// checkEjections fails the test unless the rig's metrics count ejections
// ejections in all and show ejected instances of pattern ejected now;
// when says at which point of the test.
func (r outlierRig) checkEjections(t *testing.T, when, pattern string, ejections, ejected int) {
	t.Helper()
	if r.metrics == "" {
		return
	}
	if got := metricValue(t, r.metrics, r.counter); int(got) != ejections {
		t.Errorf("%s: %s %v; want %d", when, r.counter, got, ejections)
	}
	if r.gauge {
		series := fmt.Sprintf("nano_ejected_instances{pattern=%q}", pattern)
		if got := metricValue(t, r.metrics, series); int(got) != ejected {
			t.Errorf("%s: %s %v; want %d", when, series, got, ejected)
		}
	}
}

// sendUntil sends messages until the flaky instance has received want in
// all, and returns when the message that brought it there was sent and
// when its answer came.
func (r outlierRig) sendUntil(t *testing.T, f *flakyService, pattern string, want int) (sent, answered time.Time) {
	t.Helper()
	for range 300 {
		sent = time.Now()
		r.send()
		answered = time.Now()
		if got := f.delivered(pattern); got >= want {
			if got > want {
				t.Fatalf("the flaky instance received %d messages; want %d", got, want)
			}
			return sent, answered
		}
	}
	t.Fatalf("300 messages, and the flaky instance received %d; want %d", f.delivered(pattern), want)
	return
}

// sendWhile sends messages while cond holds, each of which must be
// answered 200 (the flaky instance is ejected meanwhile), and returns
// their number.
func (r outlierRig) sendWhile(t *testing.T, cond func() bool) int {
	t.Helper()
	n := 0
	for ; cond(); n++ {
		if err := r.send(); err != nil {
			t.Fatalf("message %d, sent while the flaky instance is ejected: %v", n, err)
		}
	}
	return n
}

// TestOutlierEjection: beside two healthy instances, one that fails
// (503s that no handler chose, and resets, in turn) is ejected by its
// third failure in a row and gets no message until its ejection ends; a
// second ejection lasts twice as long; once it answers again it is back.
// The counter of ejections, the gauge of ejected instances and the log
// (one line per ejection, one per return) say so. On a server, in the
// client of a service's Act, and in a Client.
func TestOutlierEjection(t *testing.T) {
	t.Parallel()
	const (
		pattern = "role:flaky"
		eject   = 800 * time.Millisecond // the first ejection
		margin  = 250 * time.Millisecond // for the time a message takes to arrive
	)
	for _, path := range outlierPaths {
		t.Run(string(path), func(t *testing.T) {
			t.Parallel()
			logs := &logLines{}
			rig := path.open(t, pattern, nano.Outliers{MaxFailures: 3, EjectionTime: eject}, slog.New(logs))
			flaky := startFlaky(t)
			registerAt(t, rig.server, pattern, flaky.addr)
			for _, h := range []*scriptedService{startScripted(t, answerWith(`{"ID":"h1"}`)), startScripted(t, answerWith(`{"ID":"h2"}`))} {
				registerAt(t, rig.server, pattern, h.addr)
			}
			waitInstances(t, rig.server, pattern, 3)
			check := func(when string, ejections, ejected, ejectedLines, backLines int) {
				t.Helper()
				rig.checkEjections(t, when, pattern, ejections, ejected)
				if got := logs.count("instance ejected"); got != ejectedLines {
					t.Errorf("%s: %d lines say \"instance ejected\"; want %d", when, got, ejectedLines)
				}
				if got := logs.count("instance back after ejection"); got != backLines {
					t.Errorf("%s: %d lines say \"instance back after ejection\"; want %d", when, got, backLines)
				}
			}

			sent, answered := rig.sendUntil(t, flaky, pattern, 3)
			check("after 3 failures", 1, 1, 1, 0)
			n := rig.sendWhile(t, func() bool { return time.Since(sent) < eject-margin })
			if got := flaky.delivered(pattern); got != 3 {
				t.Fatalf("the ejected instance received %d of the %d messages sent during its ejection", got-3, n)
			}

			time.Sleep(time.Until(answered.Add(eject + 50*time.Millisecond)))
			sent, answered = rig.sendUntil(t, flaky, pattern, 6)
			check("after 3 more failures", 2, 1, 2, 0)
			time.Sleep(time.Until(answered.Add(eject + margin)))
			n = rig.sendWhile(t, func() bool { return time.Since(sent) < 2*eject-margin })
			if got := flaky.delivered(pattern); got != 6 || n == 0 {
				t.Fatalf("the instance ejected a second time received %d of the %d messages sent after as long as its first ejection lasted; want none of some", got-6, n)
			}

			flaky.healthy.Store(true)
			time.Sleep(time.Until(answered.Add(2*eject + 50*time.Millisecond)))
			rig.sendUntil(t, flaky, pattern, 7)
			rig.sendWhile(t, func() bool { return flaky.delivered(pattern) < 12 })
			check("once it answers again", 2, 0, 2, 1)
		})
	}
}

// TestEjectionBounds: with every instance of a pattern failing, outlier
// detection ejects MaxEjectedPercent of them and no more, never all of
// them, and never the only one; the others keep getting the messages.
func TestEjectionBounds(t *testing.T) {
	t.Parallel()
	const pattern = "role:failing"
	for _, c := range []struct {
		name      string
		instances int
		percent   int
		ejected   int
	}{
		{"the only instance", 1, 0, 0},
		{"two of two at 100 %", 2, 100, 1},
		{"four at the default 50 %", 4, 0, 2},
		{"four at 25 %", 4, 25, 1},
	} {
		for _, path := range outlierPaths {
			t.Run(c.name+"/"+string(path), func(t *testing.T) {
				t.Parallel()
				logs := &logLines{}
				o := nano.Outliers{MaxFailures: 3, EjectionTime: time.Minute, MaxEjectedPercent: c.percent}
				rig := path.open(t, pattern, o, slog.New(logs))
				failing := make([]*scriptedService, c.instances)
				for i := range failing {
					failing[i] = startScripted(t, func(conn net.Conn, _ int, _ string) bool {
						_, err := io.WriteString(conn, unavailable)
						return err == nil
					})
					registerAt(t, rig.server, pattern, failing[i].addr)
				}
				waitInstances(t, rig.server, pattern, c.instances)

				for range 20 * c.instances {
					if err := rig.send(); err == nil {
						t.Fatal("a failing instance answered 200")
					}
				}
				before := make([]int, len(failing))
				for i, f := range failing {
					before[i] = f.delivered(pattern)
				}
				for range 10 * c.instances {
					rig.send()
				}
				reached := 0
				for i, f := range failing {
					if f.delivered(pattern) > before[i] {
						reached++
					}
				}
				rig.checkEjections(t, "after the failures", pattern, c.ejected, c.ejected)
				if got := logs.count("instance ejected"); got != c.ejected {
					t.Errorf("%d lines say \"instance ejected\"; want %d", got, c.ejected)
				}
				if want := c.instances - c.ejected; reached != want {
					t.Errorf("the last %d messages reached %d instances; want the %d not ejected", 10*c.instances, reached, want)
				}
			})
		}
	}
}
