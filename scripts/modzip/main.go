// Command modzip adds one version of a Go module to a module proxy tree on disk, the layout
// that GOPROXY=file:///... reads (https://go.dev/ref/mod#goproxy-protocol):
//
//	<root>/<escaped module path>/@v/list          versions, one a line
//	<root>/<escaped module path>/@v/<version>.info {"Version": ..., "Time": ...}
//	<root>/<escaped module path>/@v/<version>.mod  the module's go.mod
//	<root>/<escaped module path>/@v/<version>.zip  the module zip (golang.org/x/mod/zip)
//
// Usage: modzip -dir <module dir> -version vX.Y.Z -out <root> [-time RFC3339]
//
// The zip holds every file under -dir except nested modules, vendor/ and VCS directories, as
// the go command would; pass a directory holding exactly the files to release.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/zip"
)

func main() {
	dir := flag.String("dir", "", "module directory (holds go.mod)")
	version := flag.String("version", "", "version to publish, e.g. v0.1.0")
	out := flag.String("out", "", "root of the module proxy tree")
	at := flag.String("time", "", "version time, RFC 3339 (default: now)")
	flag.Parse()
	if err := run(*dir, *version, *out, *at); err != nil {
		fmt.Fprintln(os.Stderr, "modzip:", err)
		os.Exit(1)
	}
}

func run(dir, version, out, at string) error {
	if dir == "" || version == "" || out == "" {
		return fmt.Errorf("-dir, -version and -out are required")
	}
	if !semver.IsValid(version) || semver.Build(version) != "" || semver.Canonical(version) != version {
		return fmt.Errorf("version %q is not a canonical semantic version (vX.Y.Z or vX.Y.Z-pre)", version)
	}
	t := time.Now().UTC()
	if at != "" {
		var err error
		if t, err = time.Parse(time.RFC3339, at); err != nil {
			return fmt.Errorf("-time: %w", err)
		}
		t = t.UTC()
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return err
	}
	path := modfile.ModulePath(gomod)
	if path == "" {
		return fmt.Errorf("%s/go.mod has no module line", dir)
	}
	mv := module.Version{Path: path, Version: version}
	if err := module.Check(path, version); err != nil {
		return err
	}
	esc, err := module.EscapePath(path)
	if err != nil {
		return err
	}
	vdir := filepath.Join(out, filepath.FromSlash(esc), "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return err
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return err
	}
	base := filepath.Join(vdir, escVersion)

	zf, err := os.Create(base + ".zip")
	if err != nil {
		return err
	}
	if err := zip.CreateFromDir(zf, mv, dir); err != nil {
		zf.Close()
		return fmt.Errorf("zipping %s: %w", dir, err)
	}
	if err := zf.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(base+".mod", gomod, 0o644); err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, t})
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".info", append(info, '\n'), 0o644); err != nil {
		return err
	}

	listFile := filepath.Join(vdir, "list")
	var versions []string
	if b, err := os.ReadFile(listFile); err == nil {
		versions = strings.Fields(string(b))
	}
	if !slices.Contains(versions, version) {
		versions = append(versions, version)
	}
	semver.Sort(versions)
	if err := os.WriteFile(listFile, []byte(strings.Join(versions, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	st, err := os.Stat(base + ".zip")
	if err != nil {
		return err
	}
	fmt.Printf("modzip: %s@%s: %s (%d bytes)\n", path, version, base+".zip", st.Size())
	return nil
}
