// Package pool sends HTTP/1.1 requests over kept-alive connections, for a
// proxy hop where http.Transport costs more than the work it carries.
//
// Its Transport is an http.RoundTripper held to the behaviour of
// http.Transport where the two overlap: the request's context bounds the
// whole exchange, a request is never sent twice once any byte of it may
// have reached the peer, and answers whose head is malformed or too large
// are refused. What it does differently is where the work runs. An
// http.Transport gives every connection a reader goroutine and a writer
// goroutine and hands each request and answer between them over channels.
// This package runs each exchange on the caller's goroutine, writing the
// request and reading the answer through buffers kept with the
// connection, and enforces the context with the connection's deadline
// instead of a watching goroutine: when the context ends, the deadline is
// moved into the past and the blocked read or write returns at once. On
// the client's side, a round trip takes fewer allocations and less CPU
// time than through http.Transport (see the package's benchmarks).
//
// The price is a narrower scope. Compared with http.Transport it has:
//
//   - no HTTP/2: "http" URLs, and "https" ones over TLS when TLSConfig is
//     set, spoken in HTTP/1.1;
//   - no proxies, neither from the environment nor configured;
//   - no compression: nothing asks for gzip and nothing is decoded;
//   - no protocol switches: a request asking for an Upgrade, or a CONNECT,
//     fails before anything is dialled;
//   - no request trailers, and no wait for "100 Continue": the body
//     follows the head at once;
//   - no early answers: the whole request is written before the answer
//     is read, so a write that fails is reported as such, even when the
//     peer answered before it stopped reading (http.Transport would
//     return that answer);
//   - no retries: the only request sent on a second connection is one
//     that found its kept connection closed, or holding bytes nobody asked
//     for, before a byte of it was written. http.Transport also sends a
//     request again, when it is idempotent and its kept connection failed
//     before any answer came.
//
// It is also stricter about what it accepts. It refuses, where
// http.Transport goes on: a request whose Host is invalid (Transport sends
// it with an empty Host); an answer whose status code is below 100, or
// 101 Switching Protocols, or which has a header field name that is not a
// token (such as "X A"); more than five informational answers before the
// final one.
//
// The request body is read on the caller's goroutine too, so a body whose
// Read blocks holds up RoundTrip whatever the context says.
package pool
