package nano_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// firstAnswer is the first answer of a target to a raw input, 1xx
// included.
type firstAnswer struct {
	resp    *http.Response // nil when none came
	body    []byte
	err     error // why no answer came
	bodyErr error // why its body could not be read whole
	ran     bool  // the plain handler served a request of the connection
}

// rejectedByHTTP are the statuses with which net/http refuses a request
// before any handler runs.
var rejectedByHTTP = []int{
	http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusExpectationFailed,
	http.StatusRequestHeaderFieldsTooLarge, http.StatusNotImplemented, http.StatusHTTPVersionNotSupported,
}

// FuzzServerRawHTTP writes raw bytes to a nano server, a nano service and
// a plain net/http server with the same limits. Whatever the bytes, no
// target panics and the nano ones still serve a message afterwards; where
// net/http refuses the input before its handler runs, the nano ones refuse
// it with the same status; where its handler runs, their first answer is
// well-formed HTTP/1.x.
func FuzzServerRawHTTP(f *testing.F) {
	ts := startTargets(f, 200*time.Millisecond)
	f.Add([]byte(request("", valid)))
	f.Fuzz(func(t *testing.T, input []byte) {
		t.Parallel() // seeds only; no effect while fuzzing
		targets := ts.targetList()
		answers := make([]firstAnswer, len(targets))
		var wg sync.WaitGroup
		for i, target := range targets {
			wg.Go(func() { answers[i] = ts.firstAnswer(target.addr, input) })
		}
		wg.Wait()

		ref := answers[0]
		for i, target := range targets[1:] {
			a := answers[i+1]
			switch {
			case ref.resp == nil:
				// net/http ended the connection without an answer: the input
				// is cut short or slow. Nothing to compare.
			case !ref.ran && slices.Contains(rejectedByHTTP, ref.resp.StatusCode):
				if a.resp == nil || a.resp.StatusCode != ref.resp.StatusCode {
					t.Errorf("net/http refuses the input with %d before its handler; %s: %s", ref.resp.StatusCode, target.name, a)
				}
			case ref.ran:
				if msg := a.malformed(); msg != "" {
					t.Errorf("net/http's handler served the input (first answer %d); %s: %s", ref.resp.StatusCode, target.name, msg)
				}
			}
		}
		for _, target := range targets[1:] {
			ex := converse(t, target.addr, []byte(request("", valid)), 1)
			if !slices.Equal(ex.statuses, []int{http.StatusOK}) || !bytes.Equal(ex.bodies[0], []byte(`{"Result":3}`)) {
				t.Fatalf("%s no longer serves a message after the input: %v", target.name, ex)
			}
		}
	})
}

// firstAnswer writes input to a new connection to addr and reads the
// first answer, if one comes before the connection ends.
func (ts *httpTargets) firstAnswer(addr string, input []byte) (a firstAnswer) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return firstAnswer{err: err}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(answerWait))
	go c.Write(input) // a target may answer before it reads all of the input; Close ends the write

	a.resp, a.err = http.ReadResponse(bufio.NewReader(c), nil)
	if a.err != nil {
		a.resp = nil
	} else {
		a.body, a.bodyErr = io.ReadAll(a.resp.Body)
	}
	_, a.ran = ts.plainRan.LoadAndDelete(c.LocalAddr().String())
	return a
}

// malformed says what is wrong with a nano target's first answer to a
// request net/http served, or "" when it is a well-formed HTTP/1.1 answer
// (or HTTP/1.0, as net/http answers HTTP/1.0 requests). A body delimited
// by the end of the connection is taken as it comes: the end may be a
// reset.
func (a firstAnswer) malformed() string {
	switch {
	case a.resp == nil:
		return "no answer: " + a.err.Error()
	case a.resp.ProtoMajor != 1 || a.resp.ProtoMinor > 1:
		return "answered in " + a.resp.Proto
	case a.resp.StatusCode < 100 || a.resp.StatusCode > 599:
		return "status " + a.resp.Status
	case a.bodyErr != nil && (a.resp.ContentLength >= 0 || len(a.resp.TransferEncoding) > 0):
		return "body not as framed: " + a.bodyErr.Error()
	}
	return ""
}

// String sums a up for error messages.
func (a firstAnswer) String() string {
	if a.resp == nil {
		return "no answer (" + a.err.Error() + ")"
	}
	return a.resp.Status
}
