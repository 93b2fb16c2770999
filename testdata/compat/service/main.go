package main

import (
	"encoding/json"

	"github.com/domWinter/go-nano"
)

type answer struct {
	Result bool
}

type request struct {
	Pattern string `json:"Pattern"`
	Value   int    `json:"Value"`
}

func main() {
	s := nano.NewService("127.0.0.1", 8080, "127.0.0.1", 9999)
	s.Add("role:math,cmd:positive", func(body []byte) ([]byte, error) {
		var in request
		json.Unmarshal(body, &in)
		out, _ := json.Marshal(answer{in.Value > 0})
		return out, nil
	})
}
