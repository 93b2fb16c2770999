//go:build unix && !aix

package pool

import (
	"errors"
	"net"
	"syscall"
)

// alive reports whether an idle connection is fit for an exchange: the
// peer has not closed it and has sent nothing, as it would have to answer
// a request it was never sent. It peeks at the socket without waiting.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
	})
	return err == nil && open
}
