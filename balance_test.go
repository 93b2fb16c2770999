package nano_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// Balancing around an instance that stops answering: servers and Act
// send each message to the less busy of two instances taken at random,
// so that an instance whose messages pile up stops getting new ones
// without waiting for any timeout.

// loadResult is one request of an open-loop load.
type loadResult struct {
	sent time.Time     // when it went out
	took time.Duration // until its answer
	id   string        // the ID in the answer
	err  error
}

// openLoop sends a request with send every 1/rate seconds for d, whatever
// the answers do: each request goes out on schedule from a goroutine of
// its own. It returns once every request has its answer; send bounds
// each with a timeout.
func openLoop(rate int, d time.Duration, send func() (string, error)) []loadResult {
	n := int(d.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	results := make([]loadResult, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range results {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Go(func() {
			r := &results[i]
			r.sent = time.Now()
			r.id, r.err = send()
			r.took = time.Since(r.sent)
		})
	}
	wg.Wait()
	return results
}

// answerID reads the ID of an instance's answer.
func answerID(body []byte) (string, error) {
	var a struct{ ID string }
	if err := json.Unmarshal(body, &a); err != nil || a.ID == "" {
		return "", fmt.Errorf("answer %q carries no ID", body)
	}
	return a.ID, nil
}

// metricValue returns the value of a series of the /metrics of the
// process at addr, written as in the text ("name" or `name{label="v"}`),
// or 0 when it is not shown.
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	for line := range metricsOf(t, addr) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("sample %q: %v", line, err)
			}
			return v
		}
	}
	return 0
}

// TestBalanceAroundAStoppedInstance runs an open-loop load of 200
// messages a second through a server and 200 Act calls a second to the
// cached peers, at once, over three instance processes, one of which is
// stopped (SIGSTOP) for three seconds and then continued. No request
// fails; at most 1 % take over a second (those the stopped instance held
// when it stopped, or got before its pile showed); the stopped instance
// gets at most 2 % of the requests sent while it is stopped, and its fair
// share before and after.
func TestBalanceAroundAStoppedInstance(t *testing.T) {
	t.Parallel()
	const (
		rate                       = 200
		before, stopped, afterward = time.Second, 3 * time.Second, 1500 * time.Millisecond
		msg                        = `{"Pattern":"role:echo"}`
	)
	bin := buildProgram(t, ".", "./testdata/instance")
	_, addr := startServer(t, nano.ServerOptions{})
	victim := startInstance(t, bin, addr, "role:echo", "stopped")
	startInstance(t, bin, addr, "role:echo", "one")
	startInstance(t, bin, addr, "role:echo", "two")
	waitInstances(t, addr, "role:echo", 3)

	tr := &http.Transport{MaxIdleConnsPerHost: 1024}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	viaServer := func() (string, error) {
		resp, err := hc.Post("http://"+addr+"/", "application/json", strings.NewReader(msg))
		if err != nil {
			return "", err
		}
		body := readAll(resp)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return answerID([]byte(body))
	}
	c := newClient(t, nano.ClientOptions{Server: addr, PeerTTL: time.Minute, Timeout: 10 * time.Second})
	act := func() (string, error) {
		b, err := c.ActContext(context.Background(), []byte(msg), "role:echo")
		if err != nil {
			return "", err
		}
		return answerID(b)
	}
	for _, send := range []func() (string, error){viaServer, act} { // Act resolves the peers once here
		if _, err := send(); err != nil {
			t.Fatal(err)
		}
	}
	warm := metricValue(t, addr, `nano_requests_total{pattern="role:echo",status="200"}`)

	var stopAt, contAt time.Time
	signals := make(chan error, 1)
	go func() {
		time.Sleep(before)
		err := victim.cmd.Process.Signal(syscall.SIGSTOP)
		stopAt = time.Now()
		time.Sleep(stopped)
		contAt = time.Now()
		signals <- firstErr(err, victim.cmd.Process.Signal(syscall.SIGCONT))
	}()
	paths := []struct {
		name    string
		send    func() (string, error)
		results []loadResult
	}{
		{name: "server", send: viaServer},
		{name: "act", send: act},
	}
	var loads sync.WaitGroup
	for i := range paths {
		loads.Go(func() { paths[i].results = openLoop(rate, before+stopped+afterward, paths[i].send) })
	}
	loads.Wait()
	if err := <-signals; err != nil {
		t.Fatal(err)
	}

	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			var failed []string
			var slow int
			var worst time.Duration
			shares := map[string]map[string]int{} // phase -> ID -> answers
			for _, r := range p.results {
				if r.err != nil {
					failed = append(failed, r.err.Error())
					continue
				}
				worst = max(worst, r.took)
				if r.took > time.Second {
					slow++
				}
				phase := "before"
				switch {
				case !r.sent.Before(contAt.Add(300 * time.Millisecond)):
					phase = "after" // the held messages answered: a clean start
				case !r.sent.Before(contAt):
					phase = "continuing"
				case !r.sent.Before(stopAt):
					phase = "stopped"
				}
				if shares[phase] == nil {
					shares[phase] = map[string]int{}
				}
				shares[phase][r.id]++
			}
			total := func(phase string) int {
				n := 0
				for _, c := range shares[phase] {
					n += c
				}
				return n
			}
			t.Logf("%d requests at %d/s, the instance stopped for %v: answers by phase %v; %d took over 1 s (slowest %v); %d failed",
				len(p.results), rate, contAt.Sub(stopAt).Round(time.Millisecond), shares, slow, worst.Round(time.Millisecond), len(failed))
			if len(failed) > 0 {
				t.Errorf("%d requests failed, e.g. %q", len(failed), failed[:min(3, len(failed))])
			}
			if slow*100 > len(p.results) {
				t.Errorf("%d of %d requests took over 1 s; want at most 1 %%", slow, len(p.results))
			}
			if got, sent := shares["stopped"]["stopped"], total("stopped"); sent == 0 || got*50 > sent {
				t.Errorf("the stopped instance got %d of the %d requests sent while it was stopped; want at most 2 %%", got, sent)
			}
			for _, phase := range []string{"before", "after"} {
				if got, sent := shares[phase]["stopped"], total(phase); got*100 < sent*15 {
					t.Errorf("%s the stop, the instance got %d of %d requests; want its share (a third), 15 %% at least", phase, got, sent)
				}
			}
		})
	}
	// Act called the cached peers directly: the server saw its own load only.
	if got := metricValue(t, addr, `nano_requests_total{pattern="role:echo",status="200"}`) - warm; int(got) != len(paths[0].results) {
		t.Errorf("the server proxied %v messages; want the %d sent through it (Act calls its cached peers directly)", got, len(paths[0].results))
	}
}

// firstErr returns the first error that is not nil.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
