package nano

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// The peer cache of a Client: for each pattern it has called, the live
// instances the server named, called directly until PeerTTL passes.

// MaxPeers is the largest number of patterns a Client caches peers for.
const MaxPeers = 10_000

// peersOf returns the instances to call for pattern p: from the cache
// while fresh, else from the server's /resolve (one request for all
// concurrent callers, each waiting no longer than its own ctx allows).
// When the server cannot be asked, or does not answer within staleWait, a
// stale entry still serves (see keepStale). It returns a nil route, and no
// error, when the call should go through the server; an error when nothing
// handles the pattern or ctx ended.
func (c *Client) peersOf(ctx context.Context, p string) (*route, error) {
	cached, ok := c.peers.get(p)
	if ok && time.Now().UnixNano() < cached.refresh {
		return cached, nil
	}
	if c.legacyServer.Load() {
		return nil, nil // stale: the next answer through the server renews it
	}
	wait := ctx
	if cached != nil {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(ctx, staleWait)
		defer cancel()
	}
	rt, err := c.resolving.do(wait, p, func() (*route, error) {
		// It runs for every caller waiting on it, so no caller's context
		// bounds it: the client's Timeout does.
		ctx, cancel := context.WithTimeout(context.Background(), c.resolveTimeout())
		defer cancel()
		return c.resolve(ctx, p)
	})
	switch {
	case err == nil:
		return rt, nil
	case ctx.Err() != nil:
		return nil, callError(ctx, ctx.Err())
	case errors.Is(err, ErrNoService):
		c.peers.drop(p, nil)
		return nil, err
	case cached == nil:
		c.log.Debug("nano: cannot resolve", "pattern", p, "error", err)
		return nil, nil
	default:
		c.log.Debug("nano: cannot resolve; calling the instances known", "pattern", p, "error", err)
		return c.keepStale(cached), nil
	}
}

// Stale peers: while the server cannot be asked, a Client keeps calling
// the instances it knows, as the original library's Act did, until they
// fail themselves (outlier ejection, then the server, which fails too).
const (
	staleRetry = time.Second            // how often the server is asked again meanwhile
	staleWait  = 500 * time.Millisecond // how long a call waits for the server's answer before using the instances it knows
)

// keepStale caches again the instances of old, a route due for refresh
// that the server could not renew: they are called for staleRetry more,
// whatever the expiry the server gave them, with their balancing and
// outlier states. The route in the cache is replaced only if it is still
// old, so that a refresh that landed meanwhile wins.
func (c *Client) keepStale(old *route) *route {
	refresh := time.Now().Add(staleRetry).UnixNano()
	r := &route{pattern: old.pattern, refresh: refresh, instances: slices.Clone(old.instances)}
	for i := range r.instances {
		r.instances[i].expires = max(r.instances[i].expires, refresh+int64(staleRetry))
	}
	r.inheritStates(old)
	c.peers.replace(old, r)
	return r
}

// resolve asks the server for the live instances of the pattern that
// routes p, and caches them under p until PeerTTL passes (or the TTL the
// server announced, if shorter). A server without /resolve (the original
// library's answers 405) is not asked again; the client then learns one
// instance from each answer that comes through the server.
func (c *Client) resolve(ctx context.Context, p string) (*route, error) {
	resp, err := c.askServers(ctx, p)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp.Body, c.opts.MaxResponseBytes)
	if err != nil {
		return nil, callError(ctx, err)
	}
	if resp.StatusCode == http.StatusMethodNotAllowed {
		c.legacyServer.Store(true)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorFromResponse(resp.StatusCode, resp.Header, data)
	}
	var res resolution
	if err := json.Unmarshal(data, &res); err != nil {
		return nil, fmt.Errorf("%w: bad /resolve answer: %v", ErrServiceUnavailable, err)
	}
	ttl := c.opts.PeerTTL
	if server := time.Duration(res.TTL * float64(time.Second)); server > 0 {
		ttl = min(ttl, server)
	}
	rt := &route{pattern: p, refresh: time.Now().Add(ttl).UnixNano()}
	for _, in := range res.Instances {
		if dialAddr(in.ServiceAddress) == nil {
			rt.instances = append(rt.instances, newInstance(targetOf(in.ServiceAddress, in.TLS), in.Expires))
		}
	}
	if len(rt.instances) == 0 {
		return nil, fmt.Errorf("%w %q", ErrNoService, p)
	}
	c.remember(rt)
	return rt, nil
}

// askServers sends GET /resolve for p to the current server, and on to the
// next while a server cannot be reached.
func (c *Client) askServers(ctx context.Context, p string) (*http.Response, error) {
	var last error
	for range c.servers.len() {
		addr := c.servers.current()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.serverURL(addr, "/resolve?pattern="+url.QueryEscape(p)), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.transport.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		last = callError(ctx, err)
		if !failoverFromServer(last) {
			return nil, last
		}
		c.servers.failed(addr)
	}
	return nil, last
}

// resolveTimeout bounds a call to /resolve: the client's Timeout, or
// defaultCallTimeout when it has none.
func (c *Client) resolveTimeout() time.Duration {
	if c.opts.Timeout > 0 {
		return c.opts.Timeout
	}
	return defaultCallTimeout
}

// learn caches the service that answered a call through a server without
// /resolve. The entry serves that exact pattern only: the server may route
// a longer pattern to a more specific service.
func (c *Client) learn(p string, reg Registration) {
	if c.opts.PeerTTL <= 0 {
		return
	}
	reg, err := reg.normalize()
	if err != nil {
		return // an answer without a usable Service: nothing to cache
	}
	now := time.Now()
	c.remember(&route{
		pattern:   p,
		instances: []instance{newInstance(reg.target(), now.Add(c.opts.PeerTTL))},
		refresh:   now.Add(c.opts.PeerTTL).UnixNano(),
	})
}

// remember caches rt, unless the cache is full of fresh entries.
func (c *Client) remember(rt *route) {
	if c.peers.len() >= MaxPeers && !c.prune() {
		return
	}
	c.peers.set(rt)
}

// prune drops the entries due for refresh and reports whether there is
// room for another.
func (c *Client) prune() bool {
	now := time.Now().UnixNano()
	c.peers.each(func(rt *route) {
		if now > rt.refresh {
			c.peers.drop(rt.pattern, rt)
		}
	})
	return c.peers.len() < MaxPeers
}
