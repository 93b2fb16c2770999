package nano

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestMirrorLookup(t *testing.T) {
	var m mirror[string]
	for _, p := range []string{"role:math", "role:math,cmd:sum", "role:math,cmd:sum,return:zero", "a:1,b:2,c:3"} {
		m.insert(p, "svc "+p)
	}
	tests := []struct {
		req, want string // want "" means no match
	}{
		{"role:math,cmd:sum", "role:math,cmd:sum"},
		{"role:math,cmd:sum,return:zero", "role:math,cmd:sum,return:zero"},
		{"role:math,cmd:sum,return:zero,x:1", "role:math,cmd:sum,return:zero"},
		{"role:math,cmd:sum,return:zeros", "role:math,cmd:sum"},
		{"role:math,cmd:summary", "role:math"},
		{"role:math,cmd:product", "role:math"},
		{"role:mathematics", ""},
		{"role:mat", ""},
		{"a:1,b:2", ""},
		{"a:1,b:2,c:3,d:4", "a:1,b:2,c:3"},
		{"a:1,b:2,c:30", ""},
		{"other", ""},
	}
	for _, tt := range tests {
		t.Run(tt.req, func(t *testing.T) {
			got, v, ok := m.lookup(tt.req)
			if tt.want == "" {
				if ok {
					t.Fatalf("lookup(%q) matched %q; want no match", tt.req, got)
				}
				return
			}
			if !ok || got != tt.want || v != "svc "+tt.want {
				t.Fatalf("lookup(%q) = %q, %q, %v; want %q", tt.req, got, v, ok, tt.want)
			}
		})
	}
}

// TestMirrorOverMatchingPrefixOnly checks the case the original got wrong:
// with only "role:math,cmd:sum" registered, "role:math,cmd:summary" matches
// nothing, however often it is asked.
func TestMirrorOverMatchingPrefixOnly(t *testing.T) {
	var m mirror[int]
	m.insert("role:math,cmd:sum", 1)
	for range 3 {
		if p, _, ok := m.lookup("role:math,cmd:summary"); ok {
			t.Fatalf("lookup matched %q", p)
		}
	}
}

func TestMirrorZeroValue(t *testing.T) {
	var m mirror[int]
	if _, _, ok := m.lookup("a"); ok {
		t.Fatal("empty mirror matched")
	}
	if m.len() != 0 || m.deleteIf("a", func(int) bool { return false }) {
		t.Fatal("empty mirror is not empty")
	}
}

func TestMirrorDeleteIf(t *testing.T) {
	var m mirror[int]
	m.insert("a", 1)
	if m.deleteIf("a", func(v int) bool { return v == 1 }) {
		t.Fatal("deleted an entry keep wanted kept")
	}
	if !m.deleteIf("a", func(v int) bool { return v != 1 }) {
		t.Fatal("did not delete")
	}
	if _, ok := m.get("a"); ok {
		t.Fatal("entry still there")
	}
}

func TestMirrorConcurrentReadersAndWriters(t *testing.T) {
	var m mirror[int]
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				p := fmt.Sprintf("w:%d,i:%d", w, i)
				m.insert(p, i)
				if i%3 == 0 {
					m.deleteIf(p, func(int) bool { return false })
				}
			}
		})
		wg.Go(func() {
			for i := range 2000 {
				if p, v, ok := m.lookup(fmt.Sprintf("w:%d,i:%d,x:1", w, i%500)); ok && p != fmt.Sprintf("w:%d,i:%d", w, v) {
					t.Errorf("lookup returned %q for value %d", p, v)
				}
			}
		})
	}
	wg.Wait()
	if got, want := m.len(), 4*(500-167); got != want {
		t.Fatalf("len = %d; want %d", got, want)
	}
}

func TestMirrorLookupHitDoesNotAllocate(t *testing.T) {
	m := filledMirror(1000)
	req := "role:svc42,cmd:run,id:7"
	allocs := testing.AllocsPerRun(1000, func() {
		if _, _, ok := m.lookup(req); !ok {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Fatalf("a hit allocates %v times", allocs)
	}
}

func BenchmarkMirrorLookup(b *testing.B) {
	for _, n := range []int{10, 10_000, 100_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			m := filledMirror(n)
			req := fmt.Sprintf("role:svc%d,cmd:run,id:7", n/2)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := m.lookup(req); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

func filledMirror(n int) *mirror[*route] {
	m := &mirror[*route]{}
	for i := range n {
		p := fmt.Sprintf("role:svc%d,cmd:run", i)
		m.insert(p, &route{pattern: p, instances: []instance{newInstance("127.0.0.1:8080", time.Now().Add(time.Hour))}})
	}
	return m
}

// TestRouteTableKeepsInstanceStates: renewals and removals replace a
// route; what is known of its instances (messages in flight, ejections)
// carries over, and the states of removed instances go with them.
func TestRouteTableKeepsInstanceStates(t *testing.T) {
	var tb routeTable
	later := time.Now().Add(time.Hour)
	tb.merge("p", member{"a:1", later}, member{"b:1", later}, member{"c:1", later})
	r, _ := tb.get("p")
	a, c := r.state("a:1"), r.state("c:1")
	a.inFlight.Add(3)
	tb.merge("p", member{"a:1", later.Add(time.Minute)}, member{"d:1", later})
	r, _ = tb.get("p")
	if r.state("a:1") != a || r.state("a:1").inFlight.Load() != 3 {
		t.Fatal("a renewal lost the state of an instance")
	}
	tb.remove("p", "c:1", time.Time{})
	r, _ = tb.get("p")
	if states := r.states.Load(); states == nil || (*states)["c:1"] != nil || (*states)["a:1"] != a {
		t.Fatalf("after a removal the states are %v; want a:1's kept and c:1's gone", states)
	}
	if r.state("c:1") == c {
		t.Fatal("a removed instance kept its state")
	}
}

// TestPickerPrefersTheLessBusy: of two instances, the one with fewer
// messages in flight gets the message; an ejected one gets none while
// another is left; every live instance is tried once at most.
func TestPickerPrefersTheLessBusy(t *testing.T) {
	var tb routeTable
	now := time.Now()
	tb.merge("p", member{"busy:1", now.Add(time.Hour)}, member{"idle:1", now.Add(time.Hour)})
	r, _ := tb.get("p")
	r.state("busy:1").inFlight.Add(5)
	for range 50 {
		p := picker{r: r, expiry: now.UnixNano(), now: now.UnixNano()}
		if i, _, _ := p.next(); r.instances[i].addr != "idle:1" {
			t.Fatalf("picked %s with 5 in flight over an idle instance", r.instances[i].addr)
		}
	}
	r.state("busy:1").inFlight.Add(-5)
	r.state("idle:1").ejectedUntil.Store(now.Add(time.Minute).UnixNano())
	p := picker{r: r, expiry: now.UnixNano(), now: now.UnixNano()}
	first, _, _ := p.next()
	second, _, ok := p.next()
	if r.instances[first].addr != "busy:1" || !ok || r.instances[second].addr != "idle:1" {
		t.Fatalf("picked %v then %v; want the instance not ejected first, the ejected one last", r.instances[first].addr, r.instances[second].addr)
	}
	if _, _, ok := p.next(); ok || p.more() {
		t.Fatal("an instance was offered twice")
	}
}

// TestOutlierEjection: failures in a row eject an instance for a time that
// grows with each ejection; never the last instance of a pattern.
func TestOutlierEjection(t *testing.T) {
	var tb routeTable
	now := time.Now()
	tb.merge("p", member{"a:1", now.Add(time.Hour)}, member{"b:1", now.Add(time.Hour)})
	r, _ := tb.get("p")
	d := outlierDetector{opts: Outliers{MaxFailures: 3, EjectionTime: time.Second}.withDefaults(), log: slog.New(slog.DiscardHandler)}
	a, b := r.state("a:1"), r.state("b:1")
	t0 := now.UnixNano()
	for range 2 {
		d.failed(r, "a:1", a, t0, false, nil)
	}
	if a.ejected(t0) {
		t.Fatal("ejected after 2 failures of 3")
	}
	d.failed(r, "a:1", a, t0, false, nil)
	if !a.ejected(t0) || a.ejected(t0+int64(time.Second)) {
		t.Fatal("not ejected for one second after 3 failures")
	}
	d.failed(r, "b:1", b, t0, true, nil) // refused: at once, but a:1 is out already
	if b.ejected(t0) {
		t.Fatal("the last instance of the pattern was ejected")
	}
	t1 := t0 + int64(2*time.Second) // a:1 is back, and fails again
	for range 3 {
		d.failed(r, "a:1", a, t1, false, nil)
	}
	if !a.ejected(t1+int64(1500*time.Millisecond)) || a.ejected(t1+int64(2*time.Second)) {
		t.Fatal("a second ejection does not last twice as long")
	}
	if n := d.ejections.Load(); n != 2 {
		t.Fatalf("%d ejections counted; want 2", n)
	}
}

// TestRouteTableTombstone: a copy of the registry read before a removal
// does not bring the instance back; a registration made after it does.
func TestRouteTableTombstone(t *testing.T) {
	var tb routeTable
	now := time.Now()
	tb.merge("p", member{"a:1", now.Add(time.Minute)})
	tb.remove("p", "a:1", now.Add(time.Minute))
	tb.merge("p", member{"a:1", now.Add(time.Minute)}) // stale resync
	if _, ok := tb.get("p"); ok {
		t.Fatal("a stale copy brought a removed instance back")
	}
	tb.merge("p", member{"a:1", now.Add(time.Minute + time.Second)}) // registered again
	if r, ok := tb.get("p"); !ok || len(r.instances) != 1 {
		t.Fatal("a new registration was refused")
	}
	tb.sweep(now.Add(2 * time.Minute).UnixNano())
	if len(tb.gone) != 0 {
		t.Fatal("the sweep kept an ended tombstone")
	}
}

// TestRouteTableChangeAfterRemoval: a registration read from the changes
// comes after the removals before it, whatever its expiry says (another
// clock set it): it lifts the tombstone.
func TestRouteTableChangeAfterRemoval(t *testing.T) {
	var tb routeTable
	now := time.Now()
	tb.merge("p", member{"a:1", now.Add(time.Second)})
	tb.remove("p", "a:1", now.Add(time.Minute)) // removed, tombstone a minute ahead
	if tb.merge("p", member{"a:1", now.Add(2 * time.Second)}) {
		t.Fatal("a copy older than the tombstone came back")
	}
	if !tb.mergeAfterRemoval("p", member{"a:1", now.Add(2 * time.Second)}) {
		t.Fatal("a registration read after the removal did not come back")
	}
}

// TestRouteTableReconcileConfirms: reconcile drops only the instances the
// confirmation says are still absent.
func TestRouteTableReconcileConfirms(t *testing.T) {
	var tb routeTable
	exp := time.Now().Add(time.Minute)
	tb.merge("p", member{"a:1", exp}, member{"a:2", exp})
	tb.merge("q", member{"b:1", exp})
	all := map[string][]member{"p": {{"a:1", exp}}} // read before a:2 and b:1 came
	var asked map[string][]string
	_, removed := tb.reconcile(all, func(absent map[string][]string) map[string][]string {
		asked = absent
		return map[string][]string{"q": {"b:1"}} // a:2 is in the registry now
	})
	if len(asked["p"]) != 1 || asked["p"][0] != "a:2" || len(asked["q"]) != 1 {
		t.Errorf("asked to confirm %v; want a:2 of p and b:1 of q", asked)
	}
	if rt, ok := tb.get("p"); !ok || !rt.has("a:1") || !rt.has("a:2") {
		t.Errorf("p lost an instance the confirmation kept")
	}
	if _, ok := tb.get("q"); ok || len(removed["q"]) != 1 {
		t.Errorf("q was not dropped: removed %v", removed)
	}
}
