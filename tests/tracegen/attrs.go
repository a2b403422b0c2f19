package tracegen

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

func str(k, v string) Attr           { return Attr{Key: k, Str: v} }
func integer(k string, v int64) Attr { return Attr{Key: k, Int: v, IsInt: true} }

var routes = []string{
	"/api/cart", "/api/checkout", "/api/products/{id}", "/api/recommendations",
	"/api/shipping/quote", "/api/currency/convert", "/api/ads", "/api/orders/{id}",
}

var rpcMethods = []string{"Get", "List", "Create", "Update", "Convert", "Quote", "Charge", "Reserve"}

var topics = []string{"orders", "payments", "shipments", "notifications"}

var internalOps = []string{
	"validate-request", "render-template", "compute-price", "apply-discounts",
	"serialize-response", "check-feature-flags", "resolve-user", "build-cart-view",
}

type dbQuery struct{ system, op, table, text string }

var dbQueries = []dbQuery{
	{"postgresql", "SELECT", "products", "SELECT id, name, price FROM products WHERE id = $1"},
	{"postgresql", "INSERT", "orders", "INSERT INTO orders (id, user_id, total) VALUES ($1, $2, $3)"},
	{"postgresql", "UPDATE", "inventory", "UPDATE inventory SET reserved = reserved + $1 WHERE sku = $2"},
	{"redis", "GET", "cart", "GET cart:{user}"},
	{"redis", "SET", "session", "SET session:{id} EX 3600"},
	{"mongodb", "find", "reviews", `{"find":"reviews","filter":{"product_id":"?"}}`},
}

var eventNames = []string{"cache.miss", "retry", "message.received", "feature_flag.evaluated", "rate_limit.checked"}

var words = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"}

type exception struct{ typ, msg string }

var exceptionTypes = []exception{
	{"context.DeadlineExceeded", "context deadline exceeded"},
	{"io.ErrUnexpectedEOF", "unexpected EOF"},
	{"payment.DeclinedError", "card declined"},
	{"sql.ErrNoRows", "sql: no rows in result set"},
}

var userAgents = []string{
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
	"curl/8.10.1",
	"okhttp/4.12.0",
}

func camel(s string) string {
	var b strings.Builder
	for _, part := range strings.Split(s, "-") {
		if part == "" {
			continue
		}
		b.WriteString(strings.ToUpper(part[:1]))
		b.WriteString(part[1:])
	}
	return b.String()
}

func ip(r *rand.Rand) string {
	return fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), 1+r.IntN(254))
}

func httpServerAttrs(r *rand.Rand, route string, svc Service) []Attr {
	path := strings.ReplaceAll(route, "{id}", fmt.Sprintf("%d", 1000+r.IntN(9000)))
	status := int64(200)
	if r.IntN(20) == 0 {
		status = 500
	}
	return []Attr{
		str("http.request.method", "GET"),
		str("http.route", route),
		str("url.path", path),
		str("url.scheme", "https"),
		str("server.address", svc.Name+".shop.example"),
		integer("server.port", 443),
		integer("http.response.status_code", status),
		str("user_agent.original", userAgents[r.IntN(len(userAgents))]),
		str("client.address", ip(r)),
		str("network.protocol.version", "2"),
		str("app.tenant.id", fmt.Sprintf("tenant-%d", r.IntN(50))),
		integer("http.request.body.size", int64(r.IntN(4096))),
	}
}

func rpcClientAttrs(r *rand.Rand, rpcService, method string, target Service) []Attr {
	return []Attr{
		str("rpc.system", "grpc"),
		str("rpc.service", rpcService),
		str("rpc.method", method),
		str("server.address", target.Name),
		integer("server.port", int64(5000+target.Index)),
		integer("rpc.grpc.status_code", 0),
		str("network.peer.address", ip(r)),
		integer("network.peer.port", int64(5000+target.Index)),
		str("network.transport", "tcp"),
		integer("rpc.message.uncompressed_size", int64(64+r.IntN(8192))),
	}
}

func rpcServerAttrs(r *rand.Rand, rpcService, method string, caller Service) []Attr {
	return []Attr{
		str("rpc.system", "grpc"),
		str("rpc.service", rpcService),
		str("rpc.method", method),
		integer("rpc.grpc.status_code", 0),
		str("client.address", ip(r)),
		integer("client.port", int64(30000+r.IntN(30000))),
		str("network.transport", "tcp"),
		str("app.caller", caller.Name),
		integer("rpc.message.uncompressed_size", int64(64+r.IntN(8192))),
		str("app.request.id", fmt.Sprintf("%016x", r.Uint64())),
	}
}

func messagingAttrs(r *rand.Rand, topic, op, msgID string) []Attr {
	return []Attr{
		str("messaging.system", "kafka"),
		str("messaging.destination.name", topic),
		str("messaging.operation.type", op),
		str("messaging.operation.name", op),
		str("messaging.message.id", msgID),
		str("messaging.kafka.message.key", fmt.Sprintf("key-%d", r.IntN(1000))),
		integer("messaging.destination.partition.id", int64(r.IntN(12))),
		integer("messaging.kafka.offset", int64(r.IntN(1_000_000))),
		str("messaging.consumer.group.name", topic+"-workers"),
		integer("messaging.message.body.size", int64(100+r.IntN(2000))),
	}
}

func internalAttrs(r *rand.Rand, fn string) []Attr {
	return []Attr{
		str("code.function.name", fn),
		str("code.file.path", "/app/internal/"+strings.ReplaceAll(fn, "-", "_")+".go"),
		integer("code.line.number", int64(10+r.IntN(500))),
		str("app.user.tier", []string{"free", "pro", "enterprise"}[r.IntN(3)]),
		integer("app.items", int64(r.IntN(20))),
		str("app.region", []string{"eu-west", "us-east", "ap-south"}[r.IntN(3)]),
		str("thread.name", fmt.Sprintf("worker-%d", r.IntN(16))),
		integer("thread.id", int64(r.IntN(64))),
	}
}

func dbAttrs(r *rand.Rand, q dbQuery) []Attr {
	return []Attr{
		str("db.system.name", q.system),
		str("db.namespace", "shop"),
		str("db.operation.name", q.op),
		str("db.collection.name", q.table),
		str("db.query.text", q.text),
		str("server.address", q.system+".shop.internal"),
		integer("server.port", map[string]int64{"postgresql": 5432, "redis": 6379, "mongodb": 27017}[q.system]),
		integer("db.response.returned_rows", int64(r.IntN(100))),
		str("network.peer.address", ip(r)),
	}
}

func padAttr(r *rand.Rand, i int) Attr {
	if i%2 == 0 {
		return str(fmt.Sprintf("app.attr.s%d", i), words[r.IntN(len(words))])
	}
	return integer(fmt.Sprintf("app.attr.i%d", i), int64(r.IntN(100000)))
}
