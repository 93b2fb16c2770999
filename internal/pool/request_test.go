package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// closeCounter is a request body that counts its Close calls.
type closeCounter struct {
	io.Reader
	closes atomic.Int32
}

// Close counts the call.
func (b *closeCounter) Close() error {
	b.closes.Add(1)
	return nil
}

func TestRefusedBeforeDialling(t *testing.T) {
	t.Parallel()
	s := newHTTPServer(t, hello)
	cases := []struct {
		name string
		edit func(*http.Request)
		want string
	}{
		{"https without TLSConfig", func(r *http.Request) { r.URL.Scheme = "https" }, "https without TLSConfig"},
		{"ftp", func(r *http.Request) { r.URL.Scheme = "ftp" }, `unsupported protocol scheme "ftp"`},
		{"no host", func(r *http.Request) { r.URL.Host = "" }, "no Host"},
		{"invalid method", func(r *http.Request) { r.Method = "GET /" }, "invalid method"},
		{"CONNECT", func(r *http.Request) { r.Method = http.MethodConnect }, "CONNECT"},
		{"upgrade", func(r *http.Request) {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}, "upgrade"},
		{"trailer", func(r *http.Request) { r.Trailer = http.Header{"X-Sum": nil} }, "trailers"},
		{"transfer encoding", func(r *http.Request) { r.TransferEncoding = []string{"gzip"} }, "Transfer-Encoding"},
		{"invalid host", func(r *http.Request) { r.Host = "a\r\nX-Injected: 1" }, "invalid Host"},
		{"control byte in the target", func(r *http.Request) { r.URL.Opaque = "/a\x00b" }, "request target"},
		{"invalid field name", func(r *http.Request) { r.Header["X:Y"] = []string{"1"} }, `invalid header field name "X:Y"`},
		{"DEL in a field value", func(r *http.Request) { r.Header["X-A"] = []string{"a\x7f"} }, `invalid header field value for "X-A"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := &dialer{}
			tr := &Transport{DialContext: d.dial}
			body := &closeCounter{Reader: strings.NewReader("message")}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL, body)
			tc.edit(req)
			_, err := tr.RoundTrip(req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one saying %q", err, tc.want)
			}
			if n := d.n.Load(); n != 0 {
				t.Fatalf("%d dials", n)
			}
			if n := body.closes.Load(); n != 1 {
				t.Fatalf("body closed %d times", n)
			}
		})
	}
}

func TestBodyClosed(t *testing.T) {
	t.Parallel()
	ok := newHTTPServer(t, hello)
	resetting := newRawServer(t, func(c net.Conn, _ *bufio.Reader, _ *http.Request, _ int64) bool {
		reset(c)
		return false
	})
	cases := []struct {
		name    string
		url     string
		ctx     func(context.Context) context.Context
		wantErr bool
	}{
		{"answered", ok.URL, nil, false},
		{"reset", resetting.URL, nil, true},
		{"refused", refusing(t).URL, nil, true},
		{"cancelled before", ok.URL, func(ctx context.Context) context.Context {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			return ctx
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			if tc.ctx != nil {
				ctx = tc.ctx(ctx)
			}
			body := &closeCounter{Reader: strings.NewReader("message")}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tc.url, body)
			resp, err := (&Transport{}).RoundTrip(req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v, want error: %t", err, tc.wantErr)
			}
			if err == nil {
				drain(t, resp)
			}
			if n := body.closes.Load(); n != 1 {
				t.Fatalf("body closed %d times", n)
			}
		})
	}
}

func TestBodyOfWrongLength(t *testing.T) {
	t.Parallel()
	s := newHTTPServer(t, hello)
	for _, length := range []int64{3, 10} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL, strings.NewReader("message"))
		req.ContentLength = length
		if _, err := (&Transport{}).RoundTrip(req); err == nil || !strings.Contains(err.Error(), "ContentLength") {
			t.Errorf("ContentLength %d of a body of 7 bytes: got error %v", length, err)
		}
	}
}

func TestFieldsWritten(t *testing.T) {
	t.Parallel()
	got := make(chan *http.Request, 1)
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) { got <- r })
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/a%20b?c=d", nil)
	req.Host = "service.example:80"
	req.Header["host"] = []string{"other.example"}
	req.Header["Content-Length"] = []string{"5"}
	req.Header["Transfer-Encoding"] = []string{"chunked"}
	req.Header["Trailer"] = []string{"X-Sum"}
	req.Header["X-Kept"] = []string{"1", "2"}
	resp, err := (&Transport{}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	drain(t, resp)
	r := <-got
	checks := []struct {
		what string
		got  any
		want string
	}{
		{"Host", r.Host, `"service.example:80"`},
		{"target", r.RequestURI, `"/a%20b?c=d"`},
		{"User-Agent", r.Header.Values("User-Agent"), `[]`},
		{"Content-Length", r.Header.Values("Content-Length"), `[]`},
		{"Transfer-Encoding", r.TransferEncoding, `[]`},
		{"Trailer", r.Header.Values("Trailer"), `[]`},
		{"X-Kept", r.Header.Values("X-Kept"), `["1" "2"]`},
	}
	for _, c := range checks {
		if got := fmt.Sprintf("%q", c.got); got != c.want {
			t.Errorf("%s: got %s, want %s", c.what, got, c.want)
		}
	}
}

func TestDialCancelled(t *testing.T) {
	t.Parallel()
	tr := &Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, errors.New("dial abandoned")
	}}
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:1", nil)
	go cancel()
	if _, err := tr.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("got error %v, want context.Canceled", err)
	}
}
