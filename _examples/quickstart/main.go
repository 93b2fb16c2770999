// Command quickstart runs a small go-nano system in one process: a nano
// server, two services for three math patterns and a client. It routes a
// few messages through the server and with Act, prints what happened and
// the curl commands to try, then serves until interrupted (Ctrl-C).
//
// Environment:
//
//	NANO_PORT        port of the nano server on 127.0.0.1 (default 9999)
//	NANO_REDIS_ADDR  Redis host:port for the registry (default: in memory)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-redis/redis/v8"

	nano "github.com/domWinter/go-nano"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// The nano server: the registry lives in memory unless NANO_REDIS_ADDR
	// names a Redis.
	opts := nano.ServerOptions{Addr: "127.0.0.1:" + envOr("NANO_PORT", "9999"), Logger: logger}
	registry := "in memory"
	if addr := os.Getenv("NANO_REDIS_ADDR"); addr != "" {
		opts.Redis = &redis.UniversalOptions{Addrs: []string{addr}}
		registry = "in Redis at " + addr
	}
	server, err := nano.NewServerWithOptions(opts)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return fmt.Errorf("%w (set NANO_PORT to use another port)", err)
	}
	go server.Serve(l)
	serverAddr := l.Addr().String()
	fmt.Printf("nano server on %s, registry %s\n", serverAddr, registry)

	client, err := nano.NewClient(nano.ClientOptions{Server: serverAddr, Logger: logger})
	if err != nil {
		return err
	}
	defer client.Close()

	// Two services on ports of their own: one handles the more specific
	// "return:zero" sum, the other the sum and positive patterns. Services
	// register in the background; the specific one starts first so that
	// nothing else can answer while we wait for it.
	zero, err := startService(serverAddr, logger, map[string]nano.HandlerFunc{
		"role:math,cmd:sum,return:zero": func([]byte) ([]byte, error) { return []byte(`{"Result":0}`), nil },
	})
	if err != nil {
		return err
	}
	if err := waitRegistered(ctx, client, "role:math,cmd:sum,return:zero"); err != nil {
		return err
	}
	math, err := startService(serverAddr, logger, map[string]nano.HandlerFunc{
		"role:math,cmd:sum":      sum,
		"role:math,cmd:positive": positive,
	})
	if err != nil {
		return err
	}
	if err := waitRegistered(ctx, client, "role:math,cmd:sum", "role:math,cmd:positive"); err != nil {
		return err
	}

	messages := []string{
		`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`,
		`{"Pattern":"role:math,cmd:sum,return:zero","Left":1,"Right":2}`,
		`{"Pattern":"role:math,cmd:positive","Value":-1}`,
		`{"Pattern":"role:math,cmd:summary","Left":1,"Right":2}`,
	}
	fmt.Println("\nThrough the server (POST http://" + serverAddr + "/):")
	for _, msg := range messages {
		fmt.Printf("  %s\n    -> %s\n", msg, postMessage(ctx, serverAddr, msg))
	}

	fmt.Println("\nWith Act (the client asks the server once where the pattern is served, then calls the service directly):")
	for i := 1; i <= 3; i++ {
		msg := fmt.Sprintf(`{"Pattern":"role:math,cmd:sum","Left":%d,"Right":%d}`, i, i*10)
		answer, err := client.ActContext(ctx, []byte(msg), "role:math,cmd:sum")
		if err != nil {
			return err
		}
		fmt.Printf("  Act %s\n    -> %s\n", msg, answer)
	}

	fmt.Printf(`
Try it yourself:
  curl -X POST http://%[1]s/ -H 'Content-Type: application/json' -d '{"Pattern":"role:math,cmd:positive","Value":1}'
  curl -X POST http://%[1]s/ -H 'Content-Type: application/json' -d '{"Pattern":"role:math,cmd:sum","Left":40,"Right":2}'
  curl -X POST http://%[1]s/ -H 'Content-Type: application/json' -d '{"Pattern":"role:math,cmd:sum,return:zero"}'

Serving until Ctrl-C.
`, serverAddr)

	<-ctx.Done()
	fmt.Println("\nShutting down.")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(math.Shutdown(shutdownCtx), zero.Shutdown(shutdownCtx), server.Shutdown(shutdownCtx))
}

// startService serves handlers on a free loopback port, registered at the
// server.
func startService(serverAddr string, logger *slog.Logger, handlers map[string]nano.HandlerFunc) (*nano.Service, error) {
	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{Addr: "127.0.0.1:0", Server: serverAddr, Logger: logger})
	if err != nil {
		return nil, err
	}
	for pattern, h := range handlers {
		if err := svc.Handle(pattern, h); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go svc.Serve(l)
	return svc, nil
}

// waitRegistered waits until the server routes every pattern: services
// register in the background once they serve.
func waitRegistered(ctx context.Context, client *nano.Client, patterns ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, p := range patterns {
		msg, _ := json.Marshal(map[string]any{"Pattern": p})
		for {
			_, err := client.ActContext(ctx, msg, p)
			if !errors.Is(err, nano.ErrNoService) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("pattern %q was not registered in time", p)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// postMessage sends a message to the server as curl would and describes
// the answer.
func postMessage(ctx context.Context, serverAddr, msg string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+serverAddr+"/", strings.NewReader(msg))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "*/*") // as curl does: errors come as JSON
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

type sumMessage struct {
	Left, Right int
}

func sum(body []byte) ([]byte, error) {
	var m sumMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, &nano.Error{Status: http.StatusBadRequest, Message: `expected {"Left": int, "Right": int}`}
	}
	return json.Marshal(map[string]int{"Result": m.Left + m.Right})
}

type valueMessage struct {
	Value int
}

func positive(body []byte) ([]byte, error) {
	var m valueMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, &nano.Error{Status: http.StatusBadRequest, Message: `expected {"Value": int}`}
	}
	return json.Marshal(map[string]bool{"Result": m.Value > 0})
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
