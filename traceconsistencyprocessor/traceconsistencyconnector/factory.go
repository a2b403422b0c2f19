// Package traceconsistencyconnector offers the connector form of traceconsistency to the
// collector builder: the same component type and configuration as the processor, with a
// second output for hand-offs (see "Hand-off through the balancing tier" in the README).
// Its type and stability come from its own metadata.yaml; the machinery is the processor's.
// In an ocb manifest:
//
//	connectors:
//	  - gomod: github.com/traceconsistency/traceconsistency/traceconsistencyprocessor vX.Y.Z
//	    import: github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/traceconsistencyconnector
package traceconsistencyconnector // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/traceconsistencyconnector"

import (
	"go.opentelemetry.io/collector/connector"

	traceconsistencyprocessor "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"
	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/traceconsistencyconnector/internal/metadata"
)

// NewFactory returns the factory of the traceconsistency connector.
func NewFactory() connector.Factory {
	return traceconsistencyprocessor.NewConnectorFactoryOf(metadata.Type, metadata.TracesToTracesStability)
}
