package tracegencli

import (
	"bytes"
	"errors"
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// TestReadmeCommandLines parses every tracegen command line of README.md and
// tests/README.md with the command's own flag set and validation: every
// flag must exist, every value must parse, every broken kind must be one
// the generator knows, and the line must be accepted as a whole (-help
// included, which the command answers with its usage and exit code 0).
func TestReadmeCommandLines(t *testing.T) {
	root := RepoRoot()
	docs := []struct {
		path, prefix string
		min          int
	}{
		{filepath.Join(root, "README.md"), ReadmePrefix, 2},
		{filepath.Join(root, "tests", "README.md"), TestsReadmePrefix, 1},
	}
	known := map[string]bool{}
	fs, _, _ := NewFlagSet(&bytes.Buffer{})
	fs.VisitAll(func(f *flag.Flag) { known[f.Name] = true })
	for _, d := range docs {
		cmds, err := CommandLines(d.path, d.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(cmds) < d.min {
			t.Fatalf("%s: found %d tracegen command lines starting with %q, want at least %d", d.path, len(cmds), d.prefix, d.min)
		}
		for _, c := range cmds {
			rel, _ := filepath.Rel(root, d.path)
			where := rel + ":" + itoa(c.Line)
			for i, a := range c.Args {
				if !strings.HasPrefix(a, "-") {
					continue
				}
				name := strings.TrimLeft(a, "-")
				name, val, hasVal := strings.Cut(name, "=")
				if name == "help" || name == "h" {
					continue
				}
				if !known[name] {
					t.Errorf("%s: flag -%s is not a tracegen flag: %s", where, name, c.Text)
					continue
				}
				if name == "broken" {
					if !hasVal && i+1 < len(c.Args) {
						val = c.Args[i+1]
					}
					for _, k := range strings.Split(val, ",") {
						if k == "all" || k == "none" {
							continue
						}
						if !slices.Contains(tracegen.AllBrokenKinds(), tracegen.BrokenKind(strings.ReplaceAll(k, "-", "_"))) {
							t.Errorf("%s: -broken %q is not a broken kind of the generator (%v): %s", where, k, tracegen.AllBrokenKinds(), c.Text)
						}
					}
				}
			}
			var stderr bytes.Buffer
			_, err := Parse(c.Args, &stderr)
			switch {
			case errors.Is(err, flag.ErrHelp):
				if !strings.Contains(stderr.String(), "-broken") {
					t.Errorf("%s: -help printed no usage: %q", where, stderr.String())
				}
			case err != nil:
				t.Errorf("%s: %s\n  is refused by tracegen: %v %s", where, c.Text, err, stderr.String())
			}
		}
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func TestShellSplit(t *testing.T) {
	for in, want := range map[string][]string{
		" -traces 200":                    {"-traces", "200"},
		" -help      # every flag":        {"-help"},
		` -broken 'a,b' -x="1 2"`:         {"-broken", "a,b", "-x=1 2"},
		"":                                nil,
		" -broken missing_parent -seed 3": {"-broken", "missing_parent", "-seed", "3"},
	} {
		got, err := shellSplit(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("shellSplit(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{" -traces $N", " | tee x", " 'open"} {
		if _, err := shellSplit(bad); err == nil {
			t.Errorf("shellSplit(%q) accepted", bad)
		}
	}
}

// TestSeedFreshPerRun: without -seed every parse draws another seed (so a
// second run sends new trace IDs); -seed N is taken as given, 0 included.
func TestSeedFreshPerRun(t *testing.T) {
	a, err := Parse(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]string{"-mode", "pdata"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if a.SeedGiven || b.SeedGiven {
		t.Fatal("SeedGiven set without -seed")
	}
	if a.Seed == b.Seed {
		t.Fatalf("two runs without -seed drew the same seed %d", a.Seed)
	}
	if a.Config.Seed != a.Seed {
		t.Fatalf("generator seed %d, run seed %d", a.Config.Seed, a.Seed)
	}
	ga, gb := tracegen.MustNew(a.Config), tracegen.MustNew(b.Config)
	if ga.Plan(0).TraceID == gb.Plan(0).TraceID {
		t.Fatal("two default runs plan the same first trace ID")
	}
	for _, seed := range []string{"7", "0", "-3"} {
		o, err := Parse([]string{"-seed", seed}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if !o.SeedGiven || itoaSigned(o.Seed) != seed || o.Config.Seed != o.Seed {
			t.Fatalf("-seed %s parsed as %d (given %v)", seed, o.Seed, o.SeedGiven)
		}
	}
	x, _ := Parse([]string{"-seed", "42"}, &bytes.Buffer{})
	y, _ := Parse([]string{"-seed", "42"}, &bytes.Buffer{})
	if tracegen.MustNew(x.Config).Plan(3).TraceID != tracegen.MustNew(y.Config).Plan(3).TraceID {
		t.Fatal("-seed 42 does not reproduce the trace IDs")
	}
}

func itoaSigned(n int64) string {
	if n < 0 {
		return "-" + itoa(int(-n))
	}
	return itoa(int(n))
}

// TestSummaryPrintsSeed: the summary names the seed and how to repeat the run.
func TestSummaryPrintsSeed(t *testing.T) {
	var out bytes.Buffer
	printSummary(&out, Summary{Mode: "pdata", Endpoint: "127.0.0.1:1", Seed: 12345})
	if !strings.Contains(out.String(), "seed 12345") || !strings.Contains(out.String(), "-seed 12345") {
		t.Fatalf("summary does not print the seed: %s", out.String())
	}
}

func TestParseFlags(t *testing.T) {
	o, err := Parse([]string{"-mode", "pdata", "-traces", "50", "-broken", "missing_parent,two-roots", "-broken-every", "5",
		"-services", "4", "-min-spans", "3", "-max-spans", "9", "-endpoint", "localhost:9", "-live-clock=false"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c := o.Config
	if o.Mode != "pdata" || c.Traces != 50 || c.BrokenEvery != 5 || c.Services != 4 || c.MinSpans != 3 || c.MaxSpans != 9 ||
		o.Endpoint != "localhost:9" || c.LiveClock || !slices.Equal(c.Broken, []tracegen.BrokenKind{tracegen.MissingParent, tracegen.TwoRoots}) {
		t.Fatalf("parsed %+v", o)
	}
	var errb bytes.Buffer
	if _, err := Parse([]string{"-broken", "duplicate"}, &errb); err == nil || !strings.Contains(err.Error(), `unknown broken kind "duplicate"`) {
		t.Fatalf("-broken duplicate: %v", err)
	}
	if _, err := Parse([]string{"-nope"}, &errb); err == nil {
		t.Fatal("-nope accepted")
	}
	if _, err := Parse([]string{"-traces", "5", "extra"}, &errb); err == nil {
		t.Fatal("a positional argument was accepted")
	}
	if _, err := Parse([]string{"-help"}, &errb); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v", err)
	}
	var out bytes.Buffer
	errb.Reset()
	if code := Run([]string{"-help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-seed") {
		t.Fatalf("-help: exit %d, usage %q", code, errb.String())
	}
}
