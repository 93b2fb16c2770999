// Command positive serves "role:math,cmd:positive" on port 3334 for the
// local example: it answers whether Value is greater than zero.
package main

import (
	"encoding/json"

	nano "github.com/domWinter/go-nano"
)

type positiveRequest struct {
	Pattern string
	Value   int
}

type positiveAnswer struct {
	Result bool
}

func main() {
	svc := nano.NewService("127.0.0.1", 3334, "127.0.0.1", 9999)
	svc.Add("role:math,cmd:positive", func(body []byte) ([]byte, error) {
		var req positiveRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, &nano.Error{Status: 400, Message: "expected {\"Value\": int}"}
		}
		return json.Marshal(positiveAnswer{req.Value > 0})
	})
}
