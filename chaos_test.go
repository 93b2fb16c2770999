//go:build unix

package nano_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chaosQuick are flags that make every fault of the chaos program, and
// the recovery after it, last about a second.
var chaosQuick = []string{
	"-rate", "100", "-warmup", "1s", "-recovery", "500ms", "-replace-after", "300ms",
	"-stop-for", "1s", "-redis-down", "1s", "-server-down", "1s",
	"-ttl", "2s", "-resync", "500ms", "-upstream-timeout", "1s", "-sample", "1s",
}

// TestChaosExample runs _examples/chaos briefly with every fault, then
// interrupts a run while an instance is stopped; each time the program
// reports and leaves none of the processes it started behind.
func TestChaosExample(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("the chaos program needs redis-server on PATH")
	}
	bin := buildProgram(t, ".", "./_examples/chaos")

	t.Run("faults", func(t *testing.T) {
		t.Parallel()
		p := startProgramArgs(t, bin, append([]string{"-duration", "8s"}, chaosQuick...))
		select {
		case err := <-p.done:
			p.done <- err
			if err != nil {
				t.Fatalf("chaos: %v\n%s", err, p.out.String())
			}
		case <-time.After(time.Minute):
			t.Fatalf("chaos still running after a minute:\n%s", p.out.String())
		}
		out := p.out.String()
		for _, want := range []string{
			"warm-up", "#1 kill", "#2 stop", "#3 term", "#4 redis", "#5 server",
			"answered by", "/readyz", "routes", "goroutines", "summary: ",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		checkGone(t, out)
	})

	t.Run("interrupted", func(t *testing.T) {
		t.Parallel()
		args := append([]string{"-duration", "1m"}, chaosQuick...)
		p := startProgramArgs(t, bin, append(args, "-faults", "stop", "-stop-for", "1m"))
		p.waitOutput(t, "warm-up")
		time.Sleep(300 * time.Millisecond) // into the fault
		if err := p.interrupt(); err != nil {
			t.Fatalf("after Ctrl-C: %v\n%s", err, p.out.String())
		}
		out := p.out.String()
		if !strings.Contains(out, "summary: ") || !strings.Contains(out, "interrupted") {
			t.Errorf("no summary of an interrupted run:\n%s", out)
		}
		checkGone(t, out)
	})
}

// checkGone checks that every process of the chaos program's table has
// exited.
func checkGone(t *testing.T, out string) {
	t.Helper()
	pids := chaosPIDs(out)
	if len(pids) < 6 { // Redis, two servers, three instances
		t.Fatalf("the table of processes lists %d; want at least 6:\n%s", len(pids), out)
	}
	for _, pid := range pids {
		p, err := os.FindProcess(pid)
		if err != nil {
			continue
		}
		if err := p.Signal(syscall.Signal(0)); err == nil || !(errors.Is(err, os.ErrProcessDone) || errors.Is(err, syscall.ESRCH)) {
			t.Errorf("process %d is still running after the chaos program ended (%v)", pid, err)
		}
	}
}

// chaosPIDs reads the process IDs from the chaos program's table of
// processes: the lines after its header, up to the first empty one.
func chaosPIDs(out string) []int {
	var pids []int
	in := false
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		line := s.Text()
		switch {
		case strings.HasPrefix(line, "process "):
			in = true
		case in && strings.TrimSpace(line) == "":
			return pids
		case in:
			if f := strings.Fields(line); len(f) > 1 {
				if pid, err := strconv.Atoi(f[1]); err == nil {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}
