package main

import "syscall"

// childAttributes puts a child in a process group of its own, so that a
// Ctrl-C in the terminal reaches this program alone, which then ends its
// children itself; and has the kernel kill the child should this program
// die without doing so.
func childAttributes() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
