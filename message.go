package nano

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// messageFields are the fields of a message that nano reads itself; the
// rest of the message is the handler's business.
type messageFields struct {
	Pattern        string // when HasPattern
	HasPattern     bool   // the message has a Pattern that is not null
	ServiceRequest bool
}

// jsonMessage is messageFields as encoding/json reads it.
type jsonMessage struct {
	Pattern        *string
	ServiceRequest bool
}

// readMessage decodes the fields of the JSON message body that nano reads,
// with the result json.Unmarshal gives into messageFields: field names
// match case-insensitively, a later duplicate wins, a null leaves a field
// unset. Every server and service reads every message this way, so the
// usual message (an object whose names and Pattern are plain text) is
// read by a scan over the validated bytes that allocates only the
// Pattern; anything else takes json.Unmarshal, which also words the
// errors.
func readMessage(body []byte) (messageFields, error) {
	if f, ok := scanMessage(body); ok {
		return f, nil
	}
	var m jsonMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return messageFields{}, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	f := messageFields{HasPattern: m.Pattern != nil, ServiceRequest: m.ServiceRequest}
	if f.HasPattern {
		f.Pattern = *m.Pattern
	}
	return f, nil
}

// scanMessage is readMessage's fast path. It reports false for the
// messages it leaves to json.Unmarshal: invalid JSON, a value other than
// an object, names with escapes or non-ASCII letters (encoding/json folds
// those by Unicode rules), a Pattern with escapes or invalid UTF-8, and
// fields of the wrong type.
func scanMessage(b []byte) (messageFields, bool) {
	var f messageFields
	if !json.Valid(b) {
		return f, false
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return f, false
	}
	var pattern []byte
	hasPattern := false
	i = skipSpace(b, i+1)
	for b[i] != '}' {
		end := stringEnd(b, i) // b[i] is the opening quote of a name
		name := b[i+1 : end-1]
		if !plainText(name) {
			return f, false
		}
		i = skipSpace(b, end)
		i = skipSpace(b, i+1) // past the colon
		vend := valueEnd(b, i)
		v := b[i:vend]
		switch {
		case equalFoldASCII(name, "pattern"):
			switch {
			case v[0] == '"' && bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v):
				pattern, hasPattern = v[1:len(v)-1], true
			case v[0] == 'n':
				pattern, hasPattern = nil, false
			default:
				return f, false
			}
		case equalFoldASCII(name, "servicerequest"):
			switch v[0] {
			case 't':
				f.ServiceRequest = true
			case 'f':
				f.ServiceRequest = false
			case 'n':
			default:
				return f, false
			}
		}
		i = skipSpace(b, vend)
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	if hasPattern {
		f.Pattern, f.HasPattern = string(pattern), true
	}
	return f, true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string that opens at
// b[i], in valid JSON.
func stringEnd(b []byte, i int) int {
	for i++; ; i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// valueEnd returns the index just past the JSON value that starts at b[i],
// in valid JSON.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	default: // a number, true, false or null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// plainText reports whether s is printable ASCII with no backslash: text
// that a JSON string holds as it is.
func plainText(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// equalFoldASCII reports whether s equals the lower-case ASCII word lower,
// ignoring case.
func equalFoldASCII(s []byte, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
