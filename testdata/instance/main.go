// Command instance is a service instance for the fault tests: it serves
// NANO_PATTERN, answering {"ID": NANO_ID}, registers at the nano server
// NANO_SERVER and prints "listening <host:port>" once it serves.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	nano "github.com/domWinter/go-nano"
)

func main() {
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{
		Addr:   "127.0.0.1:0",
		Server: os.Getenv("NANO_SERVER"),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	answer, _ := json.Marshal(map[string]string{"ID": os.Getenv("NANO_ID")})
	if err := svc.Handle(os.Getenv("NANO_PATTERN"), func([]byte) ([]byte, error) { return answer, nil }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening", l.Addr())
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		<-stop
		svc.Shutdown(context.Background())
	}()
	svc.Serve(l)
}
