// Package bench holds the processor-level benchmarks (results in BENCHMARKS.md): the same generated
// workload (package tracegen: several resources, 5–50 spans per trace, ~10 attributes per
// span) pushed through
//
//   - the traceconsistency processor (ConsumeTraces → Rust engine → release → sink),
//   - the contrib groupbytrace processor v0.165.1 with the same wait,
//   - a no-op passthrough processor,
//   - roundtrip, the floor of holding batches serialized (marshal, hold, unmarshal),
//   - traceconsistency/sampling, ours with the benchmark sampling policy in the engine (keep
//     errors, keep inconsistent, 10 % of the rest, consistent mode), and roundtrip/drop90, its
//     floor: the bytes split by trace at the wire level, 90 % of the traces dropped by trace ID
//     undecoded, the rest unmarshalled (sampling.go; both on the workload without error spans,
//     both keep the same traces; dropped spans are counted through each processor's own
//     counter, so the loop's "sink has what was sent" is "sink + dropped"),
//
// and a buffer-memory study that holds N traces in each buffer (in a child process per
// measurement, so RSS and the Go heap start clean).
//
// Everything here runs only with -bench (`make bench-processor`); `go test ./...` compiles
// the package and runs nothing expensive. After the benchmarks TestMain prints the result
// tables with the ratios ours/groupbytrace and ours/passthrough of the same run, and for the
// sampling rows ours_sampling/drop90, ours_sampling/traceconsistency and the Go allocations
// of a dropped span.
// BENCHMARKS.md at the repository root explains the method and records results.
package bench
