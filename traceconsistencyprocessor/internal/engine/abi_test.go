//go:build cgo

package engine

import (
	"regexp"
	"testing"
)

func TestLibraryIdentity(t *testing.T) {
	l := Library()
	if l.ABIVersion != ABIVersion {
		t.Fatalf("ABI version %d, want %d", l.ABIVersion, ABIVersion)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(l.Version) {
		t.Errorf("library version %q", l.Version)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(l.SourceHash) {
		t.Errorf("source hash %q", l.SourceHash)
	}
}

func TestCheckLibraryRefusesOtherABI(t *testing.T) {
	defer func() {
		msg, _ := recover().(string)
		if !regexp.MustCompile(`C ABI version 999, this Go package expects \d+`).MatchString(msg) {
			t.Fatalf("panic %q", msg)
		}
	}()
	checkLibrary(LibraryInfo{ABIVersion: 999, Version: "9.9.9", SourceHash: "ab"})
	t.Fatal("no panic")
}
