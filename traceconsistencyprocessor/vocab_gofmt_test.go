package traceconsistencyprocessor

import (
	"go/format"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGeneratedVocabularyIsGofmtClean: what `make vocab` writes from rust/vocab is laid out
// as gofmt lays it out (cargo test checks that it is up to date).
func TestGeneratedVocabularyIsGofmtClean(t *testing.T) {
	for _, name := range []string{
		"config_knobs_generated.go",
		"internal/engine/vocab_generated.go",
		"internal/engine/vocab_cgo_generated.go",
	} {
		src, err := os.ReadFile(name)
		require.NoError(t, err)
		formatted, err := format.Source(src)
		require.NoError(t, err, name)
		assert.Equalf(t, string(formatted), string(src), "%s is not gofmt-clean: fix rust/vocab's generator", name)
	}
}
