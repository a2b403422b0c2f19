// Package bench holds the processor-level benchmarks (results in BENCHMARKS.md): the same generated
// workload (package tracegen: several resources, 5–50 spans per trace, ~10 attributes per
// span) pushed through
//
//   - the traceconsistency processor (ConsumeTraces → Rust engine → release → sink),
//   - the contrib groupbytrace processor v0.165.1 with the same wait,
//   - a no-op passthrough processor,
//
// and a buffer-memory study that holds N traces in each buffer (in a child process per
// measurement, so RSS and the Go heap start clean).
//
// Everything here runs only with -bench (`make bench-processor`); `go test ./...` compiles
// the package and runs nothing expensive. After the benchmarks TestMain prints the result
// tables with the ratios ours/groupbytrace and ours/passthrough of the same run.
// BENCHMARKS.md at the repository root explains the method and records results.
package bench
