package nano_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests that build and run whole programs: the examples, and programs
// written against the original library's API.

// TestExamplesBuild builds every program under _examples, which ./...
// skips.
func TestExamplesBuild(t *testing.T) {
	t.Parallel()
	dirs, err := filepath.Glob("_examples/*/*.go")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("_examples/*/*/*.go")
	seen := map[string]bool{}
	for _, f := range append(dirs, more...) {
		dir := filepath.Dir(f)
		if seen[dir] {
			continue
		}
		seen[dir] = true
		t.Run(dir, func(t *testing.T) { buildProgram(t, ".", "./"+dir) })
	}
	if len(seen) < 5 {
		t.Fatalf("found %d example programs; want the quickstart and the four local ones", len(seen))
	}
}

// TestQuickstartExample runs the quickstart as a user would and stops it
// with Ctrl-C.
func TestQuickstartExample(t *testing.T) {
	bin := buildProgram(t, ".", "./_examples/quickstart")
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	for _, registry := range []string{"", newRedis(t).Addr} {
		t.Run("redis="+registry, func(t *testing.T) {
			p := startProgram(t, bin, fmt.Sprintf("NANO_PORT=%d", port), "NANO_REDIS_ADDR="+registry)
			p.waitOutput(t, "Serving until Ctrl-C.")
			out := p.out.String()
			for _, want := range []string{
				`-> 200 {"Result":3}`, `-> 200 {"Result":0}`, `-> 200 {"Result":false}`,
				`-> 404 {"error":`, `-> {"Result":33}`, "curl -X POST",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			if status, body := post(t, "http://"+addr+"/", `{"Pattern":"role:math,cmd:positive","Value":1}`); status != 200 || body != `{"Result":true}` {
				t.Errorf("curl: %d %s", status, body)
			}
			if err := p.interrupt(); err != nil {
				t.Fatalf("after Ctrl-C: %v\n%s", err, p.out.String())
			}
		})
	}
}

// TestLoadtestExample runs the load benchmark briefly, in plain HTTP and
// over TLS, and checks that it reports its paths and stops by itself;
// over TLS, that it leaves out the plain proxies, writes the certificates
// a proxy beside it would use, and that no path fails or opens
// connections once warm.
func TestLoadtestExample(t *testing.T) {
	t.Parallel()
	bin := buildProgram(t, ".", "./_examples/loadtest")
	dir := t.TempDir()
	for _, c := range []struct {
		name   string
		args   []string
		want   []string
		absent string
	}{
		{"plain", []string{"-rounds", "2"}, []string{"direct ", "revproxy ", "server ", "act ", "vs direct", "median of 2 rounds", "1.00x"}, ""},
		{"tls", []string{"-tls", dir}, []string{"direct ", "server ", "act ", "       0  0.0/0.0/0.0"}, "revproxy "},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := startProgramArgs(t, bin, append([]string{"-d", "300ms", "-warmup", "100ms", "-c", "4"}, c.args...))
			select {
			case err := <-p.done:
				p.done <- err
				if err != nil {
					t.Fatalf("loadtest %q: %v\n%s", c.args, err, p.out.String())
				}
			case <-time.After(time.Minute):
				t.Fatalf("loadtest %q still running after a minute:\n%s", c.args, p.out.String())
			}
			out := p.out.String()
			for _, want := range c.want {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if c.absent != "" && strings.Contains(out, c.absent) {
				t.Errorf("output holds %q:\n%s", c.absent, out)
			}
		})
	}
	t.Cleanup(func() {
		for _, name := range []string{"ca.crt", "tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Error(err)
			}
		}
	})
}

// TestFleetExample runs the fleet benchmark briefly and checks that it
// reports a line per configuration and stops by itself.
func TestFleetExample(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not found: the fleet benchmark needs the real one")
	}
	bin := buildProgram(t, ".", "./_examples/fleet")
	p := startProgramArgs(t, bin, []string{"-n", "200", "-s", "1,3", "-d", "1s", "-ttl", "3s"})
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("fleet: %v\n%s", err, p.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("fleet still running after a minute:\n%s", p.out.String())
	}
	out := p.out.String()
	for _, want := range []string{"redis", "cmds/s", "reg p99", "     200   1 ", "     200   3 "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestLocalExample runs the server and the three services of
// _examples/local on their fixed ports, when those are free.
func TestLocalExample(t *testing.T) {
	for _, port := range []int{9999, 3333, 3334, 3335} {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Skipf("port %d is taken: %v", port, err)
		}
		l.Close()
	}
	for _, dir := range []string{"server", "positive", "sum", "zero"} {
		startProgram(t, buildProgram(t, ".", "./_examples/local/"+dir))
	}
	waitAnswer(t, "127.0.0.1:9999", `{"Pattern":"role:math,cmd:positive","Value":1}`, `{"Result":true}`)
	waitAnswer(t, "127.0.0.1:9999", `{"Pattern":"role:math,cmd:sum,return:zero","Left":1,"Right":2}`, `{"Result":0}`)
	waitAnswer(t, "127.0.0.1:9999", `{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`, `{"Result":3}`)
}

// TestOriginalAPIPrograms builds the programs of testdata/compat, written
// against the original library's API, unchanged in a module of their own;
// then runs them with free ports and the test Redis in place of the fixed
// ones, and checks the Quick Start's answers: {"Result":true} for a
// positive value, and "false" printed by a handler that calls Act for -1.
func TestOriginalAPIPrograms(t *testing.T) {
	t.Parallel()
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	original := compatModule(t, root, nil)
	for _, prog := range []string{"server", "service", "caller"} {
		buildProgram(t, original, "./"+prog)
	}

	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	run := compatModule(t, root, strings.NewReplacer(
		"127.0.0.1:6379", newRedis(t).Addr,
		"9999", fmt.Sprint(ports[0]),
		"8080", fmt.Sprint(ports[1]),
		"8081", fmt.Sprint(ports[2]),
	))
	server := fmt.Sprintf("127.0.0.1:%d", ports[0])
	startProgram(t, buildProgram(t, run, "./server"))
	startProgram(t, buildProgram(t, run, "./service"))
	caller := startProgram(t, buildProgram(t, run, "./caller"))

	waitAnswer(t, server, `{"Pattern":"role:math,cmd:positive","Value":1}`, `{"Result":true}`)
	waitAnswer(t, server, `{"Pattern":"role:test,cmd:ask"}`, `{"Result":false}`)
	caller.waitOutput(t, "false\n")
}

// compatModule copies testdata/compat into a new module that uses this
// one through a replace directive, rewriting the sources with r if not nil.
func compatModule(t *testing.T, root string, r *strings.Replacer) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(root, "testdata", "compat")
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if r != nil {
			b = []byte(r.Replace(string(b)))
		}
		rel, _ := filepath.Rel(src, path)
		dst := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	gomod := fmt.Sprintf("module compat\n\ngo 1.26\n\nrequire github.com/domWinter/go-nano v0.0.0\n\nreplace github.com/domWinter/go-nano => %s\n", root)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// buildProgram builds the package pkg of the module in dir and returns the
// path of the binary.
func buildProgram(t *testing.T, dir, pkg string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH")
	}
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command(goTool, "build", "-o", bin, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// program is a process a test started; it is killed when the test ends.
type program struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error // receives the result of Wait
}

func startProgram(t *testing.T, bin string, env ...string) *program {
	t.Helper()
	return startProgramArgs(t, bin, nil, env...)
}

// startProgramArgs starts bin with command-line arguments.
func startProgramArgs(t *testing.T, bin string, args []string, env ...string) *program {
	t.Helper()
	p := &program{cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(environWithout("NANO_"), env...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r := bufio.NewReader(stdout)
		io.Copy(p.out, r)
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(bin), p.out.String())
		}
	})
	return p
}

// environWithout returns the environment less the variables whose names
// start with prefix: a developer's own settings must not steer the
// programs a test runs.
func environWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// waitOutput waits until the program has printed s.
func (p *program) waitOutput(t *testing.T, s string) {
	t.Helper()
	eventually(t, fmt.Sprintf("the program prints %q", s), func() bool { return strings.Contains(p.out.String(), s) })
}

// kill ends the program with SIGKILL and waits until it has exited, so
// that the system has closed its connections.
func (p *program) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	err := <-p.done
	p.done <- err // for the cleanup
}

// interrupt sends SIGINT and waits up to 10 s for the program to exit.
func (p *program) interrupt() error {
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return err
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("still running 10 s after SIGINT")
	}
}
