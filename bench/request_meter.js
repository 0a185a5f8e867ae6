// Request meter for the local emulators, loaded with `node --require` (NODE_OPTIONS) by
// bench/measure_ru.py. It counts from the outside: no emulator, host or pipeline file changes.
//
// Every HTTP(S) request a Node server of this process answers (Azurite's blob, queue and table
// services; the Cosmos emulator) is appended as one JSON line to $DARKROOM_METER_FILE:
//   {t, port, method, path, ua, req_bytes, res_bytes, status, charge, headers, messages, ms}
// `headers` keeps the few request headers that tell operations apart (query / upsert /
// partition key); `messages` is the number of <QueueMessage> elements in a queue GET's answer.
// Without $DARKROOM_METER_FILE the file does nothing.
"use strict";
const fs = require("fs");
const http = require("http");
const https = require("https");

const file = process.env.DARKROOM_METER_FILE;
const KEPT_HEADERS = [
  "x-ms-documentdb-isquery",
  "x-ms-documentdb-is-upsert",
  "x-ms-documentdb-partitionkey",
  "x-ms-cosmos-is-query-plan-request",
  "content-type",
  "x-ms-blob-type",
  "x-ms-version",
];
const CAPTURE_LIMIT = 256 * 1024; // bytes of a queue GET's answer kept to count its messages

function meter(server, req, res) {
  if (req.headers["x-darkroom-internal"]) return; // the Cosmos emulator replaying its journal
  const started = process.hrtime.bigint();
  const path = req.url.split("?")[0];
  const query = req.url.includes("?") ? req.url.slice(req.url.indexOf("?") + 1) : "";
  const capture = req.method === "GET" && /\/messages$/.test(path) && !/peekonly=true/i.test(query);
  const chunks = [];
  let kept = 0;
  let sent = 0;
  let done = false;
  const count = (chunk, encoding) => {
    if (chunk === undefined || chunk === null || typeof chunk === "function") return;
    const size = Buffer.isBuffer(chunk) || chunk instanceof Uint8Array
      ? chunk.length
      : Buffer.byteLength(String(chunk), typeof encoding === "string" ? encoding : "utf8");
    sent += size;
    if (capture && kept < CAPTURE_LIMIT) {
      chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
      kept += size;
    }
  };
  const write = res.write;
  res.write = function (chunk, encoding, ...rest) {
    count(chunk, encoding);
    return write.call(this, chunk, encoding, ...rest);
  };
  const end = res.end;
  res.end = function (chunk, encoding, ...rest) {
    count(chunk, encoding);
    if (!done) {
      done = true;
      const headers = {};
      for (const name of KEPT_HEADERS) if (req.headers[name] !== undefined) headers[name] = req.headers[name];
      const body = capture ? Buffer.concat(chunks).toString("utf8") : "";
      const entry = {
        t: Date.now() / 1000,
        port: server.address() ? server.address().port : null,
        method: req.method,
        path: path.length > 400 ? path.slice(0, 400) : path,
        query: query.length > 200 ? query.slice(0, 200) : query,
        ua: req.headers["user-agent"] || "",
        req_bytes: Number(req.headers["content-length"] || 0),
        res_bytes: sent,
        status: res.statusCode,
        charge: res.getHeader("x-ms-request-charge") || null,
        headers,
        messages: capture ? (body.match(/<QueueMessage>/g) || []).length : null,
        ms: Number(process.hrtime.bigint() - started) / 1e6,
      };
      try {
        fs.appendFileSync(file, JSON.stringify(entry) + "\n");
      } catch (err) {
        // never let the meter break the emulator it measures
      }
    }
    return end.call(this, chunk, encoding, ...rest);
  };
}

if (file) {
  for (const proto of [http.Server.prototype, https.Server.prototype]) {
    const emit = proto.emit;
    proto.emit = function (event, req, res, ...rest) {
      if (event === "request") {
        try {
          meter(this, req, res);
        } catch (err) {
          // as above: measuring must not change what is measured
        }
      }
      return emit.call(this, event, req, res, ...rest);
    };
  }
}
