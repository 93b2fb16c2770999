package nano

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connLimit bounds the connections a server or service holds open at once,
// across all the listeners it serves: while the bound is reached, Accept
// waits for a connection to close, and new connections wait in the
// kernel's queue. A nil *connLimit sets no bound. It is safe for
// concurrent use.
type connLimit struct {
	slots  chan struct{} // one token per open connection
	log    *slog.Logger
	warned atomic.Int64 // Unix seconds of the last warning that the bound was reached
}

// wrap returns l bounded by c.
func (c *connLimit) wrap(l net.Listener) net.Listener {
	if c == nil {
		return l
	}
	return &limitedListener{Listener: l, limit: c, done: make(chan struct{})}
}

// full logs, at most once a minute, that the bound is reached.
func (c *connLimit) full() {
	now := time.Now().Unix()
	if last := c.warned.Load(); now-last >= 60 && c.warned.CompareAndSwap(last, now) {
		c.log.Warn("nano: connection limit reached; new connections wait", "limit", cap(c.slots))
	}
}

// limitedListener is a listener whose connections take a slot of its
// connLimit until they close.
type limitedListener struct {
	net.Listener
	limit     *connLimit
	closeOnce sync.Once
	done      chan struct{} // closed by Close: ends a wait for a slot
}

// Accept waits for a slot, then for a connection.
func (l *limitedListener) Accept() (net.Conn, error) {
	select {
	case l.limit.slots <- struct{}{}:
	default:
		l.limit.full()
		select {
		case l.limit.slots <- struct{}{}:
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.limit.slots
		return nil, err
	}
	return &limitedConn{Conn: c, slots: l.limit.slots}, nil
}

// Close closes the listener and ends a wait for a slot.
func (l *limitedListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitedConn gives its slot back when it is closed.
type limitedConn struct {
	net.Conn
	slots   chan struct{}
	release sync.Once
}

// Close closes the connection and gives its slot back, once.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release.Do(func() { <-c.slots })
	return err
}

// CloseWrite shuts down the writing side of the connection, when it has
// one: net/http uses it to close gently a connection whose request body it
// did not read, so that the client still reads the answer.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
