package nano

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// How a Service registers its patterns at its server, keeps them
// registered, and deregisters them when it shuts down.

// advertise returns the registration data of this service, taking the
// port of the listener when opts.Addr has none.
func (s *Service) advertise(la net.Addr) *Registration {
	host, port, _ := splitHostPort(s.opts.Addr)
	if port == 0 {
		if ta, ok := la.(*net.TCPAddr); ok {
			port = ta.Port
		}
	}
	_, serverPort, _ := splitHostPort(s.opts.Server)
	return &Registration{
		ServiceAddress: net.JoinHostPort(host, strconv.Itoa(port)),
		ServicePort:    port,
		ServerAddress:  s.opts.Server,
		ServerPort:     serverPort,
		TLS:            s.opts.TLS != nil,
	}
}

// registration returns what the service sends to register pattern p.
func (s *Service) registration(p string) Registration {
	var r Registration
	if self := s.self.Load(); self != nil {
		r = *self
	} else {
		r = *s.advertise(nil)
	}
	r.Pattern = p
	return r
}

// startRegistration keeps p registered in the background until the
// service shuts down. The caller holds s.mu.
func (s *Service) startRegistration(p string) {
	s.pending.Add(1)
	s.loops.Go(func() { s.registerLoop(p) })
}

// registerLoop registers p, then renews the registration at a third of
// the TTL the server announced. While the server cannot be reached it
// retries after 100 ms, doubling the wait up to RetryInterval, or up to a
// third of the TTL once registered. A server that refuses the
// registration (a wrong token, say) is not asked again, but for a 403: the
// identities a server allows may change while it runs, and differ for a
// while between servers, so a forbidden registration is asked again every
// RetryInterval (and /readyz says why meanwhile).
func (s *Service) registerLoop(p string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.abort: // Shutdown's ctx ended: cut a registration short
			cancel()
		case <-ctx.Done():
		}
	}()
	retry, failures, registered := firstRetry, 0, false
	longest := s.opts.RetryInterval // the longest wait between two attempts
	for {
		server := s.client.servers.current()
		ttl, err := s.registerOnce(ctx, server, p)
		wait := retry
		switch {
		case err == nil:
			if !registered {
				s.pending.Add(-1)
			}
			if !registered || failures > 0 {
				s.log.Info("nano: pattern registered", "pattern", p, "server", server, "failed_attempts", failures)
			}
			s.forbidden.Delete(p)
			registered, failures, retry = true, 0, firstRetry
			wait = heartbeat(ttl)
			// Once registered, retries must come often enough to renew
			// before the registration runs out: after an outage, servers
			// give each instance one TTL more, no longer.
			longest = min(s.opts.RetryInterval, wait)
		case errors.Is(err, ErrClosed):
			return
		case forbidden(err):
			if _, known := s.forbidden.Swap(p, fmt.Sprintf("the server refuses to register %q (asking again every %v): %s", p, s.opts.RetryInterval, publicMessage(err))); !known {
				s.log.Error("nano: server refused registration, asking again later", "pattern", p, "server", server, "error", err)
			}
			failures++
			wait = s.opts.RetryInterval
		case permanent(err):
			s.log.Error("nano: server refused registration", "pattern", p, "server", server, "error", err)
			why := fmt.Sprintf("the server refused to register %q for good (it will not be asked again): %s", p, publicMessage(err))
			s.refused.CompareAndSwap(nil, &why)
			return
		default:
			failures++
			s.client.servers.failed(server) // the next attempt asks the next server, if any
			if failures == 1 {
				s.log.Warn("nano: cannot register, retrying", "pattern", p, "server", server, "error", err)
			} else {
				s.log.Debug("nano: registration retry failed", "pattern", p, "attempt", failures, "error", err)
			}
			retry = min(2*retry, longest)
		}
		select {
		case <-s.done:
			return
		case <-time.After(wait):
		}
	}
}

// heartbeat is the interval of renewals for a registration that lives
// ttl: a third of it, so that two renewals may fail before it expires.
func heartbeat(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		ttl = defaultTTL // a server that does not say, like the original
	}
	return max(ttl/3, 10*time.Millisecond)
}

// registerOnce sends one registration of p to server and returns the
// TTL the server announced, zero if it did not. It returns ErrClosed when
// ctx ended it.
func (s *Service) registerOnce(ctx context.Context, server, p string) (time.Duration, error) {
	data, err := s.control(ctx, server, "/register", p)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ErrClosed
		}
		return 0, err
	}
	var answer struct{ TTL float64 }
	json.Unmarshal(data, &answer) // the original server answers with no body
	if answer.TTL > 0 {
		s.acked.Store(true)
	}
	return time.Duration(answer.TTL * float64(time.Second)), nil
}

// deregisterAll removes the service's patterns from the server, so that
// no new message is routed here while the service drains. Only servers
// that announced a TTL get it: on a server of the original library,
// /deregister would be taken for a message and routed to a handler.
func (s *Service) deregisterAll(ctx context.Context) {
	limit := deregisterTimeout
	if ctx.Err() != nil {
		// Shutdown's ctx has ended: deregistering still spares the
		// servers a failed call to this instance, so try, briefly.
		ctx, limit = context.WithoutCancel(ctx), lateDeregisterTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var wg sync.WaitGroup
	s.routes.each(func(p string, _ *handler) {
		wg.Go(func() {
			server := s.client.servers.current()
			if _, err := s.control(ctx, server, "/deregister", p); err != nil {
				s.log.Warn("nano: cannot deregister; the registration will expire", "pattern", p, "server", server, "error", err)
			}
		})
	})
	wg.Wait()
}

// control posts the registration of p to a control endpoint of server
// and returns the body of its 200 answer.
func (s *Service) control(ctx context.Context, server, path, p string) ([]byte, error) {
	if s.opts.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.CallTimeout)
		defer cancel()
	}
	body, err := json.Marshal(s.registration(p))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.client.serverURL(server, path), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json") // errors as JSON, see plainErrors
	if s.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.opts.Token)
	}
	resp, err := s.client.transport.RoundTrip(req)
	if err != nil {
		return nil, callError(ctx, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return nil, errorFromResponse(resp.StatusCode, resp.Header, data)
	}
	return data, nil
}

// forbidden reports whether the server refused a registration for the
// identity of the service's certificate (403).
func forbidden(err error) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Status == http.StatusForbidden
}

// permanent reports whether a registration error will not go away by
// retrying: the server rejected the registration itself.
func permanent(err error) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Status >= 400 && e.Status < 500 &&
		e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}
