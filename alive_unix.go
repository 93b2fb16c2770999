//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package nano

import (
	"errors"
	"net"
	"syscall"
)

// alive reports whether a kept connection is still usable: the peer has
// not closed it, and has sent nothing unasked. It peeks at the socket
// without waiting.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var b [1]byte
	err = rc.Control(func(fd uintptr) { // no wait and no deadline: a bare peek
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
	})
	return err == nil && open
}
