package pool

import "time"

// getIdle takes from the pool the most recently used idle connection to
// addr that is still fit for an exchange, or returns nil. Connections it
// finds unfit are closed: the peer closed them or sent bytes nobody asked
// for, or they outlived IdleConnTimeout. Taking the next one is safe, as
// nothing was written on those.
func (t *Transport) getIdle(addr string) *conn {
	for {
		t.mu.Lock()
		conns := t.idle[addr]
		if len(conns) == 0 {
			t.mu.Unlock()
			return nil
		}
		c := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[addr] = conns[:len(conns)-1]
		t.mu.Unlock()
		if !t.expired(c, time.Now()) && c.sock.alive() {
			return c
		}
		c.close()
	}
}

// putIdle keeps c for a later exchange with its host, unless the pool
// holds enough idle connections to that host already, in which case c is
// closed. It arms the janitor if it is not armed.
func (t *Transport) putIdle(c *conn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	conns := t.idle[c.addr]
	if len(conns) >= t.maxIdleConnsPerHost() {
		t.mu.Unlock()
		c.close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[string][]*conn)
	}
	t.idle[c.addr] = append(conns, c)
	if timeout := t.idleConnTimeout(); timeout > 0 && !t.armed {
		t.arm(timeout)
	}
	t.mu.Unlock()
}

// arm sets the janitor to fire after d. t.mu must be held.
func (t *Transport) arm(d time.Duration) {
	if t.janitor == nil {
		t.janitor = time.AfterFunc(d, t.sweep)
	} else {
		t.janitor.Reset(d)
	}
	t.armed = true
}

// sweep is the janitor: it closes the idle connections that outlived
// IdleConnTimeout, and arms itself again for the next one to expire, if
// any connection is left idle.
func (t *Transport) sweep() {
	now := time.Now()
	var expired []*conn
	t.mu.Lock()
	t.armed = false
	next := time.Duration(-1)
	for addr, conns := range t.idle {
		n := 0
		for n < len(conns) && t.expired(conns[n], now) {
			n++
		}
		expired = append(expired, conns[:n]...)
		conns = append(conns[:0], conns[n:]...)
		clear(conns[len(conns):cap(conns)])
		t.idle[addr] = conns
		if len(conns) == 0 {
			delete(t.idle, addr)
			continue
		}
		if left := conns[0].idleSince.Add(t.idleConnTimeout()).Sub(now); next < 0 || left < next {
			next = left
		}
	}
	if next >= 0 {
		t.arm(next)
	}
	t.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// expired reports whether c, idle since c.idleSince, outlived
// IdleConnTimeout at now.
func (t *Transport) expired(c *conn, now time.Time) bool {
	timeout := t.idleConnTimeout()
	return timeout > 0 && now.Sub(c.idleSince) >= timeout
}
