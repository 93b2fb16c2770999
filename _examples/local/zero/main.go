// Command zero serves the more specific pattern
// "role:math,cmd:sum,return:zero" on port 3335 for the local example: the
// server routes messages with that pattern here rather than to the sum
// service, whose pattern is a shorter prefix of it.
package main

import (
	"encoding/json"

	nano "github.com/domWinter/go-nano"
)

type sumAnswer struct {
	Result int
}

func main() {
	svc := nano.NewService("127.0.0.1", 3335, "127.0.0.1", 9999)
	svc.Add("role:math,cmd:sum,return:zero", func([]byte) ([]byte, error) {
		return json.Marshal(sumAnswer{0})
	})
}
