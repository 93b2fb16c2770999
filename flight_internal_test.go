package nano

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// joinContext tells when a caller of flight.do has joined a call: do asks
// for Done only once it waits for the result.
type joinContext struct {
	context.Context
	joined chan struct{}
	once   sync.Once
}

func newJoinContext(ctx context.Context) *joinContext {
	return &joinContext{Context: ctx, joined: make(chan struct{})}
}

func (c *joinContext) Done() <-chan struct{} {
	c.once.Do(func() { close(c.joined) })
	return c.Context.Done()
}

func TestFlightMergesConcurrentCalls(t *testing.T) {
	var (
		f       flight[int]
		calls   atomic.Int32
		release = make(chan struct{})
		wg      sync.WaitGroup
	)
	fn := func() (int, error) {
		calls.Add(1)
		<-release
		return 42, nil
	}
	results := make(chan int, 6)
	for range 6 {
		ctx := newJoinContext(context.Background())
		wg.Go(func() {
			v, _ := f.do(ctx, "k", fn)
			results <- v
		})
		<-ctx.joined
	}
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != 42 {
			t.Fatalf("a caller got %d", v)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("fn ran %d times", n)
	}
}

// TestFlightCallerLeavesOnItsContext: a caller whose context ends stops
// waiting at once; the call goes on for the others.
func TestFlightCallerLeavesOnItsContext(t *testing.T) {
	var f flight[int]
	release := make(chan struct{})
	fn := func() (int, error) { <-release; return 7, nil }

	patient := newJoinContext(context.Background())
	result := make(chan int, 1)
	go func() {
		v, _ := f.do(patient, "k", fn)
		result <- v
	}()
	<-patient.joined

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := f.do(ctx, "k", fn); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("impatient caller: %v; want its deadline", err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("impatient caller waited %v", waited)
	}
	close(release)
	if v := <-result; v != 7 {
		t.Fatalf("patient caller got %d", v)
	}
}

func TestFlightPanicReachesCallersAsError(t *testing.T) {
	var f flight[*int]
	release := make(chan struct{})
	errs := make(chan error, 2)
	for range 2 {
		ctx := newJoinContext(context.Background())
		go func() {
			_, err := f.do(ctx, "k", func() (*int, error) { <-release; panic("boom") })
			errs <- err
		}()
		<-ctx.joined
	}
	close(release)
	for range 2 {
		if err := <-errs; err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("caller got %v; want the panic as an error", err)
		}
	}
}
