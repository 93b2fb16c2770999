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
// NewServer, Server.Listen, NewService, Service.Add and Service.Act keep the
// signatures and the HTTP wire format of the original go-nano, so programs
// written for it build against this package unchanged and processes of
// both can work together. The constructors with options return errors
// instead of exiting, and Shutdown stops servers and services gracefully.
package nano
