package nano

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"role:math,cmd:sum", "role:math,cmd:sum", true},
		{"a:1,b:2,c:3", "a:1,b:2,c:3", true},
		{"single", "single", true},
		{" role:math , cmd:sum ", "role:math,cmd:sum", true},
		{"\trole:math,\ncmd:sum", "role:math,cmd:sum", true},
		{"role: math", "role: math", true},
		{"rôle:maths", "rôle:maths", true},
		{"", "", false},
		{"   ", "", false},
		{",", "", false},
		{"role:math,", "", false},
		{",role:math", "", false},
		{"role:math,,cmd:sum", "", false},
		{"role:math, ,cmd:sum", "", false},
		{"role:\x00math", "", false},
		{"role:\x7fmath", "", false},
		{"role:\xffmath", "", false},
		{strings.Repeat("a", MaxPatternBytes), strings.Repeat("a", MaxPatternBytes), true},
		{strings.Repeat("a", MaxPatternBytes+1), "", false},
		{strings.Repeat("f,", MaxPatternFields-1) + "f", strings.Repeat("f,", MaxPatternFields-1) + "f", true},
		{strings.Repeat("f,", MaxPatternFields) + "f", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parsePattern(tt.in)
			if !tt.ok {
				if !errors.Is(err, ErrInvalidPattern) {
					t.Fatalf("parsePattern(%q) = %q, %v; want ErrInvalidPattern", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parsePattern(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParsePatternErrorsSayWhy(t *testing.T) {
	for in, want := range map[string]string{
		"a,,b":                                 "empty field (field 2)",
		strings.Repeat("x", MaxPatternBytes+1): "the limit is 1024",
		strings.Repeat("x,", MaxPatternFields) + "x": "more than 64 fields",
		"": "empty pattern",
	} {
		_, err := parsePattern(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parsePattern(%.20q...) error = %v; want it to mention %q", in, err, want)
		}
	}
}

func TestParsePatternCanonicalDoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := parsePattern("role:math,cmd:sum,return:zero"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("parsePattern of a canonical pattern allocates %v times", allocs)
	}
}

func TestPrefixes(t *testing.T) {
	got := prefixes("a:1,b:2,c:3")
	want := []string{"a:1,b:2,c:3", "a:1,b:2", "a:1"}
	if !slices.Equal(got, want) {
		t.Fatalf("prefixes = %q; want %q", got, want)
	}
}

// FuzzParsePattern checks that parsing never panics, that what it accepts
// is canonical, bounded and stable, that every whole-field prefix of an
// accepted pattern matches it in a mirror, and that a pattern never matches
// one whose last field merely starts like its own.
func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"role:math,cmd:sum", " a , b ", "a,,b", "", "\xff", "x\x00y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := parsePattern(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidPattern) {
				t.Fatalf("error %v does not wrap ErrInvalidPattern", err)
			}
			return
		}
		if len(p) > MaxPatternBytes || strings.Count(p, ",") >= MaxPatternFields || !utf8.ValidString(p) {
			t.Fatalf("accepted %q out of bounds", p)
		}
		again, err := parsePattern(p)
		if err != nil || again != p {
			t.Fatalf("canonical form %q reparses as %q, %v", p, again, err)
		}
		for _, field := range strings.Split(p, ",") {
			if field == "" || strings.TrimSpace(field) != field {
				t.Fatalf("%q has a field that is empty or untrimmed: %q", p, field)
			}
		}
		for _, pre := range prefixes(p) {
			var m mirror[int]
			m.insert(pre, 1)
			if got, _, ok := m.lookup(p); !ok || got != pre {
				t.Fatalf("mirror of %q: lookup(%q) = %q, %v", pre, p, got, ok)
			}
			if longer, err := parsePattern(p + "x"); err == nil {
				if got, _, ok := m.lookup(longer); ok && got == p {
					t.Fatalf("%q matched %q inside a field", p, longer)
				}
			}
		}
	})
}

func BenchmarkParsePattern(b *testing.B) {
	for _, in := range []string{"role:math,cmd:sum", " role:math , cmd:sum , return:zero ", strings.Repeat("field:value,", 15) + "last:one"} {
		b.Run(fmt.Sprintf("%dB", len(in)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parsePattern(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
