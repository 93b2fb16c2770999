package nano

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on the size of a pattern. A longer pattern is rejected with
// ErrInvalidPattern.
const (
	// MaxPatternBytes is the largest pattern accepted, in bytes.
	MaxPatternBytes = 1024
	// MaxPatternFields is the largest number of fields a pattern may have.
	MaxPatternFields = 64
)

// parsePattern validates a pattern and returns its canonical form: its
// fields with surrounding whitespace removed, joined by commas. A field may
// hold any printable UTF-8 text but a comma. When p is already canonical,
// parsePattern returns it without allocating.
func parsePattern(p string) (string, error) {
	if len(p) > MaxPatternBytes {
		return "", fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidPattern, len(p), MaxPatternBytes)
	}
	if strings.TrimSpace(p) == "" {
		return "", fmt.Errorf("%w: empty pattern", ErrInvalidPattern)
	}
	if !utf8.ValidString(p) {
		return "", fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidPattern, p)
	}
	canonical := true
	fields := 0
	for rest := p; ; {
		field, tail, more := strings.Cut(rest, ",")
		fields++
		if fields > MaxPatternFields {
			return "", fmt.Errorf("%w: more than %d fields", ErrInvalidPattern, MaxPatternFields)
		}
		trimmed := strings.TrimSpace(field)
		if trimmed == "" {
			return "", fmt.Errorf("%w: %q has an empty field (field %d)", ErrInvalidPattern, p, fields)
		}
		if hasControl(trimmed) {
			return "", fmt.Errorf("%w: %q has a control character", ErrInvalidPattern, p)
		}
		canonical = canonical && len(trimmed) == len(field)
		if !more {
			break
		}
		rest = tail
	}
	if canonical {
		return p, nil
	}
	return canonicalize(p), nil
}

// canonicalize trims every field of a valid pattern.
func canonicalize(p string) string {
	fields := strings.Split(p, ",")
	for i, f := range fields {
		fields[i] = strings.TrimSpace(f)
	}
	return strings.Join(fields, ",")
}

// hasControl reports whether s holds an ASCII control character.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// prefixes returns the whole-field prefixes of a canonical pattern, longest
// first: "a:1,b:2" gives ["a:1,b:2", "a:1"].
func prefixes(p string) []string {
	out := []string{p}
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == ',' {
			out = append(out, p[:i])
		}
	}
	return out
}
