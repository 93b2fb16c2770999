//go:build unix

package main

import (
	"os"
	"syscall"
)

// reportSignals ask a -serve run to print its accepted connection counts
// and go on serving.
var reportSignals = []os.Signal{syscall.SIGUSR1}
