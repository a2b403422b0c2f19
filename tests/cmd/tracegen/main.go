// Command tracegen sends a workload of realistic traces (see package
// tracegen) to a loopback OTLP gRPC endpoint, through the real
// OpenTelemetry Go SDK (-mode sdk) or as pdata batches over several
// concurrent gRPC connections (-mode pdata, the fast one for load tests).
// It stops by itself after -traces traces or -duration, whichever comes
// first, and prints a summary. Each run draws a fresh random seed (so a
// second run sends new trace IDs) and prints it; -seed N repeats a run.
//
//	go run ./cmd/tracegen -endpoint 127.0.0.1:4317 -traces 1000
//	go run ./cmd/tracegen -mode pdata -traces 200000 -concurrency 4 -duration 30s
//	go run ./cmd/tracegen -broken missing_parent,two_roots -broken-every 5
//
// The flags, their validation and the run live in package
// tests/internal/tracegencli, where tests check the READMEs' command lines
// against them.
package main

import (
	"os"

	"github.com/traceconsistency/traceconsistency/tests/internal/tracegencli"
)

func main() {
	os.Exit(tracegencli.Run(os.Args[1:], os.Stdout, os.Stderr))
}
