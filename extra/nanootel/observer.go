package nanootel

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	nano "github.com/domWinter/go-nano"
)

// ScopeName is the instrumentation scope of the spans an Observer starts.
const ScopeName = "github.com/domWinter/go-nano/extra/nanootel"

// Observer is a nano.Observer that traces messages with OpenTelemetry:
// one span for each message a server proxies, each message a service
// handles and each call of Act, carried from process to process in the
// messages' headers by a TextMapPropagator.
//
// An Observer is safe for concurrent use. Create one with NewObserver:
// the zero Observer is not usable.
type Observer struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
}

var _ nano.Observer = (*Observer)(nil)

// NewObserver returns an Observer configured by opts. Without options it
// uses the global TracerProvider and TextMapPropagator of the otel
// package, including those set after NewObserver returns.
func NewObserver(opts ...Option) *Observer {
	var c config
	for _, opt := range opts {
		opt(&c)
	}
	if c.provider == nil {
		c.provider = otel.GetTracerProvider()
	}
	if c.propagator == nil {
		c.propagator = otel.GetTextMapPropagator()
	}
	return &Observer{
		tracer:     c.provider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		propagator: c.propagator,
	}
}

// Start starts the span of op on pattern and returns ctx holding it,
// with the function that ends it. The span is named after op and
// pattern: "nano.proxy role:math,cmd:sum", "nano.handle ..." or
// "nano.act ...".
//
// For nano.OpProxy and nano.OpHandle the span is of kind Server. Its
// parent is the span ctx holds, if any (a middleware that traces the
// HTTP request around the server or service has started one, and has
// read the header), else the span context the propagator extracts from
// header, else none: the span starts a trace. For nano.OpAct the span is of kind Client, child of
// the span ctx holds. Any other op gets a span of kind Internal, child of
// the span ctx holds.
//
// The span has the attributes rpc.system.name ("nano") and rpc.method
// (the pattern). The end function adds http.response.status_code when
// status is not 0. It marks the span as failed when err is not nil, or
// when status is 500 or more (400 or more for OpAct, whose caller gets
// an error for any such status): the span's status is then Error, err is
// recorded as an event and error.type says what failed (see the package
// documentation).
func (o *Observer) Start(ctx context.Context, op nano.Op, pattern string, header http.Header) (context.Context, func(status int, err error)) {
	kind, failFrom := trace.SpanKindInternal, http.StatusInternalServerError
	switch op {
	case nano.OpProxy, nano.OpHandle:
		kind = trace.SpanKindServer
		if !trace.SpanContextFromContext(ctx).IsValid() {
			ctx = o.propagator.Extract(ctx, propagation.HeaderCarrier(header))
		}
	case nano.OpAct:
		kind, failFrom = trace.SpanKindClient, http.StatusBadRequest
	}
	ctx, span := o.tracer.Start(ctx, "nano."+op.String()+" "+pattern,
		trace.WithSpanKind(kind),
		trace.WithAttributes(rpcSystem, semconv.RPCMethod(pattern)),
	)
	return ctx, func(status int, err error) {
		end(span, status, err, failFrom)
	}
}

// Inject writes the span context ctx holds, and whatever else the
// propagator carries, into header, replacing the fields of the same name.
func (o *Observer) Inject(ctx context.Context, header http.Header) {
	o.propagator.Inject(ctx, propagation.HeaderCarrier(header))
}

// rpcSystem names nano as the RPC system of every span.
var rpcSystem = semconv.RPCSystemNameKey.String("nano")

// end records how the work of span ended and ends it. A status of failFrom
// or more, or an error, marks the span as failed.
func end(span trace.Span, status int, err error, failFrom int) {
	if status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	switch {
	case err != nil:
		span.SetAttributes(errorType(status, err))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	case status >= failFrom:
		span.SetAttributes(errorType(status, nil))
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// errorType is the error.type of a failure, of low cardinality: the
// status code of an error answer, as the HTTP conventions have it; for a
// call that got no answer, "timeout", "canceled" or "unavailable" (the
// service could not be reached, or its answer was not valid); else
// "_OTHER".
func errorType(status int, err error) attribute.KeyValue {
	switch {
	case status >= http.StatusBadRequest:
		return semconv.ErrorTypeKey.String(strconv.Itoa(status))
	case errors.Is(err, context.DeadlineExceeded):
		return semconv.ErrorTypeKey.String("timeout")
	case errors.Is(err, context.Canceled):
		return semconv.ErrorTypeKey.String("canceled")
	case errors.Is(err, nano.ErrServiceUnavailable):
		return semconv.ErrorTypeKey.String("unavailable")
	}
	return semconv.ErrorTypeOther
}
