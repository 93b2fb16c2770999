package nano_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeCommands runs the shell commands of the README's sh blocks, so
// that the README cannot drift from the code: the quick start, the curl
// line against it (checking the output the README shows), the install
// command. The test command is compared with the one CI runs (running it
// here would run this test again); the benchmarks have tests of their
// own. A command this test does not know fails it.
func TestReadmeCommands(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH")
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var quickstart *program
	for _, c := range readmeCommands(string(data)) {
		t.Logf("README: %s", c.line)
		switch {
		case c.line == "go run ./_examples/quickstart":
			// go run builds and runs; the test builds and runs the binary
			// itself, so that Ctrl-C (SIGINT) reaches the program and not
			// the go command.
			bin := buildProgram(t, ".", "./_examples/quickstart")
			quickstart = startProgramArgs(t, bin, nil, fmt.Sprintf("NANO_PORT=%d", port))
			quickstart.waitOutput(t, "Serving until Ctrl-C.")
		case strings.HasPrefix(c.line, "curl "):
			if quickstart == nil {
				t.Fatalf("%q comes before the quick start is running", c.line)
			}
			line := strings.ReplaceAll(c.line, "127.0.0.1:9999", fmt.Sprintf("127.0.0.1:%d", port))
			out, err := exec.Command("sh", "-c", line+" -s").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != strings.TrimSpace(c.output) {
				t.Errorf("%s\ngave %q (%v); the README shows %q", c.line, out, err, c.output)
			}
		case strings.HasPrefix(c.line, "go install ./cmd/..."):
			bin := t.TempDir()
			cmd := exec.Command(goTool, "install", "./cmd/...")
			cmd.Env = append(os.Environ(), "GOBIN="+bin)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", c.line, err, out)
			}
			for _, name := range []string{"nano-server", "nanoctl"} {
				if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
					t.Errorf("%s installed no %s", c.line, name)
				}
			}
		case strings.HasPrefix(c.line, "go test "):
			if !strings.Contains(string(ci), "\n"+c.line+"\n") {
				t.Errorf("the README's test command %q is not the one .ci/run runs", c.line)
			}
		case c.line == "bench/wrk.sh", c.line == "go run ./_examples/loadtest", c.line == "go run ./_examples/fleet":
			// Benchmarks: TestLoadtestExample and TestFleetExample run the
			// programs; wrk.sh needs wrk.
		default:
			t.Errorf("the README's command %q is not run by any test", c.line)
		}
	}
	if quickstart == nil {
		t.Fatal("the README has no quick start command")
	}
	if err := quickstart.interrupt(); err != nil {
		t.Errorf("the quick start after Ctrl-C: %v", err)
	}
}

// readmeCommand is a command of an sh block, its continuation lines
// joined, without its comment, and the output the README shows after it.
type readmeCommand struct {
	line, output string
}

// readmeCommands returns the commands of the sh blocks of a Markdown text.
// A line that starts with "{" is the output of the command before it.
func readmeCommands(md string) []readmeCommand {
	var out []readmeCommand
	in := false
	var cont string
	for _, line := range strings.Split(md, "\n") {
		switch {
		case strings.HasPrefix(line, "```sh"):
			in = true
			continue
		case strings.HasPrefix(line, "```"):
			in = false
			continue
		case !in:
			continue
		}
		if strings.HasPrefix(line, "{") && len(out) > 0 {
			out[len(out)-1].output += line + "\n"
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if strings.HasSuffix(line, "\\") {
			cont += strings.TrimSuffix(line, "\\")
			continue
		}
		line = strings.TrimSpace(cont + line)
		cont = ""
		if line != "" {
			out = append(out, readmeCommand{line: line})
		}
	}
	return out
}
