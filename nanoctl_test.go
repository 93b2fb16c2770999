package nano_test

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	nano "github.com/domWinter/go-nano"
)

// TestNanoctl runs the nanoctl command against a real server with a
// token and a service, as a user at a terminal would.
func TestNanoctl(t *testing.T) {
	t.Parallel()
	bin := buildProgram(t, ".", "./cmd/nanoctl")
	_, addr := startServer(t, nano.ServerOptions{Token: "s3cret"})
	startService(t, addr, map[string]nano.HandlerFunc{"role:math,cmd:sum": sum}, func(o *nano.ServiceOptions) { o.Token = "s3cret" })
	waitRegistered(t, addr, "role:math,cmd:sum")

	nanoctl := func(env []string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(environWithout("NANO_"), env...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &exit):
			return string(out), exit.ExitCode()
		}
		t.Fatalf("nanoctl %q: %v", args, err)
		return "", 0
	}
	env := []string{"NANO_SERVER_ADDRESS=" + addr, "NANO_TOKEN=s3cret"}
	for _, c := range []struct {
		env    []string
		args   []string
		status int
		want   []string
	}{
		{env, []string{"ls"}, 0, []string{"PATTERN", "INSTANCE", "EXPIRES", "STATE", "role:math,cmd:sum", "ready"}},
		{env, []string{"call", "role:math,cmd:sum", `{"Left":2,"Right":3}`}, 0, []string{"200 OK in ", `{"Result":5}`}},
		{env, []string{"call", "role:nothing"}, 1, []string{"404 Not Found", `"error"`}},
		{env, []string{"resolve", "role:math,cmd:sum,extra:1"}, 0, []string{"role:math,cmd:sum", "127.0.0.1:"}},
		{env, []string{"resolve", "role:nothing"}, 1, []string{"404"}},
		{env, []string{"health"}, 0, []string{"/healthz", "/readyz", "200", "ready"}},
		{[]string{"NANO_TOKEN=s3cret"}, []string{"-server", addr, "ls"}, 0, []string{"role:math,cmd:sum"}},
		{[]string{"NANO_SERVER_ADDRESS=" + addr}, []string{"ls"}, 1, []string{"401"}}, // no token
		{env, []string{"call", "role:math,cmd:sum", "not json"}, 2, []string{"not a JSON object"}},
		{env, []string{"frobnicate"}, 2, []string{"usage"}},
		{[]string{"NANO_SERVER_ADDRESS=" + deadAddr(t)}, []string{"health"}, 1, []string{"nanoctl:"}},
	} {
		out, status := nanoctl(c.env, c.args...)
		if status != c.status {
			t.Errorf("nanoctl %q: status %d; want %d\n%s", c.args, status, c.status, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("nanoctl %q: output lacks %q:\n%s", c.args, w, out)
			}
		}
	}

	// -json, for scripts.
	out, status := nanoctl(env, "-json", "ls")
	var l struct {
		Patterns []struct {
			Pattern   string
			Instances []struct{ ServiceAddress string }
		}
	}
	if status != 0 || json.Unmarshal([]byte(out), &l) != nil || len(l.Patterns) != 1 || l.Patterns[0].Pattern != "role:math,cmd:sum" {
		t.Errorf("nanoctl -json ls: %d %s", status, out)
	}
	out, status = nanoctl(env, "-json", "call", "role:math,cmd:sum", `{"Left":1,"Right":1}`)
	var call struct {
		Status int
		Answer struct{ Result int }
	}
	if status != 0 || json.Unmarshal([]byte(out), &call) != nil || call.Status != 200 || call.Answer.Result != 2 {
		t.Errorf("nanoctl -json call: %d %s", status, out)
	}
}
