// Command goservice is the Go service of the real-application harness: net/http wrapped in
// otelhttp, exporting with the Go SDK's otlptracehttp exporter through its batch span
// processor, both configured only by the standard OTEL_* environment variables (the batch
// delay by OTEL_BSP_SCHEDULE_DELAY). GET /leaf?slow=MS&fail=1 sleeps MS milliseconds and
// answers 500 when fail=1.
package main

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func main() {
	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		log.Fatalf("goservice: exporter: %v", err)
	}
	// The SDK's default resource (service name from OTEL_SERVICE_NAME, telemetry.sdk.*).
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("/leaf", otelhttp.NewHandler(http.HandlerFunc(leaf), "GET /leaf"))
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("REALAPPS_PORT"))
	if err != nil {
		log.Fatalf("goservice: listen: %v", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("goservice: serve: %v", err)
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := tp.Shutdown(sctx); err != nil {
		log.Printf("goservice: shutdown: %v", err)
	}
}

func leaf(w http.ResponseWriter, r *http.Request) {
	if ms, _ := strconv.Atoi(r.URL.Query().Get("slow")); ms > 0 {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	if r.URL.Query().Get("fail") == "1" {
		http.Error(w, "leaf failed", http.StatusInternalServerError)
		return
	}
	_, _ = w.Write([]byte("leaf\n"))
}
