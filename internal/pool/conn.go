package pool

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"time"
)

// conn is a connection to a host with the buffers of its exchanges. One
// exchange uses it at a time; only the watch of that exchange's context
// runs beside it.
type conn struct {
	nc        net.Conn
	addr      string        // the key of the pool: the host's "host:port", after "https://" for TLS
	br        *bufio.Reader // reads nc through Read, which bounds answer heads
	bw        *bufio.Writer // writes to nc
	headLeft  int64         // bytes the answer head being read may still take
	idleSince time.Time     // when the connection last went back to the pool
	stop      func() bool   // ends the watch of the exchange's context; nil if none
	sock      socket        // tells whether the connection is fit after being idle

	mu    sync.Mutex // guards cause
	cause error      // the error of the context that ended the exchange
}

// bufferSize is the size of each of a connection's two buffers.
const bufferSize = 4 << 10

// aLongTimeAgo is a deadline in the past: set on a connection, it makes
// its blocked reads and writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

// errHeadLimit is what reads return once an answer's head has used up
// the bytes it may take.
var errHeadLimit = errors.New("pool: answer head limit reached")

// newConn returns nc to addr with its buffers, ready for an exchange.
func newConn(addr string, nc net.Conn) *conn {
	c := &conn{nc: nc, addr: addr, headLeft: math.MaxInt64}
	c.br = bufio.NewReaderSize(c, bufferSize)
	c.bw = bufio.NewWriterSize(nc, bufferSize)
	raw := nc
	if tc, ok := nc.(*tls.Conn); ok {
		// The socket under TLS: a peer that closed the connection, or sent
		// an alert, has left bytes to read there.
		raw = tc.NetConn()
	}
	c.sock.init(raw)
	return c
}

// Read reads from the connection for br, no more than what is left of the
// bound on the answer's head; once that is used up it returns
// errHeadLimit.
func (c *conn) Read(p []byte) (int, error) {
	if c.headLeft <= 0 {
		return 0, errHeadLimit
	}
	if int64(len(p)) > c.headLeft {
		p = p[:c.headLeft]
	}
	n, err := c.nc.Read(p)
	c.headLeft -= int64(n)
	return n, err
}

// watch makes the end of ctx abort the exchange on c at once: it records
// the context's error and moves the connection's deadline into the past,
// so that any read or write in progress or to come fails. The watch lasts
// until unwatch.
func (c *conn) watch(ctx context.Context) {
	if ctx.Done() == nil {
		return
	}
	c.stop = context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cause = ctx.Err()
		c.mu.Unlock()
		c.nc.SetDeadline(aLongTimeAgo)
	})
}

// unwatch ends the watch set by watch and reports whether the connection
// is as the exchange left it: false if the context ended the exchange, in
// which case the connection must be closed.
func (c *conn) unwatch() bool {
	stop := c.stop
	c.stop = nil
	return stop == nil || stop()
}

// cancelled returns the error of the context that ended the exchange, or
// nil.
func (c *conn) cancelled() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// fail returns the error of the exchange on c, which met err while doing
// what it says: the context's error if the context ended the exchange,
// else err.
func (c *conn) fail(doing string, err error) error {
	if cause := c.cancelled(); cause != nil {
		err = cause
	}
	return fmt.Errorf("pool: %s: %w", doing, err)
}

// close closes the connection.
func (c *conn) close() {
	c.nc.Close()
}
