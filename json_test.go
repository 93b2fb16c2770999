package nano_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	nano "github.com/domWinter/go-nano"
)

type sumIn struct{ Left, Right int }

type sumOut struct{ Result int }

// TestHandleJSONAndActJSON: typed handlers decode the message and encode
// the answer; a message that does not decode is refused with 400 naming
// the field, before the function runs, as the library's refusal (not the
// handler's); ActJSON adds the Pattern and decodes the answer.
func TestHandleJSONAndActJSON(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, nano.ServerOptions{})
	var runs atomic.Int32
	svc, _ := startService(t, addr, nil)
	err := nano.HandleJSON(svc, "role:math,cmd:sum", func(_ context.Context, in sumIn) (sumOut, error) {
		runs.Add(1)
		if in.Left < 0 {
			return sumOut{}, &nano.Error{Status: http.StatusUnprocessableEntity, Message: "Left must not be negative"}
		}
		return sumOut{in.Left + in.Right}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, addr, "role:math,cmd:sum")
	client := newClient(t, nano.ClientOptions{Server: addr})
	ctx := context.Background()

	got, err := nano.ActJSON[sumOut](ctx, client, "role:math,cmd:sum", sumIn{Left: 2, Right: 3})
	if err != nil || got.Result != 5 {
		t.Fatalf("ActJSON = %+v, %v; want {Result:5}", got, err)
	}
	if runs.Load() != 1 {
		t.Fatalf("the handler ran %d times", runs.Load())
	}

	status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:sum","Left":"two","Right":3}`)
	if status != http.StatusBadRequest || !strings.Contains(errorBody(t, body), "field Left") {
		t.Fatalf("a message with a string Left: %d %s; want 400 naming the field Left", status, body)
	}
	_, err = client.ActContext(ctx, []byte(`{"Pattern":"role:math,cmd:sum","Left":"two"}`), "role:math,cmd:sum")
	if !errors.Is(err, nano.ErrInvalidMessage) || errors.Is(err, nano.ErrHandler) {
		t.Fatalf("Act with a message that does not decode: %v; want ErrInvalidMessage, not ErrHandler", err)
	}
	if runs.Load() != 1 {
		t.Fatalf("the handler ran for messages that did not decode (%d runs)", runs.Load())
	}

	_, err = nano.ActJSON[sumOut](ctx, client, "role:math,cmd:sum", sumIn{Left: -1})
	if e, ok := errors.AsType[*nano.Error](err); !ok || e.Status != http.StatusUnprocessableEntity || !errors.Is(err, nano.ErrHandler) {
		t.Fatalf("the handler's own 422: %v; want an *Error 422 that unwraps to ErrHandler", err)
	}

	_, err = nano.ActJSON[struct{ Result string }](ctx, client, "role:math,cmd:sum", sumIn{Left: 1})
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); !ok || te.Field != "Result" || !strings.Contains(err.Error(), "field Result") {
		t.Fatalf("an answer that does not decode: %v; want an error naming the field Result", err)
	}

	if _, err := nano.ActJSON[sumOut](ctx, client, "role:math,cmd:sum", []int{1}); !errors.Is(err, nano.ErrInvalidMessage) {
		t.Fatalf("a message that is not an object: %v; want ErrInvalidMessage", err)
	}
}
