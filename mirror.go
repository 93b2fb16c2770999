package nano

import (
	"strings"
	"sync"

	"github.com/armon/go-radix"
)

// mirror maps canonical patterns to values and answers longest whole-field
// prefix lookups. Servers mirror the registry in one; clients keep their
// resolved peers in one; services find their handlers in one.
//
// go-radix matches bytes, not fields, and is not safe for concurrent use:
// mirror adds the field boundary and a lock. A zero mirror is empty and
// ready to use; it is safe for concurrent use.
type mirror[V any] struct {
	mu   sync.RWMutex // guards tree
	tree *radix.Tree  // canonical pattern -> V; nil until the first insert
}

// lookup returns the longest registered pattern that is a whole-field
// prefix of the canonical pattern req, and its value. It does not allocate.
func (m *mirror[V]) lookup(req string) (pattern string, v V, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.tree == nil {
		return "", v, false
	}
	for s := req; ; {
		k, val, found := m.tree.LongestPrefix(s)
		if !found {
			return "", v, false
		}
		if len(k) == len(req) || req[len(k)] == ',' {
			return k, val.(V), true
		}
		// k ends inside a field ("cmd:sum" of "cmd:summary"): only a key
		// ending at an earlier field boundary can still match.
		j := strings.LastIndexByte(req[:len(k)], ',')
		if j < 0 {
			return "", v, false
		}
		s = req[:j]
	}
}

// get returns the value stored for exactly this canonical pattern.
func (m *mirror[V]) get(pattern string) (v V, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.tree == nil {
		return v, false
	}
	val, found := m.tree.Get(pattern)
	if !found {
		return v, false
	}
	return val.(V), true
}

// insert stores v for a canonical pattern, replacing any previous value.
func (m *mirror[V]) insert(pattern string, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tree == nil {
		m.tree = radix.New()
	}
	m.tree.Insert(pattern, v)
}

// update runs fn with the mirror locked for writing, so that many changes
// take the lock once. fn must not call back into the mirror but through
// the get and insert it is given.
func (m *mirror[V]) update(fn func(get func(string) (V, bool), insert func(string, V))) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tree == nil {
		m.tree = radix.New()
	}
	get := func(p string) (v V, ok bool) {
		val, found := m.tree.Get(p)
		if !found {
			return v, false
		}
		return val.(V), true
	}
	fn(get, func(p string, v V) { m.tree.Insert(p, v) })
}

// deleteIf removes the value of a pattern if keep returns false for it. It
// reports whether it removed one. keep runs under the lock: it must be quick
// and must not call back into the mirror.
func (m *mirror[V]) deleteIf(pattern string, keep func(V) bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tree == nil {
		return false
	}
	val, found := m.tree.Get(pattern)
	if !found || keep(val.(V)) {
		return false
	}
	m.tree.Delete(pattern)
	return true
}

// len returns the number of patterns stored.
func (m *mirror[V]) len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.tree == nil {
		return 0
	}
	return m.tree.Len()
}

// each calls fn for every stored pattern in lexical order. It copies the
// entries first, so fn may call back into the mirror.
func (m *mirror[V]) each(fn func(pattern string, v V)) {
	type entry struct {
		pattern string
		v       V
	}
	var entries []entry
	m.mu.RLock()
	if m.tree != nil {
		entries = make([]entry, 0, m.tree.Len())
		m.tree.Walk(func(k string, val any) bool {
			entries = append(entries, entry{k, val.(V)})
			return false
		})
	}
	m.mu.RUnlock()
	for _, e := range entries {
		fn(e.pattern, e.v)
	}
}
