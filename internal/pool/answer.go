package pool

import (
	"errors"
	"fmt"
	"math"
	"net/http"
)

// maxInformational is how many informational (1xx) answers may come
// before the final answer to a request.
const maxInformational = 5

// readAnswer reads the head of the final answer to req from c, skipping
// informational answers. The heads it reads may take maxHead bytes in
// all. It refuses what http.ReadResponse refuses, and what checkAnswer
// refuses.
func (c *conn) readAnswer(req *http.Request, maxHead int64) (*http.Response, error) {
	c.headLeft = maxHead
	for informational := 0; ; informational++ {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil && c.headLeft <= 0 {
			return nil, fmt.Errorf("answer head over the limit of %d bytes (MaxResponseHeaderBytes)", maxHead)
		}
		if err != nil {
			return nil, err
		}
		if err := checkAnswer(resp); err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 {
			c.headLeft = math.MaxInt64
			return resp, nil
		}
		if informational == maxInformational {
			return nil, fmt.Errorf("more than %d informational answers", maxInformational)
		}
	}
}

// checkAnswer refuses answers that http.Transport would hand to the
// caller but the pool does not: a status code below 100; 101 Switching
// Protocols, as the pool sends no request that asks for a protocol
// switch; a header field name that is not a token, such as "X A", which
// http.ReadResponse lets through.
func checkAnswer(resp *http.Response) error {
	switch {
	case resp.StatusCode < 100:
		return fmt.Errorf("invalid status code %d", resp.StatusCode)
	case resp.StatusCode == http.StatusSwitchingProtocols:
		return errors.New("unasked 101 Switching Protocols answer")
	}
	for name := range resp.Header {
		if !isToken(name) {
			return fmt.Errorf("invalid header field name %q in answer", name)
		}
	}
	return nil
}

// reusable reports whether the connection that carried req and its
// answer resp may carry another exchange: the answer is HTTP/1.1 and
// neither side asked to close the connection.
func reusable(req *http.Request, resp *http.Response) bool {
	return resp.ProtoAtLeast(1, 1) && !resp.Close && !wantsClose(req)
}
