#!/usr/bin/env node
// Local Cosmos DB (NoSQL) emulator for Darkroom, built on @vercel/cosmosdb-server.
//
//   node cosmos_server.js --port N [--host 127.0.0.1] --data DIR
//
// What the package's own CLI lacks:
//  * keep-alive: its CLI answers "connection: close", so every SDK call pays a
//    fresh TLS handshake (~35 ms instead of ~2.5 ms).
//  * durability: the package keeps everything in memory. Every successful write
//    is journaled to DIR/journal.jsonl before it is answered; at start-up the
//    journal is replayed and then compacted down to the current state.
// Prints exactly "READY <port>" on stdout once the replayed data is servable.
"use strict";
const fs = require("fs");
const https = require("https");
const path = require("path");
const { AsyncLocalStorage } = require("async_hooks");

const args = {};
for (let argv = process.argv.slice(2); argv.length; ) {
  const key = argv.shift();
  if (key.startsWith("--")) args[key.slice(2)] = argv.shift();
}
if (!/^\d+$/.test(args.port || "") || !args.data) {
  console.error("usage: node cosmos_server.js --port N [--host H] --data DIR");
  process.exit(2);
}
const host = args.host || "127.0.0.1";
fs.mkdirSync(args.data, { recursive: true });
const journalPath = path.join(args.data, "journal.jsonl");

// Two patches of package internals (pinned to 1.0.1). Both must happen before
// the package's entry point is loaded, because its router captures handlers then.
const lib = "@vercel/cosmosdb-server/lib";
// 1. A point read of a missing document dereferences undefined and answers 500
//    (which the SDK even retries); real Cosmos answers 404.
const readDocument = require(`${lib}/handler/read-document`);
const readDocumentUnpatched = readDocument.default;
readDocument.default = (account, req, res, params) => {
  try {
    return readDocumentUnpatched(account, req, res, params);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    res.statusCode = 404;
    return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
  }
};
// 2. Every write is stamped _ts = now, so a plain replay would move all data to
//    the restart time and break ORDER BY c._ts. Note the stamp each live write
//    got (per request) so it can be journaled, and force it back on replay.
const requestContext = new AsyncLocalStorage();
let forcedTs = null;
const Items = require(`${lib}/account/items`).default;
const itemsSet = Items.prototype._set;
Items.prototype._set = function (data) {
  const stored = itemsSet.call(this, forcedTs === null ? data : { ...data, _ts: forcedTs });
  const ctx = requestContext.getStore();
  if (ctx) ctx.ts = stored._ts;
  return stored;
};
const { createHttpsServer } = require("@vercel/cosmosdb-server");

let journalFd = fs.openSync(journalPath, "a");
let replaying = true; // replayed requests are on disk already
const server = createHttpsServer({ keepAlive: true });
const [packageHandler] = server.listeners("request");
server.removeAllListeners("request");
server.on("request", (req, res) => {
  const ctx = {};
  requestContext.run(ctx, () => {
    if (!replaying) journalOnSuccess(req, res, ctx);
    packageHandler(req, res);
  });
});

function journalOnSuccess(req, res, ctx) {
  if (!["POST", "PUT", "DELETE", "PATCH"].includes(req.method) || !/^\/+dbs(\/|\?|$)/.test(req.url)) return;
  const isQuery = /^true$/i.test(req.headers["x-ms-documentdb-isquery"] || "") ||
    req.headers["content-type"] === "application/query+json"; // same test as the package's router
  if (isQuery) return;
  // Safe next to the package's raw-body reader: "data" fires asynchronously,
  // after the handler has attached its own listener, and both see every chunk.
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  // Journal inside res.end, i.e. before the client can see the reply: whatever
  // was acknowledged is in the OS page cache and survives a SIGKILL.
  const end = res.end;
  res.end = function (...endArgs) {
    if (res.statusCode < 400) {
      const headers = {}; // if-match etc. are dropped on purpose: etags change on replay
      for (const [k, v] of Object.entries(req.headers)) {
        if (k === "content-type" || k.startsWith("x-ms-")) headers[k] = v;
      }
      const raw = Buffer.concat(chunks).toString();
      const ts = ctx.ts === undefined ? Math.floor(Date.now() / 1000) : ctx.ts;
      writeEntry(journalFd, req.method, req.url, headers, raw ? JSON.parse(raw) : undefined, ts);
    }
    return end.apply(this, endArgs);
  };
}

function writeEntry(fd, method, url, headers, body, ts) {
  fs.writeSync(fd, JSON.stringify({ method, url, headers, body, ts }) + "\n");
}

const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false });
function call(method, url, headers = {}, body) {
  const data = body === undefined ? "" : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request({ host, port: server.address().port, method, path: url, agent,
      headers: { ...headers, "content-length": Buffer.byteLength(data) } }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode, body: text ? JSON.parse(text) : null });
      });
    });
    req.on("error", reject);
    req.end(data);
  });
}

async function replay() {
  if (!fs.existsSync(journalPath)) return;
  const counts = { applied: 0, rejected: 0, unreadable: 0 };
  for (const line of fs.readFileSync(journalPath, "utf8").split("\n")) {
    if (!line.trim()) continue;
    let entry;
    try { entry = JSON.parse(line); } catch { counts.unreadable++; continue; } // torn by a crash
    forcedTs = Number.isInteger(entry.ts) ? entry.ts : null;
    const { status } = await call(entry.method, entry.url, entry.headers, entry.body);
    counts[status < 400 ? "applied" : "rejected"]++;
  }
  forcedTs = null;
  console.error(`cosmos_server: journal replayed: ${JSON.stringify(counts)}`);
}

const SYSTEM = new Set(["_rid", "_self", "_etag", "_ts", "_attachments", "_docs",
  "_sprocs", "_triggers", "_udfs", "_conflicts", "_colls", "_users"]);
const strip = (o) => Object.fromEntries(Object.entries(o).filter(([k]) => !SYSTEM.has(k)));
async function list(url, key) {
  const res = await call("GET", url);
  if (res.status !== 200) throw new Error(`GET ${url} -> ${res.status}`);
  return res.body[key];
}

// Rewrite the journal as the minimal one that rebuilds the current state.
async function compact() {
  const tmp = `${journalPath}.tmp`;
  const fd = fs.openSync(tmp, "w");
  const json = { "content-type": "application/json" };
  const put = (url, item, headers = json) => writeEntry(fd, "POST", url, headers, strip(item), item._ts);
  for (const db of await list("/dbs", "Databases")) {
    const dbUrl = `/dbs/${encodeURIComponent(db.id)}`;
    put("/dbs", db);
    for (const coll of await list(`${dbUrl}/colls`, "DocumentCollections")) {
      const collUrl = `${dbUrl}/colls/${encodeURIComponent(coll.id)}`;
      put(`${dbUrl}/colls`, coll); // full definition: partitionKey, indexingPolicy, uniqueKeyPolicy
      for (const udf of await list(`${collUrl}/udfs`, "UserDefinedFunctions")) put(`${collUrl}/udfs`, udf);
      // The upsert handler insists on a partition key header (the package only uses the first path).
      const pkPath = ((coll.partitionKey || {}).paths || ["/id"])[0].split("/").slice(1);
      const docs = await list(`${collUrl}/docs`, "Documents");
      for (const doc of docs.sort((a, b) => a._ts - b._ts)) {
        const pk = pkPath.reduce((v, k) => (v == null ? undefined : v[k]), doc);
        put(`${collUrl}/docs`, doc, { ...json, "x-ms-documentdb-is-upsert": "True",
          "x-ms-documentdb-partitionkey": JSON.stringify([pk === undefined ? null : pk]) });
      }
    }
  }
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.closeSync(journalFd);
  fs.renameSync(tmp, journalPath); // atomic: a crash leaves one journal or the other intact
  const dirFd = fs.openSync(args.data, "r");
  fs.fsyncSync(dirFd);
  fs.closeSync(dirFd);
  journalFd = fs.openSync(journalPath, "a");
}

function shutdown() {
  server.close(() => process.exit(0)); // also drops idle keep-alive sockets
  setTimeout(() => process.exit(0), 2000).unref(); // a busy client must not block exit
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
server.on("error", (err) => {
  console.error(`cosmos_server: ${err.message}`);
  process.exit(1);
});
server.listen(Number(args.port), host, async () => {
  try {
    await replay();
    await compact();
  } catch (err) {
    console.error(`cosmos_server: start-up failed: ${err.stack || err}`);
    process.exit(1);
  }
  replaying = false;
  console.log(`READY ${server.address().port}`);
});
