//go:build !cgo

package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

import (
	"context"
	"errors"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/processor"
)

// errNoCgo is what the factory returns when the collector was built without cgo: the
// processor's engine is a Rust static library linked through cgo.
var errNoCgo = errors.New("traceconsistency needs cgo: build the collector with CGO_ENABLED=1 " +
	"and the Rust static library (cargo build --release in the repository root)")

func createTraces(context.Context, processor.Settings, component.Config, consumer.Traces) (processor.Traces, error) {
	return nil, errNoCgo
}

func createTracesToTraces(context.Context, connector.Settings, component.Config, consumer.Traces) (connector.Traces, error) {
	return nil, errNoCgo
}
