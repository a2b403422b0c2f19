package traceconsistencyconnector

import (
	"testing"

	"github.com/stretchr/testify/require"

	traceconsistencyprocessor "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"
)

// The connector is the processor's component type in another class: its metadata.yaml and
// the processor package's connector factory must name the same type and stability.
func TestConnectorMetadataAgreesWithTheProcessor(t *testing.T) {
	ours := NewFactory()
	theirs := traceconsistencyprocessor.NewConnectorFactory()
	require.Equal(t, traceconsistencyprocessor.NewFactory().Type(), ours.Type())
	require.Equal(t, theirs.Type(), ours.Type())
	require.Equal(t, theirs.TracesToTracesStability(), ours.TracesToTracesStability())
	require.Equal(t, theirs.CreateDefaultConfig(), ours.CreateDefaultConfig())
}
