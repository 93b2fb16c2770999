package nano

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// serverList is the nano servers a client asks and a service registers
// at: calls go to the current one until it fails to answer, then to the
// next, in the order given. A host name is dialed as it is at first (the
// dialer tries its addresses in turn); once the list has gone round, the
// names are looked up, and each address of a name becomes a server of its
// own. A zero serverList is not usable; it is safe for concurrent use.
type serverList struct {
	given []string // host:port, as configured

	addrs atomic.Pointer[[]string] // given, names resolved; never empty
	cur   atomic.Uint32            // index in addrs of the current server

	mu       sync.Mutex // serializes lookups; guards looked
	looked   time.Time  // when names were last looked up
	resolver *net.Resolver
}

// lookupEvery bounds how often a server list looks up its names again.
const lookupEvery = 10 * time.Second

// newServerList returns the list of the servers given, host:port each, in
// order.
func newServerList(given []string) *serverList {
	l := &serverList{given: slices.Clone(given), resolver: net.DefaultResolver}
	addrs := slices.Clone(given)
	l.addrs.Store(&addrs)
	return l
}

// current returns the address of the server to ask.
func (l *serverList) current() string {
	addrs := *l.addrs.Load()
	return addrs[int(l.cur.Load())%len(addrs)]
}

// failed moves on to the next server if addr, which did not answer, is
// still the current one. Once the list has gone round, the names in it
// are looked up again.
func (l *serverList) failed(addr string) {
	addrs := *l.addrs.Load()
	i := l.cur.Load()
	if addrs[int(i)%len(addrs)] != addr || !l.cur.CompareAndSwap(i, i+1) {
		return
	}
	if int(i+1)%len(addrs) == 0 {
		l.lookUp()
	}
}

// len returns the number of servers, names resolved.
func (l *serverList) len() int { return len(*l.addrs.Load()) }

// lookUp resolves the host names of the list to their addresses, at most
// once every lookupEvery; a name that does not resolve stays as it is.
func (l *serverList) lookUp() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.looked) < lookupEvery {
		return
	}
	l.looked = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var addrs []string
	for _, hp := range l.given {
		host, port, err := net.SplitHostPort(hp)
		if _, ipErr := netip.ParseAddr(host); err != nil || ipErr == nil {
			addrs = append(addrs, hp)
			continue
		}
		ips, err := l.resolver.LookupHost(ctx, host)
		if err != nil || len(ips) == 0 {
			addrs = append(addrs, hp)
			continue
		}
		for _, ip := range ips {
			addrs = append(addrs, net.JoinHostPort(ip, port))
		}
	}
	l.addrs.Store(&addrs)
}
