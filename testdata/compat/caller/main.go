package main

import (
	"encoding/json"
	"fmt"

	"github.com/domWinter/go-nano"
)

type query struct {
	Pattern        string
	ServiceRequest bool
	Value          int
}

func main() {
	s := nano.NewService("127.0.0.1", 8081, "127.0.0.1", 9999)
	s.Add("role:test,cmd:ask", func(body []byte) ([]byte, error) {
		q, _ := json.Marshal(query{"role:math,cmd:positive", true, -1})
		res, _ := s.Act(q, "role:math,cmd:positive")
		var m map[string]interface{}
		json.Unmarshal(res, &m)
		fmt.Println(m["Result"])
		return res, nil
	})
}
