//go:build !cgo

package traceconsistencyprocessor

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/processor/processortest"
)

func TestWithoutCgoCreateFailsClearly(t *testing.T) {
	f := NewFactory()
	_, err := f.CreateTraces(context.Background(), processortest.NewNopSettings(f.Type()), f.CreateDefaultConfig(), consumertest.NewNop())
	require.ErrorContains(t, err, "traceconsistency needs cgo: build the collector with CGO_ENABLED=1")
}
