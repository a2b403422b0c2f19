/*
 * The C ABI exercised from C, meant to run under valgrind (make test-c): garbage, empty and
 * NULL input return error codes with messages; a round trip ingest -> tick -> drain works;
 * every handle is freed exactly once (valgrind reports leaks and invalid accesses).
 *
 * The request bytes below are hand-encoded OTLP: one ResourceSpans with one ScopeSpans
 * holding two spans of one trace (a root and its child).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "traceconsistency.h"

static int failures = 0;
static int passes = 0;

#define CHECK(cond, what)                                                  \
  do {                                                                     \
    if (cond) {                                                            \
      passes++;                                                            \
    } else {                                                               \
      failures++;                                                          \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, what);       \
    }                                                                      \
  } while (0)

/* Appends a varint. */
static size_t put_varint(uint8_t *out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

/* Encodes a Span: trace_id(1) span_id(2) parent(4) name(5) start(7) end(8). */
static size_t encode_span(uint8_t *out, uint8_t span, uint8_t parent, uint64_t start, uint64_t end) {
  size_t n = 0;
  out[n++] = 0x0a; out[n++] = 16;
  for (int i = 0; i < 16; i++) out[n++] = (uint8_t)(0x10 + i);
  out[n++] = 0x12; out[n++] = 8;
  for (int i = 0; i < 7; i++) out[n++] = 0;
  out[n++] = span;
  if (parent) {
    out[n++] = 0x22; out[n++] = 8;
    for (int i = 0; i < 7; i++) out[n++] = 0;
    out[n++] = parent;
  }
  out[n++] = 0x2a; out[n++] = 2; out[n++] = 'o'; out[n++] = 'p';
  out[n++] = 0x39; memcpy(out + n, &start, 8); n += 8; /* little-endian host */
  out[n++] = 0x41; memcpy(out + n, &end, 8); n += 8;
  return n;
}

static size_t encode_request(uint8_t *out, uint64_t t0) {
  uint8_t spans[256], scope[300], rs[320];
  size_t sn = 0;
  uint8_t s1[80], s2[80];
  size_t l1 = encode_span(s1, 1, 0, t0 - 100, t0 - 10);
  size_t l2 = encode_span(s2, 2, 1, t0 - 90, t0 - 20);
  spans[sn++] = 0x12; sn += put_varint(spans + sn, l1); memcpy(spans + sn, s1, l1); sn += l1;
  spans[sn++] = 0x12; sn += put_varint(spans + sn, l2); memcpy(spans + sn, s2, l2); sn += l2;
  size_t cn = 0;
  scope[cn++] = 0x12; cn += put_varint(scope + cn, sn); memcpy(scope + cn, spans, sn); cn += sn;
  size_t rn = 0;
  rs[rn++] = 0x0a; rn += put_varint(rs + rn, cn); memcpy(rs + rn, scope, cn); rn += cn;
  memcpy(out, rs, rn);
  return rn;
}

int main(void) {
  tc_config cfg;
  CHECK(tc_config_default(&cfg) == TC_RESULT_OK, "defaults");
  cfg.hlc_restart = TC_RESTART_STRATEGY_NONE;
  tc_error err;
  tc_engine *engine = NULL;

  /* A bad config names its key and writes no engine. */
  tc_config bad = cfg;
  bad.max_buffered_spans = 0;
  CHECK(tc_engine_new(&bad, &engine, &err) == TC_RESULT_INVALID_CONFIG, "invalid config refused");
  CHECK(engine == NULL, "no engine on failure");
  CHECK(strstr(err.message, "max_buffered_spans") != NULL, "message names the key");

  CHECK(tc_engine_new(&cfg, &engine, &err) == TC_RESULT_OK, "engine created");

  /* Garbage, an empty buffer, NULL data, NULL engine. */
  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03};
  CHECK(tc_engine_ingest(engine, garbage, sizeof garbage, 1, 1, NULL, &err) == TC_RESULT_MALFORMED_INPUT, "garbage refused");
  CHECK(strlen(err.message) > 0, "garbage has a message");
  CHECK(tc_engine_ingest(engine, NULL, 0, 1, 1, NULL, &err) == TC_RESULT_EMPTY_INPUT, "zero length refused");
  CHECK(tc_engine_ingest(engine, NULL, 5, 1, 1, NULL, &err) == TC_RESULT_NULL_ARGUMENT, "NULL data refused");
  CHECK(tc_engine_ingest(NULL, garbage, sizeof garbage, 1, 1, NULL, &err) == TC_RESULT_NULL_ARGUMENT, "NULL engine refused");
  char buf[128];
  size_t full = tc_last_error(buf, sizeof buf);
  CHECK(full > 0 && strstr(buf, "engine") != NULL, "last error readable");

  /* Round trip. */
  const uint64_t t0 = 1790000000000000000ULL;
  uint8_t req[512];
  size_t len = encode_request(req, t0);
  tc_ingest_result res;
  CHECK(tc_engine_ingest(engine, req, len, t0, t0, &res, &err) == TC_RESULT_OK, "valid request ingested");
  CHECK(res.buffered == 2, "two spans buffered");
  uint64_t ready = 0;
  CHECK(tc_engine_tick(engine, t0 + 2000000000ULL, t0 + 2000000000ULL, &ready, &err) == TC_RESULT_OK, "tick");
  CHECK(ready == 2, "complete trace ready after the quiet period");
  tc_release *rel = NULL;
  tc_release_view view;
  CHECK(tc_engine_drain(engine, 100, &rel, &view, &err) == TC_RESULT_OK, "drain");
  CHECK(rel != NULL && view.spans == 2 && view.units_len == 1, "one unit of two spans");
  CHECK(view.units_len == 1 && view.units[0].reason == TC_RELEASE_REASON_COMPLETE, "released complete");
  CHECK(view.otlp_len > len, "output carries the written attributes");
  tc_release_free(rel);
  CHECK(tc_engine_drain(engine, 100, &rel, &view, &err) == TC_RESULT_OK && rel == NULL, "nothing more");

  /* An exact re-send after release is a duplicate; changed spans of the released trace
     are late. Shutdown releases what is buffered; freeing with data still queued does not
     leak. */
  CHECK(tc_engine_ingest(engine, req, len, t0, t0, &res, &err) == TC_RESULT_OK, "re-send ingested");
  uint8_t req2[512];
  size_t len2 = encode_request(req2, t0 + 5);
  CHECK(tc_engine_ingest(engine, req2, len2, t0, t0, &res, &err) == TC_RESULT_OK, "late ingest");
  CHECK(tc_engine_shutdown(engine, t0, t0, &ready, &err) == TC_RESULT_OK, "shutdown");
  tc_stats stats;
  CHECK(tc_engine_stats(engine, &stats) == TC_RESULT_OK, "stats");
  if (!(stats.batches_refused == 2 && stats.late_forwarded == 2 && stats.duplicates_dropped == 2))
    fprintf(stderr, "refused=%llu late=%llu duplicates=%llu\n", (unsigned long long)stats.batches_refused,
            (unsigned long long)stats.late_forwarded, (unsigned long long)stats.duplicates_dropped);
  CHECK(stats.batches_refused == 2 && stats.late_forwarded == 2 && stats.duplicates_dropped == 2, "counters");
  CHECK(tc_engine_drain_handoff(engine, 100, &rel, &view, &err) == TC_RESULT_OK && rel == NULL, "no hand-off without hand-off settings");

  /* Export lags: one service seen (the requests have no resource: an empty service.name),
     just started, so taken as the SDKs' default delay; no room in out, none written. */
  tc_export_lag lags[4];
  uint8_t names[64];
  size_t nlags = 99;
  CHECK(tc_engine_export_lags(engine, t0, lags, 4, names, sizeof names, &nlags) == TC_RESULT_OK && nlags == 1, "one export lag");
  CHECK(nlags == 1 && lags[0].name_len == 0 && lags[0].lag_ns == 5000000000ULL, "the lag of the unnamed service");
  CHECK(tc_engine_export_lags(engine, t0, NULL, 0, names, sizeof names, &nlags) == TC_RESULT_OK && nlags == 0, "no room");
  CHECK(tc_engine_export_lags(engine, t0, lags, 4, names, sizeof names, NULL) == TC_RESULT_NULL_ARGUMENT, "NULL len_out refused");
  tc_engine_free(engine);

  /* Hand-off on shutdown: the buffered trace leaves through tc_engine_drain_handoff, not
     tc_engine_drain; NULL arguments are refused; a second engine strips the marker. */
  tc_config hcfg = cfg;
  hcfg.handoff_on_shutdown = true;
  hcfg.handoff_max_hops = 0;
  CHECK(tc_engine_new(&hcfg, &engine, &err) == TC_RESULT_INVALID_CONFIG && strstr(err.message, "handoff.max_hops") != NULL,
        "handoff.max_hops 0 refused");
  hcfg.handoff_max_hops = 1;
  CHECK(tc_engine_new(&hcfg, &engine, &err) == TC_RESULT_INVALID_CONFIG && strstr(err.message, "handoff.key") != NULL,
        "hand-off without handoff.key refused");
  hcfg.handoff_key = "a secret of the balancing tier";
  CHECK(tc_engine_new(&hcfg, &engine, &err) == TC_RESULT_OK, "hand-off engine created");
  CHECK(tc_engine_ingest(engine, req, len, t0, t0, &res, &err) == TC_RESULT_OK, "ingest before hand-off");
  CHECK(tc_engine_shutdown(engine, t0, t0, &ready, &err) == TC_RESULT_OK && ready == 2, "shutdown hands off");
  CHECK(tc_engine_drain(engine, 100, &rel, &view, &err) == TC_RESULT_OK && rel == NULL, "nothing released");
  CHECK(tc_engine_drain_handoff(NULL, 100, &rel, &view, &err) == TC_RESULT_NULL_ARGUMENT, "NULL engine refused");
  CHECK(tc_engine_drain_handoff(engine, 100, NULL, &view, &err) == TC_RESULT_NULL_ARGUMENT, "NULL release_out refused");
  CHECK(tc_engine_drain_handoff(engine, 100, &rel, &view, &err) == TC_RESULT_OK && rel != NULL, "hand-off drained");
  CHECK(view.spans == 2 && view.units_len == 1 && view.units[0].reason == TC_RELEASE_REASON_SHUTDOWN, "one trace, cause shutdown");
  tc_engine *owner = NULL, *stranger = NULL;
  tc_config ocfg = cfg;
  ocfg.handoff_key = hcfg.handoff_key;
  CHECK(tc_engine_new(&ocfg, &owner, &err) == TC_RESULT_OK, "receiving engine created");
  CHECK(tc_engine_ingest(owner, view.otlp, view.otlp_len, t0 + 1, t0 + 1, &res, &err) == TC_RESULT_OK && res.buffered == 2, "hand-off ingested");
  CHECK(tc_engine_new(&cfg, &stranger, &err) == TC_RESULT_OK, "engine without the key created");
  CHECK(tc_engine_ingest(stranger, view.otlp, view.otlp_len, t0 + 1, t0 + 1, &res, &err) == TC_RESULT_OK && res.buffered == 2, "hand-off ingested without the key");
  tc_release_free(rel);
  CHECK(tc_engine_stats(owner, &stats) == TC_RESULT_OK && stats.handoff_received_spans == 2 && stats.handoff_untrusted_spans == 0,
        "hand-off counted on receipt");
  CHECK(tc_engine_stats(stranger, &stats) == TC_RESULT_OK && stats.handoff_received_spans == 0 && stats.handoff_untrusted_spans == 2,
        "without the key the markers are not honoured");
  tc_engine_free(stranger);
  tc_engine_free(owner);
  tc_engine_free(engine);

  printf("%d passed, %d failed\n", passes, failures);
  return failures == 0 ? 0 : 1;
}
