// Command sum serves "role:math,cmd:sum" on port 3333 for the local
// example. Before answering, it asks the positive service with Act whether
// Left is positive, to show one service calling another.
package main

import (
	"encoding/json"
	"log"

	nano "github.com/domWinter/go-nano"
)

type sumRequest struct {
	Pattern     string
	Left, Right int
}

type sumAnswer struct {
	Result int
}

type positiveQuery struct {
	Pattern        string
	ServiceRequest bool
	Value          int
}

func main() {
	svc := nano.NewService("127.0.0.1", 3333, "127.0.0.1", 9999)
	svc.Add("role:math,cmd:sum", func(body []byte) ([]byte, error) {
		var req sumRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, &nano.Error{Status: 400, Message: "expected {\"Left\": int, \"Right\": int}"}
		}

		query, _ := json.Marshal(positiveQuery{"role:math,cmd:positive", true, req.Left})
		answer, err := svc.Act(query, "role:math,cmd:positive")
		if err != nil {
			log.Printf("positive service: %v", err)
		} else {
			log.Printf("is %d positive? %s", req.Left, answer)
		}

		return json.Marshal(sumAnswer{req.Left + req.Right})
	})
}
