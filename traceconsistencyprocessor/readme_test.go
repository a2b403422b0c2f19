package traceconsistencyprocessor

import (
	"maps"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
	goOnly := []string{"release_tick", "max_release_batch_spans", "max_concurrent_sends", "shutdown_timeout", "checks.max_service_names", "handoff.pipelines", "sampling"}
	assert.ElementsMatch(t, append(slices.Clone(engineKeys), goOnly...), keys, "the engine's keys and the Go-only ones")
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

// TestReadmeRowsMatchTheDefaults keeps the rows of the README's configuration reference in
// step with the code: the table lists exactly the YAML keys of Config, and each row's default
// (its first `code` span) is the value createDefaultConfig gives the key — for the engine's
// keys the defaults generated from rust/vocab.
func TestReadmeRowsMatchTheDefaults(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if os.IsNotExist(err) {
		t.Skip("../README.md does not exist (yet)")
	}
	require.NoError(t, err)
	rows := readmeConfigRows(t, string(readme))
	defaults := yamlLeaves(reflect.ValueOf(createDefaultConfig()).Elem(), "")
	var keys []string
	for k := range defaults {
		keys = append(keys, k)
	}
	var documented []string
	for k := range rows {
		// The keys inside the sampling section: Config holds the section as it came
		// (validated by the engine, see TestSamplingErrorsNameTheKey), so they have no
		// Go field of their own.
		if strings.HasPrefix(k, "sampling.") {
			continue
		}
		documented = append(documented, k)
	}
	assert.ElementsMatch(t, keys, documented, "the keys of the configuration reference are the YAML keys of Config")
	for key, v := range defaults {
		cell, ok := rows[key]
		if !ok || v.Kind() == reflect.Map {
			continue
		}
		assert.Truef(t, defaultMatches(t, v, cell), "README.md gives %s the default %q; the code's is %v", key, cell, v.Interface())
	}
}

// readmeConfigRows maps each key of the configuration reference to the first code span of
// its default cell (e.g. `0s`, `""`, `[]`), or the whole cell when it has none.
func readmeConfigRows(t *testing.T, readme string) map[string]string {
	_, table, ok := strings.Cut(readme, "\n## Configuration reference\n")
	require.True(t, ok, "README.md has a section \"Configuration reference\"")
	table, _, _ = strings.Cut(table, "\n## ")
	rows := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, " | ")
		if !strings.HasPrefix(line, "| `") || len(cells) < 3 {
			continue
		}
		key := strings.Trim(strings.TrimPrefix(cells[0], "| "), "`")
		def := strings.TrimSpace(cells[1])
		if _, rest, ok := strings.Cut(def, "`"); ok {
			def, _, _ = strings.Cut(rest, "`")
		}
		rows[key] = def
	}
	require.NotEmpty(t, rows, "the configuration reference has rows")
	return rows
}

// yamlLeaves maps the dotted mapstructure path of every leaf of the struct value v to it.
func yamlLeaves(v reflect.Value, prefix string) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	for i := range v.NumField() {
		f := v.Type().Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		switch {
		case f.Anonymous && opts == "squash":
			maps.Copy(out, yamlLeaves(v.Field(i), prefix))
		case !f.IsExported() || tag == "" || tag == "-":
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]():
			maps.Copy(out, yamlLeaves(v.Field(i), prefix+tag+"."))
		default:
			out[prefix+tag] = v.Field(i)
		}
	}
	return out
}

// defaultMatches reports whether the README's default cell names the value v.
func defaultMatches(t *testing.T, v reflect.Value, cell string) bool {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		d, err := time.ParseDuration(cell)
		return err == nil && d == time.Duration(v.Int())
	case v.Kind() == reflect.Slice:
		return cell == "[]" && v.Len() == 0
	case v.Kind() == reflect.String:
		if v.String() == "" {
			return cell == `""` || cell == "none"
		}
		return cell == v.String()
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(cell)
		return err == nil && b == v.Bool()
	case v.CanInt():
		n, err := strconv.ParseInt(cell, 10, 64)
		return err == nil && n == v.Int()
	case v.CanUint():
		n, err := strconv.ParseUint(cell, 10, 64)
		return err == nil && n == v.Uint()
	}
	t.Errorf("no rule to compare a README default with a %s", v.Type())
	return false
}
