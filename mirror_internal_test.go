package nano

import (
	"fmt"
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

// TestRouteTableKeepsRoundRobin: renewals and removals replace a route;
// the turn of its instances carries on instead of starting over, or the
// first instance would take the traffic of a busy pattern.
func TestRouteTableKeepsRoundRobin(t *testing.T) {
	var tb routeTable
	later := time.Now().Add(time.Hour)
	tb.merge("p", member{"a:1", later}, member{"b:1", later}, member{"c:1", later}, member{"d:1", later})
	r, _ := tb.get("p")
	r.start()
	r.start() // the next call starts at index 2
	tb.merge("p", member{"a:1", later.Add(time.Minute)})
	r, _ = tb.get("p")
	if got := r.start(); got != 2 {
		t.Fatalf("after a renewal the turn starts at %d; want 2", got)
	}
	tb.remove("p", "d:1", time.Time{})
	r, _ = tb.get("p")
	if got := r.start(); got != 0 { // position 3 of 3 instances wraps to 0
		t.Fatalf("after a removal the turn starts at %d; want 0", got)
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
