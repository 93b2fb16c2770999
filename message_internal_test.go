package nano

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
)

// messageCases are messages readMessage must read as json.Unmarshal does;
// they seed FuzzReadMessage too.
var messageCases = []string{
	`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`,
	` { "pattern" : "a:b" , "SERVICEREQUEST" : true } `,
	`{"Pattern":"a","Pattern":"b"}`,
	`{"Pattern":"a","Pattern":null}`,
	`{"Pattern":"a","ServiceRequest":true,"ServiceRequest":null}`,
	`{"Pattern":"a","ServiceRequest":true,"servicerequest":false}`,
	`{"Nested":{"Pattern":"inner","x":[1,{"y":"}"}]},"Pattern":"outer"}`,
	`{"Pattern":"caf\u00e9"}`,
	`{"Pattern":"café"}`,
	"{\"Pattern\":\"a\xffb\"}",
	`{"Patt\u0065rn":"escaped name"}`,
	"{\"\u017fervicerequest\":true,\"Pattern\":\"a\"}", // long s folds to s
	`{"Pattern":1}`,
	`{"Pattern":["a"]}`,
	`{"ServiceRequest":"true","Pattern":"a"}`,
	`{"ServiceRequest":1}`,
	`{"Pattern":"a"`,
	`{"Pattern":"a"}{}`,
	`{}`,
	`null`,
	`[]`,
	`"Pattern"`,
	`12`,
	``,
	`{"Pattern":"a\"b"}`,
	`{"a":"\\","Pattern":"x"}`,
	`{"a":-1.5e+3,"b":true,"c":false,"d":null,"Pattern":"p"}`,
}

// sameAsUnmarshal fails t unless readMessage reads body as json.Unmarshal
// does.
func sameAsUnmarshal(t *testing.T, body []byte) {
	t.Helper()
	var want jsonMessage
	wantErr := json.Unmarshal(body, &want)
	got, err := readMessage(body)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, json.Unmarshal says %v", body, err, wantErr)
	}
	if err != nil {
		if !errors.Is(err, ErrInvalidMessage) {
			t.Fatalf("%q: error %v does not wrap ErrInvalidMessage", body, err)
		}
		return
	}
	if got.HasPattern != (want.Pattern != nil) || got.HasPattern && got.Pattern != *want.Pattern ||
		got.ServiceRequest != want.ServiceRequest {
		t.Fatalf("%q: read %s, json.Unmarshal reads %s", body, show(got), show(want))
	}
}

func show(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestReadMessageAgreesWithUnmarshal(t *testing.T) {
	for _, m := range messageCases {
		sameAsUnmarshal(t, []byte(m))
	}
}

// TestReadMessageTakesTheFastPath checks that the usual messages do not
// fall back to json.Unmarshal, and that the fast path allocates only the
// Pattern.
func TestReadMessageTakesTheFastPath(t *testing.T) {
	for _, m := range []string{messageCases[0], messageCases[1], messageCases[6], messageCases[8]} {
		if _, ok := scanMessage([]byte(m)); !ok {
			t.Errorf("%s falls back to json.Unmarshal", m)
		}
	}
	body := []byte(messageCases[0])
	if n := testing.AllocsPerRun(100, func() { readMessage(body) }); n > 1 {
		t.Errorf("readMessage allocates %v times per message", n)
	}
}

func FuzzReadMessage(f *testing.F) {
	for _, m := range messageCases {
		f.Add([]byte(m))
	}
	f.Fuzz(sameAsUnmarshal)
}

func BenchmarkReadMessage(b *testing.B) {
	body := []byte(messageCases[0])
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			readMessage(body)
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var f messageFields
			json.Unmarshal(body, &f)
		}
	})
}

// FuzzDecodeAnswer feeds Act's answer decoding with any status, header
// and body: it never panics, fails every non-2xx answer with an error that
// maps back to a status, and reads a 2xx answer as the original's Act did:
// the payload of a JSON envelope that names a service, else the body as it
// came; with the Nano-Service field, always the body.
func FuzzDecodeAnswer(f *testing.F) {
	f.Add(200, false, false, []byte(`{"Service":{"Pattern":"a","ServiceAddress":"127.0.0.1:1"},"Payload":"eyJSZXN1bHQiOjF9"}`))
	f.Add(200, true, false, []byte(`{"Result":1}`))
	f.Add(404, false, true, []byte(`{"error":"nano: no service matches"}`))
	f.Add(500, false, false, []byte(``))
	f.Add(200, false, false, []byte(`{"Service":null,"Payload":"!!"}`))
	f.Add(302, false, false, []byte(`<html>moved</html>`))
	f.Add(-1, false, false, []byte(`{"error":""}`))
	f.Fuzz(func(t *testing.T, status int, inHeader, noHandler bool, data []byte) {
		h := http.Header{}
		if inHeader {
			h.Set(serviceHeader, "role:x")
		}
		if noHandler {
			h.Set(errorHeader, noHandlerError)
		}
		env, err := decodeAnswer(status, h, data)
		ok := status >= 200 && status <= 299
		switch {
		case !ok && err == nil:
			t.Fatalf("status %d accepted", status)
		case err != nil:
			if s := statusOf(err); s < 400 || s > 599 {
				t.Fatalf("error %v maps to status %d", err, s)
			}
		case env.Service == nil && string(env.Payload) != string(data):
			t.Fatalf("payload %q, body %q", env.Payload, data)
		case env.Service != nil && (inHeader || env.Service.Pattern == "" || !json.Valid(data)):
			t.Fatalf("%q read as an envelope naming %+v (Nano-Service field: %v)", data, *env.Service, inHeader)
		}
	})
}
