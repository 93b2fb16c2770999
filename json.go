package nano

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Typed handlers and calls: the message decoded into a Go value, the
// answer encoded from one, so that handlers and callers need not repeat
// json.Unmarshal and json.Marshal.

// HandleJSON sets the handler of pattern on svc, as HandleContext does,
// with a function of Go values: the message is decoded into an In, and the
// Out fn returns is the answer, encoded as JSON. The message's own fields
// (Pattern, ServiceRequest) need not be fields of In; fields of the
// message that In does not have are ignored. A message that does not
// decode into In is answered with 400 and an error naming the field, and
// fn does not run. An error fn returns is answered as a Handler's is.
func HandleJSON[In, Out any](svc *Service, pattern string, fn func(ctx context.Context, in In) (Out, error)) error {
	if fn == nil {
		return fmt.Errorf("%w: nil handler for %q", ErrInvalidOptions, pattern)
	}
	return svc.HandleContext(pattern, func(ctx context.Context, req *Request) ([]byte, error) {
		var in In
		if err := json.Unmarshal(req.Body, &in); err != nil {
			return nil, &libraryError{&Error{Status: http.StatusBadRequest, Message: "nano: invalid message: " + decodeError("message", err), Err: ErrInvalidMessage}}
		}
		out, err := fn(ctx, in)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	})
}

// Caller calls services by pattern: a *Client, or a *Service, whose Act
// goes through its server and peer cache.
type Caller interface {
	ActContext(ctx context.Context, msg []byte, pattern string) ([]byte, error)
}

// ActJSON sends in, encoded as a JSON object, to a service handling
// pattern through c, and decodes the handler's answer into an Out. When in
// encodes without a Pattern field, the message gets "Pattern": pattern.
// An answer that does not decode into an Out gives an error that names
// the field and unwraps to the *json.UnmarshalTypeError or
// *json.SyntaxError; the other errors are ActContext's.
func ActJSON[Out any](ctx context.Context, c Caller, pattern string, in any) (Out, error) {
	var out Out
	msg, err := json.Marshal(in)
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	if msg, err = withPattern(msg, pattern); err != nil {
		return out, err
	}
	answer, err := c.ActContext(ctx, msg, pattern)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(answer, &out); err != nil {
		return out, fmt.Errorf("nano: %s: %w", decodeError("answer of "+strconv.Quote(pattern), err), err)
	}
	return out, nil
}

// withPattern returns the JSON object msg with "Pattern": pattern first,
// unless msg has a Pattern already.
func withPattern(msg []byte, pattern string) ([]byte, error) {
	if len(msg) < 2 || msg[0] != '{' {
		return nil, fmt.Errorf("%w: a message must encode as a JSON object", ErrInvalidMessage)
	}
	if m, err := readMessage(msg); err != nil || m.HasPattern {
		return msg, err
	}
	field, _ := json.Marshal(pattern)
	out := make([]byte, 0, len(msg)+len(field)+12)
	out = append(out, `{"Pattern":`...)
	out = append(out, field...)
	if len(msg) > 2 {
		out = append(out, ',')
	}
	return append(out, msg[1:]...), nil
}

// decodeError says why what (the message, the answer) did not decode, and
// which field was wrong.
func decodeError(what string, err error) string {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := te.Field
		if field == "" {
			return fmt.Sprintf("the %s is a JSON %s, not a %s", what, te.Value, te.Type)
		}
		return fmt.Sprintf("field %s of the %s: a JSON %s, not a %s", field, what, te.Value, te.Type)
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("the %s is not JSON (at byte %d)", what, se.Offset)
	}
	return fmt.Sprintf("the %s does not decode: %v", what, err)
}
