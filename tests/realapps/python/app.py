"""The Python frontend of the real-application harness.

Run under `opentelemetry-instrument` (OpenTelemetry Python distro at its defaults): Flask makes
the SERVER span, sqlite3 the database-like leaf, requests the CLIENT span to the Node.js
service. GET /order?id=N&fanout=K&slow=MS&fail=1&uninstr=1 answers with the downstream status
and the trace ID in the X-Trace-Id header (how the harness learns which trace a request made).
GET /lookup?id=N is the same process as a backend (called by the Java service): a SERVER span
under a remote parent, and the SQLite leaf.
"""

import os
import signal
import sqlite3
import sys

import requests
from flask import Flask, Response, request
from opentelemetry import trace

app = Flask(__name__)
NODE_URL = os.environ["REALAPPS_NODE_URL"]
session = requests.Session()


def lookup(order_id):
    # One connection per request: the instrumented sqlite3.connect makes the database spans.
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        conn.execute("INSERT INTO orders (id, item) VALUES (?, ?)", (order_id, "item-%d" % order_id))
        row = conn.execute("SELECT item FROM orders WHERE id = ?", (order_id,)).fetchone()
        return row[0]
    finally:
        conn.close()


@app.route("/order")
def order():
    order_id = int(request.args.get("id", "0"))
    item = lookup(order_id)
    resp = session.get(NODE_URL + "/work", params=request.args, timeout=30)
    ctx = trace.get_current_span().get_span_context()
    out = Response("%s %s\n" % (item, resp.text.strip()), status=resp.status_code)
    out.headers["X-Trace-Id"] = format(ctx.trace_id, "032x")
    return out


@app.route("/lookup")
def lookup_route():
    return lookup(int(request.args.get("id", "0"))) + "\n"


@app.route("/health")
def health():
    return "ok\n"


def main():
    # SIGTERM: exit normally so the SDK's atexit shutdown flushes the batch processor.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app.run(host="127.0.0.1", port=int(os.environ["REALAPPS_PORT"]), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
