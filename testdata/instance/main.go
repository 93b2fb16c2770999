// Command instance is a service instance for the fault tests: it serves
// NANO_PATTERN, answering {"ID": NANO_ID}, registers at the nano server
// NANO_SERVER (host:port, or several separated by commas: the first, then
// the others when it does not answer) and prints "listening <host:port>"
// once it serves.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	nano "github.com/domWinter/go-nano"
)

func main() {
	servers := strings.Split(os.Getenv("NANO_SERVER"), ",")
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{
		Addr:    "127.0.0.1:0",
		Server:  servers[0],
		Servers: servers[1:],
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, nil)),
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
