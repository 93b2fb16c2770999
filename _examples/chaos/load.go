package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// lateBy is how far behind its schedule a message may be sent before it
// counts as late: a sign that this machine, not the fleet, is the limit.
const lateBy = 100 * time.Millisecond

// result is what became of one message.
type result struct {
	sent     time.Duration // since the run began
	took     time.Duration // until the answer was read, or the failure
	server   int           // index of the server it was sent to
	status   int           // HTTP status of the answer; 0 when none came
	failure  string        // why it failed without a status ("refused", "timeout"...), or "200 without ID"
	instance string        // ID of the instance that answered
}

// ok reports whether an instance answered the message.
func (r result) ok() bool { return r.status == http.StatusOK && r.failure == "" }

// canceled reports whether the message was cut short because the run
// was interrupted: it says nothing about the fleet.
func (r result) canceled() bool { return r.failure == "canceled" }

// outcome names what became of a failed message: its status, or why no
// status came.
func (r result) outcome() string {
	if r.failure != "" {
		return r.failure
	}
	return strconv.Itoa(r.status)
}

// load sends messages to the servers in turn at a fixed rate, each in a
// goroutine of its own, whatever the answers: an open loop, as the
// traffic of many independent clients is. It keeps what became of each.
type load struct {
	targets []string // URLs of the servers, sent to in turn
	body    []byte
	rate    int
	timeout time.Duration
	start   time.Time // of the run: results count from it
	client  *http.Client

	wg sync.WaitGroup // the messages in flight

	mu       sync.Mutex // guards the fields below
	results  []result
	inFlight map[int]time.Duration // message number -> when it was sent
	ids      map[string]string     // the instance IDs seen, to keep one copy of each
	late     int                   // messages sent more than lateBy behind schedule
	examples map[string]string     // failure -> the text of one such error, for "other"
}

func newLoad(targets []string, body []byte, rate int, timeout time.Duration, start time.Time) *load {
	return &load{
		targets: targets,
		body:    body,
		rate:    rate,
		timeout: timeout,
		start:   start,
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		}},
		inFlight: make(map[int]time.Duration),
		ids:      make(map[string]string),
		examples: make(map[string]string),
	}
}

// run sends messages until send ends; each message is bounded by the
// load's timeout and by requests, which cuts short those in flight. It
// returns without waiting for the messages in flight: wait does.
func (l *load) run(send, requests context.Context) {
	begin := time.Now()
	for n := 0; ; n++ {
		due := begin.Add(time.Duration(n) * time.Second / time.Duration(l.rate))
		if wait := time.Until(due); wait > 0 {
			if !sleep(send, wait) {
				return
			}
		} else if -wait > lateBy {
			l.mu.Lock()
			l.late++
			l.mu.Unlock()
		}
		if send.Err() != nil {
			return
		}
		l.wg.Go(func() { l.send(requests, n) })
	}
}

// wait waits until every message sent has been answered or has failed,
// and closes the idle connections to the servers.
func (l *load) wait() {
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

// send sends message n and keeps what became of it.
func (l *load) send(requests context.Context, n int) {
	r := result{sent: time.Since(l.start), server: n % len(l.targets)}
	l.mu.Lock()
	l.inFlight[n] = r.sent
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(requests, l.timeout)
	defer cancel()
	var id string
	r.status, id, r.failure = l.post(ctx, l.targets[r.server])
	if r.failure != "" && requests.Err() != nil {
		r.failure = "canceled"
	}
	r.took = time.Since(l.start) - r.sent

	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.inFlight, n)
	if id != "" {
		if known, ok := l.ids[id]; ok {
			id = known
		} else {
			l.ids[id] = id
		}
		r.instance = id
	}
	l.results = append(l.results, r)
}

// post sends the message to url and returns the status and the ID of the
// instance that answered; or, when no status came or a 200 came without
// an ID, why.
func (l *load) post(ctx context.Context, url string) (status int, id, failure string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(l.body))
	if err != nil {
		return 0, "", "other"
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, "", l.transportFailure(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return resp.StatusCode, "", l.transportFailure(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", ""
	}
	var answer struct{ ID string }
	if json.Unmarshal(body, &answer) != nil || answer.ID == "" {
		return resp.StatusCode, "", "200 without ID"
	}
	return resp.StatusCode, answer.ID, ""
}

// transportFailure names why no answer came: refused, reset, closed (the
// connection ended before an answer), timeout, or other, the text of the
// first of which it keeps.
func (l *load) transportFailure(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed"
	}
	l.mu.Lock()
	if _, ok := l.examples["other"]; !ok {
		l.examples["other"] = err.Error()
	}
	l.mu.Unlock()
	return "other"
}

// settled reports whether every message sent before t has been answered
// or has failed.
func (l *load) settled(t time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, sent := range l.inFlight {
		if sent < t {
			return false
		}
	}
	return true
}

// between returns what became of the messages sent from from to to,
// those in flight left out.
func (l *load) between(from, to time.Duration) []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	var rs []result
	for _, r := range l.results {
		if r.sent >= from && r.sent < to {
			rs = append(rs, r)
		}
	}
	return rs
}

// lateSends returns how many messages were sent more than lateBy behind
// their schedule.
func (l *load) lateSends() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.late
}

// example returns the text of one error of the failure, if kept.
func (l *load) example(failure string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.examples[failure]
}
