//go:build !unix

package main

import "os"

// reportSignals is empty where there is no SIGUSR1: the counts are printed
// only when the program stops.
var reportSignals []os.Signal
