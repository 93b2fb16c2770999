package nano

// What the external tests (package nano_test) use of the package's
// internals.

// EscapeGlob escapes what Redis's KEYS and SCAN MATCH take for wildcards.
var EscapeGlob = escapeGlob
