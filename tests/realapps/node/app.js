// The Node.js service of the real-application harness, run with
// `node --require @opentelemetry/auto-instrumentations-node/register app.js` (the SDK and every
// default instrumentation at their defaults). GET /work calls the Java service's /compute
// `fanout` times concurrently (at least once) and answers 500 when any call failed.
'use strict';

const http = require('http');
const express = require('express');

const javaURL = new URL(process.env.REALAPPS_JAVA_URL);
const port = Number(process.env.REALAPPS_PORT);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function callJava(query) {
  return new Promise((resolve) => {
    const req = http.get(
      { host: javaURL.hostname, port: javaURL.port, path: '/compute?' + query, agent, timeout: 30000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => { body += c; });
        res.on('end', () => resolve({ status: res.statusCode, body: body.trim() }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 502, body: String(err) }));
  });
}

const app = express();

app.get('/work', async (req, res) => {
  const fanout = Math.max(1, Number(req.query.fanout || '1'));
  const query = new URLSearchParams(req.query).toString();
  const calls = [];
  for (let i = 0; i < fanout; i++) calls.push(callJava(query));
  const results = await Promise.all(calls);
  const failed = results.some((r) => r.status >= 500);
  res.status(failed ? 500 : 200).send(results.map((r) => r.body).join(' ') + '\n');
});

app.get('/health', (req, res) => res.send('ok\n'));

const server = app.listen(port, '127.0.0.1');
// The register hook shuts the SDK down (and flushes) on SIGTERM; close the server so the
// process can exit.
process.on('SIGTERM', () => server.close());
