// Package traceconsistencyconnector offers the connector form of traceconsistency to the
// collector builder: the same component type and configuration as the processor, with a
// second output for hand-offs (see "Hand-off through the balancing tier" in the README).
// In an ocb manifest:
//
//	connectors:
//	  - gomod: github.com/traceconsistency/traceconsistency/traceconsistencyprocessor vX.Y.Z
//	    import: github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/traceconsistencyconnector
package traceconsistencyconnector // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/traceconsistencyconnector"

import (
	"go.opentelemetry.io/collector/connector"

	traceconsistencyprocessor "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"
)

// NewFactory returns the factory of the traceconsistency connector.
func NewFactory() connector.Factory {
	return traceconsistencyprocessor.NewConnectorFactory()
}
