package pool

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Ways to frame a request body other than by a Content-Length.
const (
	unframed = -1 // no body, and no field says so
	chunked  = -2 // Transfer-Encoding: chunked
)

// writeRequest writes req on w, with target as the request target, and
// flushes it. The header fields of req.Header are written as they are,
// their values trimmed of blanks at either end as http.Transport does,
// but for those that frame the message, which are the pool's to write:
// Host, Content-Length, Transfer-Encoding and Trailer. No User-Agent is
// added.
func writeRequest(w *bufio.Writer, req *http.Request, target string) error {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	w.WriteString(method)
	w.WriteString(" ")
	w.WriteString(target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(requestHost(req))
	w.WriteString("\r\n")
	length := bodyLength(req)
	switch {
	case length == chunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	case length >= 0:
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(w.AvailableBuffer(), length, 10))
		w.WriteString("\r\n")
	}
	for name, values := range req.Header {
		if framingField(name) {
			continue
		}
		for _, v := range values {
			w.WriteString(name)
			w.WriteString(": ")
			w.WriteString(strings.Trim(v, " \t"))
			w.WriteString("\r\n")
		}
	}
	if req.Close && !hasToken(req.Header["Connection"], "close") {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	var err error
	switch {
	case length == chunked:
		err = writeChunked(w, req.Body)
	case length > 0:
		err = writeLength(w, req.Body, length)
	}
	if err != nil {
		return err
	}
	return w.Flush()
}

// bodyLength is the Content-Length of req's body, or how else it is
// framed. As http.Transport does, it sends "Content-Length: 0" for a POST,
// PUT or PATCH without a body, and no field for other methods. A body of
// unknown length (ContentLength -1) goes chunked, and so does a body
// whose ContentLength is 0, which means unknown as well: http.Transport
// reads a byte ahead to tell an empty body, the pool does not.
func bodyLength(req *http.Request) int64 {
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		switch req.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			return 0
		}
		return unframed
	case isChunked(req.TransferEncoding) || req.ContentLength <= 0:
		return chunked
	}
	return req.ContentLength
}

// framingField reports whether the header field name is one that only
// the pool writes.
func framingField(name string) bool {
	for _, f := range [...]string{"Host", "Content-Length", "Transfer-Encoding", "Trailer"} {
		if strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// writeLength copies the n bytes of body to w. A body shorter or longer
// than n is an error, found after writing n bytes at most.
func writeLength(w *bufio.Writer, body io.Reader, n int64) error {
	var copied int64
	for copied < n {
		buf, err := room(w)
		if err != nil {
			return err
		}
		buf = buf[:min(int64(len(buf)), n-copied)]
		m, err := body.Read(buf)
		w.Write(buf[:m])
		copied += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if copied < n {
		return fmt.Errorf("pool: ContentLength=%d with Body length %d", n, copied)
	}
	buf, err := room(w)
	if err != nil {
		return err
	}
	if m, _ := body.Read(buf[:1]); m > 0 {
		return fmt.Errorf("pool: ContentLength=%d with a longer Body", n)
	}
	return nil
}

// Layout of a chunk: four hexadecimal digits of size and a line end, the
// data (maxChunk bytes at most), a line end.
const (
	chunkHead = len("0000\r\n")
	chunkTail = len("\r\n")
	maxChunk  = 0xffff
)

// writeChunked copies body to w in chunks, each built in place in w's
// free space, then writes the last chunk.
func writeChunked(w *bufio.Writer, body io.Reader) error {
	const hex = "0123456789abcdef"
	for {
		buf, err := room(w)
		if err != nil {
			return err
		}
		if len(buf) < chunkHead+chunkTail+1 {
			if err := w.Flush(); err != nil {
				return err
			}
			continue
		}
		m, err := body.Read(buf[chunkHead:min(len(buf)-chunkTail, chunkHead+maxChunk)])
		if m > 0 {
			buf[0], buf[1], buf[2], buf[3] = hex[m>>12&0xf], hex[m>>8&0xf], hex[m>>4&0xf], hex[m&0xf]
			copy(buf[4:], "\r\n")
			copy(buf[chunkHead+m:], "\r\n")
			w.Write(buf[:chunkHead+m+chunkTail])
		}
		if err == io.EOF {
			w.WriteString("0\r\n\r\n")
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// room returns the free space of w's buffer, flushing it first if it is
// full. The space is valid until the next write to w.
func room(w *bufio.Writer) ([]byte, error) {
	if w.Available() == 0 {
		if err := w.Flush(); err != nil {
			return nil, err
		}
	}
	return w.AvailableBuffer()[:w.Available()], nil
}
