package nano

import (
	"context"
	"fmt"
	"sync"
)

// flight merges concurrent calls for the same key into one: the first
// caller starts fn, and every caller, the first included, waits for its
// result or for the end of its own context, whichever comes first. fn runs
// on a goroutine of its own, so a caller that gives up never cuts the call
// short for the others; fn must therefore bound itself (it gets no caller's
// context). A zero flight is ready to use; it is safe for concurrent use.
type flight[V any] struct {
	mu    sync.Mutex          // guards calls
	calls map[string]*call[V] // in-flight calls by key
}

type call[V any] struct {
	done chan struct{} // closed when val and err are set
	val  V
	err  error
}

// do runs fn once for all concurrent callers with the same key, and
// returns its result, or ctx's error if ctx ends first.
func (f *flight[V]) do(ctx context.Context, key string, fn func() (V, error)) (V, error) {
	f.mu.Lock()
	c, ok := f.calls[key]
	if !ok {
		c = &call[V]{done: make(chan struct{})}
		if f.calls == nil {
			f.calls = make(map[string]*call[V])
		}
		f.calls[key] = c
		go f.run(key, c, fn)
	}
	f.mu.Unlock()

	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// run calls fn and hands its result to the callers of key. A panic in fn
// becomes their error rather than a crash of the process.
func (f *flight[V]) run(key string, c *call[V], fn func() (V, error)) {
	defer func() {
		if v := recover(); v != nil {
			c.err = fmt.Errorf("nano: merged call panicked: %v", v)
		}
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
	}()
	c.val, c.err = fn()
}
