package nano_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	nano "github.com/domWinter/go-nano"
)

// TestNoInstance: a pattern whose registered instances all refuse
// connections is answered 503 with a JSON error, Retry-After and
// Nano-Error: no-instance, message after message, while its registrations
// live; a pattern nobody registered is answered 404. Act tells the two
// apart with ErrNoInstance and ErrNoService, whether it calls the peers
// it resolved or goes through the server.
func TestNoInstance(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	dead := []string{deadAddr(t), deadAddr(t)}
	for _, a := range dead {
		registerAt(t, addr, "role:gone", a)
	}
	waitInstances(t, addr, "role:gone", 2)

	cases := []struct {
		pattern    string
		status     int
		noInstance bool // ErrNoInstance, else ErrNoService
	}{
		{"role:gone", http.StatusServiceUnavailable, true},
		{"role:never", http.StatusNotFound, false},
	}
	for _, path := range callPaths {
		t.Run(path.name, func(t *testing.T) {
			c := path.open(t, addr)
			for _, tc := range cases {
				for i := range 3 {
					msg := `{"Pattern":"` + tc.pattern + `"}`
					if path.act {
						_, err := c.client.ActContext(context.Background(), []byte(msg), tc.pattern)
						if errors.Is(err, nano.ErrNoInstance) != tc.noInstance || errors.Is(err, nano.ErrNoService) == tc.noInstance {
							t.Fatalf("%s, call %d: %v; want ErrNoInstance %v, ErrNoService %v", tc.pattern, i, err, tc.noInstance, !tc.noInstance)
						}
						checkNoAddress(t, err.Error(), dead...)
						continue
					}
					status, header, body := postHeader(t, addr, msg)
					text := errorBody(t, body)
					checkNoAddress(t, text, dead...)
					if status != tc.status {
						t.Fatalf("%s, message %d: %d %s; want %d", tc.pattern, i, status, body, tc.status)
					}
					if got := header.Get("Nano-Error"); (got == "no-instance") != tc.noInstance {
						t.Errorf("%s, message %d: Nano-Error %q", tc.pattern, i, got)
					}
					retry, err := strconv.Atoi(header.Get("Retry-After"))
					switch {
					case !tc.noInstance && header.Get("Retry-After") != "":
						t.Errorf("%s, message %d: Retry-After %q on a 404", tc.pattern, i, header.Get("Retry-After"))
					case tc.noInstance && (err != nil || retry < 1):
						t.Errorf("%s, message %d: Retry-After %q; want whole seconds, one at least", tc.pattern, i, header.Get("Retry-After"))
					}
				}
			}
		})
	}
	if n := resolveCount(t, addr, "role:gone"); n != 2 {
		t.Errorf("the server resolves role:gone to %d instances; want both registrations to live on", n)
	}
}

// postHeader posts msg to the server at addr and returns the answer's
// status, header and body.
func postHeader(t *testing.T, addr, msg string) (int, http.Header, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, readAll(resp)
}
