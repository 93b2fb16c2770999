package nano

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// The control endpoints of a Server, beside the proxying of messages:
//
//	POST /register     register or renew an instance of a pattern
//	POST /deregister   remove an instance at once
//	GET  /resolve      the live instances of the pattern that routes ?pattern=
//	GET  /healthz      the process answers
//	GET  /readyz       the registry answers and the mirror is loaded

// register handles POST /register: it adds the instance, or renews it.
func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	reg, permanent, ok := s.readRegistration(w, r)
	if !ok {
		return
	}
	if n := s.opts.MaxPatterns; n > 0 && s.routes.len() >= n {
		if _, known := s.routes.get(reg.Pattern); !known {
			s.log.Warn("nano: registration refused: registry full", "pattern", reg.Pattern, "address", reg.ServiceAddress, "patterns", n)
			writeError(w, r, fmt.Errorf("%w: this server holds %d patterns", ErrRegistryFull, n))
			return
		}
	}
	// A caller that hangs up does not cancel the write: a cancelled write
	// would look like a registry outage.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.opts.RegistryTimeout)
	defer cancel()
	life := s.opts.TTL
	if permanent {
		life = permanentSpan
	}
	m, err := s.reg.register(ctx, reg, life, s.opts.TTL)
	if err != nil {
		// One line when the outage starts (setReady) and one when it ends,
		// with the count: not one per renewal refused meanwhile.
		s.setReady(false, err)
		s.failedRegistrations.Add(1)
		s.log.Debug("nano: registration failed", "pattern", reg.Pattern, "address", reg.ServiceAddress, "error", err)
		writeError(w, r, err)
		return
	}
	s.setReady(true, nil)
	if s.routes.merge(reg.Pattern, m) {
		s.log.Info("nano: service registered", "pattern", reg.Pattern, "address", reg.ServiceAddress, "tls", reg.TLS, "permanent", permanent)
	}
	writeJSON(w, http.StatusOK, registered{reg, s.opts.TTL.Seconds()})
}

// deregister handles POST /deregister: it removes the instance at once.
func (s *Server) deregister(w http.ResponseWriter, r *http.Request) {
	reg, _, ok := s.readRegistration(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.opts.RegistryTimeout)
	defer cancel()
	if err := s.reg.deregister(ctx, reg); err != nil {
		s.log.Warn("nano: deregistration failed", "pattern", reg.Pattern, "address", reg.ServiceAddress, "error", err)
		s.setReady(false, err)
		writeError(w, r, err)
		return
	}
	if s.routes.remove(reg.Pattern, reg.target(), time.Now().Add(s.opts.TTL)) {
		s.log.Info("nano: service deregistered", "pattern", reg.Pattern, "address", reg.ServiceAddress)
	}
	writeJSON(w, http.StatusOK, reg)
}

// maxRegistrationBytes bounds the body of a registration: a pattern of
// MaxPatternBytes and an address, with room to spare for the fields the
// original library's services add.
const maxRegistrationBytes = 64 << 10

// registrationLimit is the body limit of a registration: maxRegistrationBytes,
// or less if the server's MaxBodyBytes is lower.
func registrationLimit(maxBody int64) int64 {
	if maxBody < 0 {
		return maxRegistrationBytes
	}
	return min(maxBody, maxRegistrationBytes)
}

// readRegistration checks method and token and decodes the registration
// of a write request; it answers the request itself when they are wrong.
// permanent says that the registration is the original library's (see
// permanentSpan).
func (s *Server) readRegistration(w http.ResponseWriter, r *http.Request) (reg Registration, permanent, ok bool) {
	if r.Method != http.MethodPost {
		closeUnread(w, r)
		writeError(w, r, ErrMethodNotAllowed)
		return reg, false, false
	}
	if !s.authorized(r) {
		closeUnread(w, r)
		s.refuseRegistration(w, r, errTokenRequired)
		return reg, false, false
	}
	body, err := readBody(w, r, registrationLimit(s.opts.MaxBodyBytes))
	if err != nil {
		closeUnread(w, r)
		s.refuseRegistration(w, r, err)
		return reg, false, false
	}
	var in struct {
		Registration
		originalFields
	}
	if err := json.Unmarshal(body, &in); err != nil {
		s.refuseRegistration(w, r, fmt.Errorf("%w: %v", ErrInvalidMessage, err))
		return reg, false, false
	}
	if reg, err = in.Registration.normalize(); err != nil {
		s.refuseRegistration(w, r, err)
		return reg, false, false
	}
	if err := s.mayRegister(r, reg.Pattern); err != nil {
		s.refuseRegistration(w, r, err)
		return reg, false, false
	}
	return reg, in.Cache != nil, true
}

// originalFields are the fields of a registration that only the original
// library's services send: their peer cache, always an empty object.
type originalFields struct {
	Cache json.RawMessage
}

// refuseRegistration answers a registration or deregistration the server
// will not take, logs it with the address it came from and counts it.
func (s *Server) refuseRegistration(w http.ResponseWriter, r *http.Request, err error) {
	s.metrics.refusals.add(statusOf(err))
	s.log.Warn("nano: registration refused", "path", r.URL.Path, "from", r.RemoteAddr, "status", statusOf(err), "error", publicMessage(err))
	writeError(w, r, err)
}

// errTokenRequired answers a request that needs the token and lacks it.
var errTokenRequired = fmt.Errorf("%w: a valid bearer token is required", ErrUnauthorized)

// authorized reports whether a write request carries the token, when one
// is set. The comparison takes the same time whatever the token sent.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.Token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.Token)) == 1
}

// resolveEndpoint handles GET /resolve?pattern=...: the pattern a message
// with that Pattern is routed by, and its live instances.
func (s *Server) resolveEndpoint(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	p, err := parsePattern(r.URL.Query().Get("pattern"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	rt, err := s.resolve(r.Context(), p)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resolution{Pattern: rt.pattern, Instances: s.liveInstances(rt, s.now()), TTL: s.opts.TTL.Seconds()})
}

// liveInstances lists the instances of rt live at now, never nil. With a
// shared registry, the mirror is not told of renewals, only of expiries:
// an instance it holds is known to live at least one TTL more, and that is
// the expiry it reports.
func (s *Server) liveInstances(rt *route, now int64) []resolvedInstance {
	out := []resolvedInstance{}
	wall := time.Now().UnixNano()
	var lease int64
	if s.reg.shared() {
		lease = wall + int64(s.opts.TTL)
	}
	for _, in := range rt.instances {
		if in.liveAt(now) {
			addr, secure := splitTarget(in.addr)
			out = append(out, resolvedInstance{
				ServiceAddress: addr,
				TLS:            secure,
				Expires:        time.Unix(0, max(in.expires, lease)).UTC(),
				Permanent:      permanentAt(in.expires, wall),
			})
		}
	}
	return out
}

// listing is the answer of GET /services: the mirror's patterns and their
// instances.
type listing struct {
	Patterns []listedPattern `json:"Patterns"`
	Ready    bool            `json:"Ready"` // the registry answers; else the mirror may be stale
	TTL      float64         `json:"TTL"`   // seconds a registration lives unless renewed
}

type listedPattern struct {
	Pattern   string             `json:"Pattern"`
	Instances []resolvedInstance `json:"Instances"`
}

// servicesEndpoint handles GET /services: every pattern of the mirror with
// its live instances and their expiry, sorted by pattern, for people
// looking at a running system. With a token set, it requires the token.
func (s *Server) servicesEndpoint(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	if !s.authorized(r) { // it shows the whole topology at once
		writeError(w, r, errTokenRequired)
		return
	}
	out := listing{Patterns: []listedPattern{}, Ready: s.ready.Load(), TTL: s.opts.TTL.Seconds()}
	now := s.now()
	s.routes.each(func(rt *route) {
		if live := s.liveInstances(rt, now); len(live) > 0 {
			if states := rt.states.Load(); states != nil {
				wall := time.Now().UnixNano()
				for i := range live {
					if st := (*states)[targetOf(live[i].ServiceAddress, live[i].TLS)]; st != nil {
						live[i].Ejected = st.ejected(wall)
					}
				}
			}
			out.Patterns = append(out.Patterns, listedPattern{rt.pattern, live})
		}
	})
	slices.SortFunc(out.Patterns, func(a, b listedPattern) int { return strings.Compare(a.Pattern, b.Pattern) })
	writeJSON(w, http.StatusOK, out)
}

// healthz handles GET /healthz: the process is alive.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if allowGet(w, r) {
		writeAlive(w)
	}
}

// writeAlive is the answer of /healthz on servers and services.
func writeAlive(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz handles GET /readyz: 200 while the registry answers (the mirror
// was loaded at start), 503 while it does not.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	if s.draining.Load() {
		writeError(w, r, errDraining)
		return
	}
	if !s.ready.Load() {
		writeError(w, r, ErrRegistryUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// errDraining is the readiness of a server that Drain was called on.
var errDraining = &Error{Status: http.StatusServiceUnavailable, Message: "nano: server draining: it stops soon"}

// Drain makes GET /readyz answer 503 from now on, while the server goes on
// serving everything else as before: load balancers stop sending it new
// requests in the time a program gives them before calling Shutdown (as
// nano-server does during its -shutdown-delay).
func (s *Server) Drain() { s.draining.Store(true) }

// allowGet answers 405 to anything but GET and HEAD.
func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	closeUnread(w, r)
	writeError(w, r, ErrMethodNotAllowed)
	return false
}
