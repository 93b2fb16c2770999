// Command server runs a nano server on port 9999 for the local example.
//
// With NANO_REDIS_ADDR set (e.g. 127.0.0.1:6379) it keeps its registry in
// that Redis; otherwise in memory.
package main

import (
	"os"

	nano "github.com/domWinter/go-nano"
)

func main() {
	server := nano.NewServer(os.Getenv("NANO_REDIS_ADDR"), os.Getenv("NANO_REDIS_PASSWORD"), 0, 9999)
	server.Listen()
}
