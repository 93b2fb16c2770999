package pool

import (
	"errors"
	"io"
	"sync"
)

// errBodyClosed is what reads of a closed answer body return.
var errBodyClosed = errors.New("pool: read on closed answer body")

// body is the body of an answer while its connection is in use. Read to
// its end, it hands the connection back to the pool; closed before that,
// it closes the connection: what is left of the answer is not read. Read
// and Close may be called concurrently, Close to abort a Read.
type body struct {
	rc   io.ReadCloser // the body as http.ReadResponse frames it
	t    *Transport    // the pool that gets the connection back
	keep bool          // the connection may carry another exchange

	mu  sync.Mutex // guards c and err
	c   *conn      // the connection, until the exchange is over
	err error      // once set, what every Read returns
}

// Read reads the answer's body. Once the context of the request ended,
// it returns the context's error.
func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	c, err := b.c, b.err
	b.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if err := c.cancelled(); err != nil {
		return 0, b.end(c, c.fail("reading answer body", err), false)
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		err = b.end(c, io.EOF, true)
	case err != nil:
		err = b.end(c, c.fail("reading answer body", err), false)
	}
	return n, err
}

// Close ends the exchange: the connection is closed unless the body was
// read to its end. Reads after Close fail.
func (b *body) Close() error {
	b.mu.Lock()
	c := b.c
	b.c, b.err = nil, errBodyClosed
	b.mu.Unlock()
	if c != nil {
		b.t.release(c, false)
	}
	return nil
}

// end ends the exchange on c with err, which later reads return, and
// returns err. The connection goes back to the pool if the whole body was
// read and the connection may be kept; otherwise it is closed. If Close
// ended the exchange first, end returns the error Close left.
func (b *body) end(c *conn, err error, whole bool) error {
	b.mu.Lock()
	if b.c != c {
		err = b.err
		b.mu.Unlock()
		return err
	}
	b.c, b.err = nil, err
	b.mu.Unlock()
	b.t.release(c, whole && b.keep)
	return err
}
