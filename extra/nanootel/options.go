package nanootel

import (
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Option configures an Observer.
type Option func(*config)

// config holds what the options chose; nil fields mean the globals.
type config struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
}

// WithTracerProvider sets the TracerProvider the Observer starts spans
// with. Nil, as not using the option, means the global one
// (otel.GetTracerProvider).
func WithTracerProvider(provider trace.TracerProvider) Option {
	return func(c *config) { c.provider = provider }
}

// WithPropagator sets the TextMapPropagator that carries span contexts in
// the messages' headers. Nil, as not using the option, means the global
// one (otel.GetTextMapPropagator), which carries nothing until the
// program sets one.
func WithPropagator(propagator propagation.TextMapPropagator) Option {
	return func(c *config) { c.propagator = propagator }
}
