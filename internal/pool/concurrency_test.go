package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConcurrentRoundTrips(t *testing.T) {
	t.Parallel()
	s := newHTTPServer(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) })
	tr := &Transport{MaxIdleConnsPerHost: 4}
	stop := make(chan struct{})
	var closer sync.WaitGroup
	closer.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				tr.CloseIdleConnections()
			}
		}
	})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				msg := fmt.Sprintf("message %d of goroutine %d", i, g)
				ctx, cancel := context.WithCancel(t.Context())
				if i%5 == 4 {
					time.AfterFunc(time.Duration(i%3)*100*time.Microsecond, cancel)
				}
				if err := echoOnce(ctx, tr, s.URL, msg, i%7 == 6); err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("goroutine %d, request %d: %v", g, i, err)
				}
				cancel()
			}
		})
	}
	wg.Wait()
	close(stop)
	closer.Wait()
}

// echoOnce posts msg and checks that the answer repeats it, or, if
// early, closes the answer's body before reading it.
func echoOnce(ctx context.Context, tr *Transport, url, msg string, early bool) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(msg))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if early {
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if string(b) != msg {
		return fmt.Errorf("answer %q to %q", b, msg)
	}
	return nil
}

func TestCloseAbortsRead(t *testing.T) {
	t.Parallel()
	s := newHTTPServer(t, holdBody)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL, nil)
	resp, err := (&Transport{}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		read <- err
	}()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	resp.Body.Close()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("read of a closed body succeeded")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not abort the read")
	}
	t.Logf("read aborted after %v", time.Since(start))
}
