//go:build unix && !aix

package pool

import (
	"errors"
	"net"
	"syscall"
)

// socket peeks at the socket of a connection, to tell whether it is fit
// for an exchange after being idle. The zero socket always says yes.
type socket struct {
	raw  syscall.RawConn  // the connection's socket; nil if it has none
	peek func(fd uintptr) // peeks at fd and sets open; made once, as Control takes a func
	open bool             // the socket is open and has nothing to read
}

// init readies s to peek at the socket of nc, if nc has one.
func (s *socket) init(nc net.Conn) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	s.raw = raw
	s.peek = func(fd uintptr) {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		s.open = errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK)
	}
}

// alive reports whether the connection is fit for an exchange: the peer
// has not closed it and has sent nothing, as it would have to answer a
// request it was never sent. It peeks at the socket without waiting.
func (s *socket) alive() bool {
	if s.raw == nil {
		return true
	}
	s.open = false
	return s.raw.Control(s.peek) == nil && s.open
}
