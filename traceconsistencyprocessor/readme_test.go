package traceconsistencyprocessor

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestReadmeDocumentsEveryKey keeps the README's configuration reference from drifting: every
// YAML key of Config, as a dotted path (e.g. checks.skew_correction.max_adjustment), must
// appear in ../README.md.
func TestReadmeDocumentsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if os.IsNotExist(err) {
		t.Skip("../README.md does not exist (yet)")
	}
	if err != nil {
		t.Fatal(err)
	}
	keys := yamlKeys(reflect.TypeFor[Config](), "")
	assert.Contains(t, keys, "checks.skew_correction.max_adjustment", "the walk reaches nested keys")
	for _, k := range keys {
		assert.Truef(t, strings.Contains(string(readme), k), "README.md does not document the key %q", k)
	}
}

func TestYAMLKeysWalk(t *testing.T) {
	keys := yamlKeys(reflect.TypeFor[Config](), "")
	assert.Len(t, keys, 33)
	for _, k := range []string{"num_shards", "release_tick", "late_spans.policy", "checks.disabled", "hlc.state_file", "max_release_batch_spans"} {
		assert.Contains(t, keys, k)
	}
}

// yamlKeys lists the dotted mapstructure paths of the leaves of the struct type typ.
func yamlKeys(typ reflect.Type, prefix string) []string {
	var out []string
	for f := range typ.Fields() {
		tag, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if f.Anonymous && opts == "squash" {
			out = append(out, yamlKeys(f.Type, prefix)...) // its keys are its parent's
			continue
		}
		if !f.IsExported() || tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
			out = append(out, yamlKeys(f.Type, key+".")...)
			continue
		}
		out = append(out, key)
	}
	return out
}
