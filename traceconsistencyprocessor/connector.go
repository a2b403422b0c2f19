package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

// The connector form: the same component type and configuration as the processor, as a
// traces-to-traces connector whose output pipelines are split in two: those named in
// handoff.pipelines receive hand-offs (their exporter points at the balancing tier), the
// others receive released traces. The collector's pipeline graph does the routing; the
// balancer's resolver decides which collector owns a trace ID.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pipeline"
	"go.opentelemetry.io/collector/processor"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadata"
)

// NewConnectorFactory returns the factory of the traceconsistency connector (component type
// traceconsistency, traces to traces, alpha). Package traceconsistencyconnector offers it as
// NewFactory, for the collector builder, with the type and stability of its own
// metadata.yaml (a test there checks that they agree with these).
func NewConnectorFactory() connector.Factory {
	return NewConnectorFactoryOf(metadata.Type, component.StabilityLevelAlpha)
}

// NewConnectorFactoryOf returns the connector factory with the given component type and
// traces-to-traces stability.
func NewConnectorFactoryOf(typ component.Type, stability component.StabilityLevel) connector.Factory {
	return connector.NewFactory(
		typ,
		createDefaultConfig,
		connector.WithTracesToTraces(createTracesToTraces, stability),
	)
}

// errHandoffNeedsConnector is what the processor form says to a configuration that hands off.
var errHandoffNeedsConnector = errors.New("handoff.on_shutdown and handoff.on_idle need the connector form of " +
	"traceconsistency (under connectors:, with an output pipeline for hand-offs named in handoff.pipelines); " +
	"the processor form has one output only")

// splitOutputs splits the connector's output pipelines into the hand-off ones (named in
// handoff.pipelines) and the others (released traces); both must be non-empty when
// anything is handed off, and every named pipeline must be an output of the connector.
func splitOutputs(cfg *Config, all []pipeline.ID) (released, handoff []pipeline.ID, err error) {
	for _, id := range cfg.Handoff.Pipelines {
		if !slices.Contains(all, id) {
			return nil, nil, fmt.Errorf("handoff.pipelines names %q, which does not receive from this connector (its pipelines: %s)",
				id.String(), idList(all))
		}
	}
	for _, id := range all {
		if slices.Contains(cfg.Handoff.Pipelines, id) {
			handoff = append(handoff, id)
		} else {
			released = append(released, id)
		}
	}
	if len(released) == 0 {
		return nil, nil, fmt.Errorf("the connector needs an output pipeline for released traces besides handoff.pipelines (its pipelines: %s)", idList(all))
	}
	return released, handoff, nil
}

func idList(ids []pipeline.ID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

// newTracesConnector builds the connector: the processor's machinery, with released
// traces going to the released-traces pipelines and hand-offs to handoff.pipelines.
func newTracesConnector(set connector.Settings, cfg *Config, next consumer.Traces, opts ...option) (*tracesProcessor, error) {
	router, ok := next.(connector.TracesRouterAndConsumer)
	if !ok {
		// A single consumer (outside a collector pipeline graph): everything is released to it.
		if cfg.Handoff.enabled() {
			return nil, errors.New("handoff.pipelines: the connector's consumer cannot route by pipeline")
		}
		return newTracesProcessor(processorSettings(set), cfg, next, opts...)
	}
	released, handoff, err := splitOutputs(cfg, router.PipelineIDs())
	if err != nil {
		return nil, err
	}
	out, err := router.Consumer(released...)
	if err != nil {
		return nil, err
	}
	p, err := newTracesProcessor(processorSettings(set), cfg, out, opts...)
	if err != nil {
		return nil, err
	}
	if len(handoff) > 0 {
		h, err := router.Consumer(handoff...)
		if err != nil {
			return nil, err
		}
		p.handoff = p.newHandoffOutput(h)
	}
	return p, nil
}

func processorSettings(set connector.Settings) processor.Settings {
	return processor.Settings{ID: set.ID, TelemetrySettings: set.TelemetrySettings, BuildInfo: set.BuildInfo}
}

// createTracesToTracesWith is the connector's create function (cgo builds only).
func createTracesToTracesWith(_ context.Context, set connector.Settings, cfg component.Config, next consumer.Traces) (connector.Traces, error) {
	return newTracesConnector(set, cfg.(*Config), next)
}
