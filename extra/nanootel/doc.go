// Package nanootel traces go-nano servers, services and clients with
// OpenTelemetry. It is a module of its own, so that programs that use
// go-nano without it do not link OpenTelemetry.
//
// An Observer, set as the Observer option of a nano.Server, nano.Service
// or nano.Client, starts a span for each message a server proxies
// ("nano.proxy PATTERN", kind Server), each message a service handles
// ("nano.handle PATTERN", kind Server) and each call of Act
// ("nano.act PATTERN", kind Client). PATTERN is the registered pattern
// that routes the message, so proxy and handle span names stay few
// however many messages there are; for Act it is the pattern the caller
// gave, as few as the program's own calls (build it from input, and the
// names grow with it). The span context
// travels with each message in its header, written and read by the
// propagator, so a message that goes through a server and two services
// makes one trace:
//
//	nano.proxy role:report                     server
//	└─ nano.handle role:report                 service A
//	   └─ nano.act role:math,cmd:sum           service A's Act
//	      └─ nano.handle role:math,cmd:sum     service B
//
// When Act calls service B through the server, rather than directly, a
// span "nano.proxy role:math,cmd:sum" of the server stands between the
// act span and B's handle span. One act span covers a whole call of Act,
// whichever instances it tries and whether or not it falls back to the
// server.
//
// Every span has the attributes rpc.system.name ("nano") and rpc.method
// (the pattern), and http.response.status_code once there is an answer.
// A span whose work failed has the status Error, the error recorded as an
// event when there is one, and error.type: the status code of the error
// answer as a string ("500", "504"), or for an Act that got no answer
// "timeout", "canceled", "unavailable" or "_OTHER". Proxy and handle spans
// fail with an error or a status of 500 or more; act spans with an error
// or a status of 400 or more, as HTTP client spans do.
//
// A handler continues the trace by passing its context to Act:
//
//	otel.SetTracerProvider(provider) // an SDK TracerProvider with an exporter
//	otel.SetTextMapPropagator(propagation.TraceContext{})
//	obs := nanootel.NewObserver()
//
//	server, err := nano.NewServerWithOptions(nano.ServerOptions{Observer: obs})
//	// ...
//	svc, err := nano.NewServiceWithOptions(nano.ServiceOptions{
//		Addr:     "report:8081",
//		Server:   "nano-server:8080",
//		Observer: obs, // also traces the service's Act calls
//	})
//	// ...
//	svc.HandleContext("role:report", func(ctx context.Context, req *nano.Request) ([]byte, error) {
//		return svc.ActContext(ctx, []byte(`{"Pattern":"role:math,cmd:sum","Left":1,"Right":2}`), "role:math,cmd:sum")
//	})
//
// The global propagator of the otel package carries nothing until a
// program sets one: set it, or give NewObserver WithPropagator. Processes
// without an Observer still carry the W3C trace context of a message on
// (a server forwards it unchanged, and a service's Act made with its
// handler's context sends the traceparent its message came with), so
// traced and untraced processes can share a trace; the untraced hops only
// have no spans.
package nanootel
