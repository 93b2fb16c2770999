// Package nano builds nanoservices: small services that find and call each
// other by pattern instead of by address.
//
// A pattern is a comma-separated list of fields, such as
// "role:math,cmd:sum". A registered pattern matches a message when its
// fields are a prefix of the fields of the message's Pattern; the longest
// match wins, and fields match whole ("role:math,cmd:sum" matches
// "role:math,cmd:sum,return:zero" but never "role:math,cmd:summary").
//
// A Server keeps the registry of patterns and the addresses of the services
// that handle them, in Redis or, for a single server, in memory. It mirrors
// the registry in a radix tree and proxies each JSON message it receives to
// the service of the longest matching pattern.
//
// A Service registers its patterns at a server and renews the
// registrations while it runs, serves their handlers and calls other
// services with Act. Act asks the server once which instances serve a
// pattern, then calls them directly, in turn; a Client does the same for
// programs that only call services. Many instances may serve one pattern,
// and many servers may share one Redis: instances share the traffic, and a
// dead one is skipped, then forgotten when its registration expires.
//
// Servers and services serve HTTP/1.1 through net/http's http.Server,
// configured from their options, with every read and write bounded in size
// and time and the number of open connections capped. The calls they make
// (proxied messages, Act, registrations, /resolve) go through an
// http.RoundTripper: by default a pool of kept-alive connections of the
// package's own that runs each exchange on the caller's goroutine. It keeps
// the guarantees of http.Transport that matter here: the request's context
// bounds and cancels the call, a message is never sent again once any byte
// of it was written, and an answer with invalid or oversized headers is
// refused. It speaks HTTP/1.1, plain or over TLS; set the Transport option
// to an http.Transport for anything else.
//
// Every hop can run over TLS: the TLS options of ServerOptions,
// ServiceOptions and ClientOptions hold a tls.Config to serve or call with
// (LoadTLSFiles makes them from files it reads again when they change). A
// service that serves TLS registers as such, and servers and clients call
// it over HTTPS. With client certificates required (mutual TLS), a server's
// Identities let each certificate identity register only its own
// patterns.
//
// A message's life is one context.Context. A Handler, set with
// HandleContext, receives it with the Request: it ends when the caller
// hangs up or when the call's deadline passes. The deadline travels from
// hop to hop in the header field Nano-Timeout, the whole milliseconds
// left (each hop takes 5 ms off for the time in transit): ActContext
// writes it from its context, a server bounds its call to the service by
// it and passes on what is left, and a service gives it to the handler's
// context, so that an ActContext made with that context passes the rest
// on. A message whose time is up is answered with 504 before any handler
// runs. W3C Trace Context (traceparent, tracestate) travels the same way,
// and an Observer sees every hop; docs/requests.md in the repository
// tells the whole request model.
//
// Delivery is at most once: a server, or a client, sends a message to
// another instance of its pattern only when the first one cannot have
// received it (it could not be reached, or answered that none of its
// handlers matches). A message that may have reached a handler and failed
// is answered with an error, never repeated.
//
// NewServer, Server.Listen, NewService, Service.Add and Service.Act keep the
// signatures and the HTTP wire format of the original go-nano, so programs
// written for it build against this package unchanged and processes of
// both can work together. The constructors with options return errors
// instead of exiting, and Shutdown stops servers and services gracefully.
//
// The main types: Server (NewServerWithOptions, ServerOptions), Service
// (NewServiceWithOptions, ServiceOptions; Handle, HandleContext, Act),
// Client (NewClient, ClientOptions; Act, ActContext), Handler and Request,
// Error for answers with a status, and Observer for tracing. The programs
// cmd/nano-server (a ready server) and cmd/nanoctl (a terminal tool) come
// with the module. The repository's docs folder has one page on each of:
// the HTTP behaviour (http.md), the request model (requests.md), TLS and
// identities (tls.md), performance (performance.md), fleets sharing one Redis (scale.md), and
// moving from the original library (migrating.md).
package nano
