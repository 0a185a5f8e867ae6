#!/usr/bin/env node
// Local Cosmos DB (NoSQL) emulator for Darkroom, built on @vercel/cosmosdb-server.
//
//   DARKROOM_COSMOS_EMULATOR_KEY=<base64 key> \
//   node cosmos_server.js --port N [--host 127.0.0.1] --data DIR [--salvage]
//
// What the package's own CLI lacks:
//  * keep-alive: its CLI answers "connection: close", so every SDK call pays a
//    fresh TLS handshake (~35 ms instead of ~2.5 ms).
//  * authentication: the package accepts anyone. Every request must carry the
//    master-key signature real Cosmos checks (type=master&ver=1.0&sig=...), made
//    with the key of the DARKROOM_COSMOS connection string; otherwise 401.
//  * durability: the package keeps everything in memory. Every successful write
//    is journaled to DIR/journal.jsonl before it is answered; at start-up the
//    journal is checked, replayed and then compacted down to the current state.
//    A damaged journal is never compacted over: the server refuses to start
//    (exit 3, "JOURNAL-DAMAGED {...}" on stderr) unless --salvage says to keep
//    only the readable entries.
//  * vector search: VectorDistance, ORDER BY VectorDistance(...) and containers with a
//    vectorEmbeddingPolicy, as Azure runs them (cosmos_vector.js, patch 3 below).
//  * full-text search: FullTextContains/All/Any, ORDER BY RANK FullTextScore(...) (BM25) and
//    RRF(...) (hybrid with VectorDistance), OFFSET ... LIMIT, and containers with a
//    fullTextPolicy and fullTextIndexes, as Azure runs them (cosmos_fulltext.js, patch 4 below).
// Prints exactly "READY <port>" on stdout once the replayed data is servable.
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const https = require("https");
const path = require("path");
const { AsyncLocalStorage } = require("async_hooks");

const args = {};
for (let argv = process.argv.slice(2); argv.length; ) {
  const key = argv.shift();
  if (key === "--salvage") args.salvage = true;
  else if (key.startsWith("--")) args[key.slice(2)] = argv.shift();
}
if (!/^\d+$/.test(args.port || "") || !args.data) {
  console.error("usage: node cosmos_server.js --port N [--host H] --data DIR [--salvage]");
  process.exit(2);
}
// The key comes from the environment (set by local/emulators from DARKROOM_COSMOS), never from
// the command line (visible to every user in ps) and never from this file.
const masterKey = Buffer.from(process.env.DARKROOM_COSMOS_EMULATOR_KEY || "", "base64");
if (masterKey.length === 0) {
  console.error("cosmos_server: DARKROOM_COSMOS_EMULATOR_KEY (the AccountKey of DARKROOM_COSMOS) is not set");
  process.exit(2);
}
const host = args.host || "127.0.0.1";
fs.mkdirSync(args.data, { recursive: true });
const journalPath = path.join(args.data, "journal.jsonl");
const previousPath = `${journalPath}.previous`;

// ------------------------------------------------------------------ journal format
// Version 2, one entry per line: "<checksum>\t<json>\n", checksum = first 16 hex digits of
// SHA-256 over the JSON text. JSON.parse alone cannot tell "dog" from "dOg": the checksum
// catches damage inside a line that still parses. Line 1 is a header naming how many entries
// the compacted body holds ("base"), and entries carry consecutive "seq" numbers, so a
// journal cut short or missing lines in the middle is detected too. The only damage that is
// tolerated silently is a last line without its newline: a crash in the middle of an append,
// whose write was never acknowledged. Journals of version 1 (plain JSON lines, no header) are
// still read, with what can be checked there (each line parses as an entry), and rewritten as
// version 2 by the first compaction.
const HEADER = "darkroom-cosmos-journal";
const checksum = (text) => crypto.createHash("sha256").update(text).digest("hex").slice(0, 16);
const formatLine = (value) => {
  const json = JSON.stringify(value);
  return `${checksum(json)}\t${json}\n`;
};
const METHODS = new Set(["POST", "PUT", "DELETE", "PATCH"]);
const isEntry = (e) => e !== null && typeof e === "object" && METHODS.has(e.method) &&
  typeof e.url === "string" && /^\/+dbs(\/|\?|$)/.test(e.url) &&
  (e.headers === undefined || (e.headers !== null && typeof e.headers === "object"));

// Check a journal's text. Returns the readable entries in order and every problem found, each
// with its 1-based line number; never throws on bad data.
function readJournal(text) {
  const lines = text.split("\n");
  const tail = lines.pop(); // "" when the file ends with a newline, as every complete write does
  const out = { entries: [], problems: [], lines: lines.length, torn: false, format: null, base: 0 };
  const problem = (line, reason) => { out.problems.push({ line, reason }); return false; };
  if (lines.length === 0 && !tail) return out;
  // Version 2 if any line has the checksum form: one damaged byte cannot make it look like 1.
  out.format = [...lines, tail].some((l) => /^[0-9a-f]{16}\t/.test(l)) ? 2 : 1;
  let lastSeq = 0;
  lines.forEach((line, index) => {
    // An unreadable entry line still held one entry: the next one is not also "missing".
    if (!check(line, index + 1) && out.format === 2 && index > 0) lastSeq += 1;
  });
  // Returns whether the line could be read; records what is wrong with it either way.
  function check(line, n) {
    if (out.format === 1) {
      let entry;
      try { entry = JSON.parse(line); } catch { return problem(n, "not valid JSON"); }
      if (!isEntry(entry)) return problem(n, "not a journal entry");
      out.entries.push(entry);
      return true;
    }
    const match = /^([0-9a-f]{16})\t(.*)$/.exec(line);
    if (!match) return problem(n, "no checksum (not a journal line)");
    if (checksum(match[2]) !== match[1]) return problem(n, "checksum mismatch (bytes changed)");
    let value;
    try { value = JSON.parse(match[2]); } catch { return problem(n, "not valid JSON"); }
    if (n === 1) {
      if (!value || value.journal !== HEADER || value.version !== 2 || !Number.isInteger(value.base)) {
        return problem(n, "line 1 is not the journal header");
      }
      out.base = value.base;
      return true;
    }
    if (!isEntry(value) || !Number.isInteger(value.seq)) return problem(n, "not a journal entry");
    if (value.seq !== lastSeq + 1) {
      problem(n, value.seq > lastSeq + 1
        ? `entries ${lastSeq + 1}..${value.seq - 1} are missing before this line`
        : `entry ${value.seq} is out of order`);
    }
    lastSeq = Math.max(lastSeq, value.seq);
    out.entries.push(value);
    return true;
  }
  if (out.format === 2 && lines.length === 0) problem(1, "the journal header is incomplete");
  if (out.format === 2 && lastSeq < out.base) {
    // Compacted entries are fsynced before the rename: a crash cannot lose them, damage can.
    problem(lines.length + (tail ? 1 : 0), `the journal ends after entry ${lastSeq} of at least ${out.base}: it was cut short`);
  } else if (tail) {
    out.torn = true; // a crash mid-append; that write was never answered
  }
  return out;
}

// Keep a damaged journal aside (one copy per distinct content) before anything else happens.
function keepAside(text) {
  const dir = path.dirname(journalPath);
  const base = path.basename(journalPath);
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith(`${base}.damaged-`) && fs.readFileSync(path.join(dir, name), "utf8") === text) {
      return path.join(dir, name);
    }
  }
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  const copy = `${journalPath}.damaged-${stamp}`;
  fs.writeFileSync(copy, text, { flag: "wx" });
  return copy;
}

const journalText = fs.existsSync(journalPath) ? fs.readFileSync(journalPath, "utf8") : "";
const journal = readJournal(journalText);
let damagedCopy = null;
if (journal.problems.length) {
  damagedCopy = keepAside(journalText);
  const report = {
    journal: journalPath,
    copy: damagedCopy,
    previous: fs.existsSync(previousPath) ? previousPath : null,
    line: journal.problems[0].line,
    reason: journal.problems[0].reason,
    problems: journal.problems.length,
    readable: journal.entries.length,
    lines: journal.lines + (journal.torn ? 1 : 0),
    salvaged: Boolean(args.salvage),
  };
  console.error(`JOURNAL-DAMAGED ${JSON.stringify(report)}`);
  if (!args.salvage) process.exit(3); // nothing was served, nothing was rewritten
}

// ------------------------------------------------------------------ package patches
// Four patches of package internals (pinned to 1.0.1). All must happen before
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
// 3. Vector search (VectorDistance, ORDER BY VectorDistance, vector container policies) and
//    linear-time FROM: see cosmos_vector.js. A container whose vector policy Azure would
//    refuse is refused here too (400), instead of being stored and failing later.
const vector = require("./cosmos_vector");
vector.install(Items);
// 4. Full-text search (FullTextContains*, ORDER BY RANK FullTextScore / RRF, OFFSET LIMIT, the
//    full-text policy): see cosmos_fulltext.js, which builds on patch 3 (loaded after it). A
//    container whose full-text policy Azure would refuse (or whose language the emulator does
//    not analyse: en-US only) is refused here too (400).
const fulltext = require("./cosmos_fulltext");
fulltext.install(Items);
const Collections = require(`${lib}/account/collections`).default;
const collectionsCreate = Collections.prototype.create;
Collections.prototype.create = function (data) {
  const problem = vector.vectorPolicyProblem(data || {}) || fulltext.fullTextPolicyProblem(data || {});
  if (problem) throw Object.assign(new Error(problem), { policyProblem: true });
  return collectionsCreate.call(this, data);
};
const createCollection = require(`${lib}/handler/create-collection`);
const createCollectionUnpatched = createCollection.default;
createCollection.default = async (account, req, res, params) => {
  try {
    return await createCollectionUnpatched(account, req, res, params);
  } catch (err) {
    if (!err.policyProblem) throw err;
    res.statusCode = 400;
    return { code: "BadRequest", message: err.message };
  }
};
const { createHttpsServer } = require("@vercel/cosmosdb-server");

// ------------------------------------------------------------------ authentication
// Real Cosmos: authorization = url-encoded "type=master&ver=1.0&sig=<base64 HMAC-SHA256>", the
// HMAC keyed with the base64-decoded master key over
//   verb.lower + "\n" + resourceType.lower + "\n" + resourceLink + "\n" + x-ms-date.lower + "\n" + date.lower + "\n"
// resourceLink keeps the names' case; x-ms-date is RFC 1123 and must be within 15 minutes.
const SKEW_MS = 15 * 60 * 1000;
function resourceOf(url) {
  const segments = url.split("?")[0].split("/").filter(Boolean).map((s) => {
    try { return decodeURIComponent(s); } catch { return s; }
  });
  if (segments.length === 0) return { type: "", link: "" }; // the database account
  if (segments.length % 2 === 1) {
    return { type: segments[segments.length - 1], link: segments.slice(0, -1).join("/") }; // a feed
  }
  return { type: segments[segments.length - 2], link: segments.join("/") }; // one resource
}
function authProblem(req) {
  let token = req.headers.authorization;
  if (!token) return [401, "Required Header authorization is missing. Ensure a valid Authorization token is passed."];
  try { token = decodeURIComponent(token); } catch { return [401, "The authorization header is malformed."]; }
  const fields = {};
  for (const part of token.split("&")) {
    const eq = part.indexOf("=");
    if (eq > 0) fields[part.slice(0, eq)] = part.slice(eq + 1);
  }
  if (fields.type !== "master" || fields.ver !== "1.0" || !fields.sig) {
    return [401, "The authorization token is not a master key token (type=master&ver=1.0&sig=...)."];
  }
  const xDate = req.headers["x-ms-date"] || "";
  const httpDate = req.headers.date || "";
  const when = Date.parse(xDate || httpDate);
  if (Number.isNaN(when)) return [401, "The request has no valid x-ms-date header."];
  if (Math.abs(Date.now() - when) > SKEW_MS) {
    return [403, "The authorization token is not valid at the current time (x-ms-date is more than 15 minutes off)."];
  }
  const { type, link } = resourceOf(req.url);
  const text = `${req.method.toLowerCase()}\n${type.toLowerCase()}\n${link}\n${xDate.toLowerCase()}\n${httpDate.toLowerCase()}\n`;
  const expected = crypto.createHmac("sha256", masterKey).update(text, "utf8").digest();
  const given = Buffer.from(fields.sig, "base64");
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    return [401, "The input authorization token can't serve the request. The wrong key is being used " +
      "or the expected payload is not built as per the protocol."];
  }
  return null;
}
function refuse(res, status, message) {
  const body = JSON.stringify({ code: status === 401 ? "Unauthorized" : status === 403 ? "Forbidden" : "ServiceUnavailable", message });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

// ------------------------------------------------------------------ server
let journalFd = null;
let seq = 0; // last journal entry number
// Start-up replays through the server's own HTTPS port; those calls carry this one-time token
// instead of a signature. While replaying, nothing else is served: a write answered then would
// not be journaled.
const internalToken = crypto.randomBytes(24).toString("hex");
let replaying = true;
const server = createHttpsServer({ keepAlive: true });
// Node closes an idle keep-alive connection after 5 s; Cosmos DB's gateway keeps them far longer.
// At 5 s a worker's less busy connections were dropped and re-opened with a new TLS handshake.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
const [packageHandler] = server.listeners("request");
server.removeAllListeners("request");
server.on("request", (req, res) => {
  if (replaying) {
    if (req.headers["x-darkroom-internal"] !== internalToken) {
      req.resume();
      return refuse(res, 503, "The emulator is replaying its journal; try again in a moment.");
    }
  } else {
    const problem = authProblem(req);
    if (problem) {
      req.resume();
      return refuse(res, ...problem);
    }
  }
  const ctx = {};
  requestContext.run(ctx, () => {
    if (!replaying) journalOnSuccess(req, res, ctx);
    packageHandler(req, res);
  });
});

function journalOnSuccess(req, res, ctx) {
  if (!METHODS.has(req.method) || !/^\/+dbs(\/|\?|$)/.test(req.url)) return;
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
      const headers = {}; // if-match, x-ms-date etc. are dropped on purpose: they change on replay
      for (const [k, v] of Object.entries(req.headers)) {
        if (k === "content-type" || (k.startsWith("x-ms-") && k !== "x-ms-date")) headers[k] = v;
      }
      const raw = Buffer.concat(chunks).toString();
      const ts = ctx.ts === undefined ? Math.floor(Date.now() / 1000) : ctx.ts;
      seq += 1;
      writeEntry(journalFd, { seq, method: req.method, url: req.url, headers, body: raw ? JSON.parse(raw) : undefined, ts });
    }
    return end.apply(this, endArgs);
  };
}

function writeEntry(fd, entry) {
  fs.writeSync(fd, formatLine(entry));
}

const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false });
function call(method, url, headers = {}, body) {
  const data = body === undefined ? "" : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request({ host, port: server.address().port, method, path: url, agent,
      headers: { ...headers, "x-darkroom-internal": internalToken, "content-length": Buffer.byteLength(data) } }, (res) => {
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
  const counts = { applied: 0, rejected: 0, format: journal.format, torn_last_line: journal.torn,
    skipped_damaged: journal.problems.length };
  for (const entry of journal.entries) {
    forcedTs = Number.isInteger(entry.ts) ? entry.ts : null;
    const { status } = await call(entry.method, entry.url, entry.headers, entry.body);
    counts[status < 400 ? "applied" : "rejected"]++;
  }
  forcedTs = null;
  return counts;
}

const SYSTEM = new Set(["_rid", "_self", "_etag", "_ts", "_attachments", "_docs",
  "_sprocs", "_triggers", "_udfs", "_conflicts", "_colls", "_users"]);
const strip = (o) => Object.fromEntries(Object.entries(o).filter(([k]) => !SYSTEM.has(k)));
async function list(url, key) {
  const res = await call("GET", url);
  if (res.status !== 200) throw new Error(`GET ${url} -> ${res.status}`);
  return res.body[key];
}

// Rewrite the journal as the minimal one that rebuilds the current state. Only ever called
// on a journal that was read completely (or, with --salvage, after the damaged one was kept
// aside). The journal just replayed stays as journal.jsonl.previous until the next start.
async function compact() {
  const entries = [];
  const json = { "content-type": "application/json" };
  const put = (url, item, headers = json) => entries.push(
    { seq: entries.length + 1, method: "POST", url, headers, body: strip(item), ts: item._ts });
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
  const tmp = `${journalPath}.tmp`;
  const fd = fs.openSync(tmp, "w");
  fs.writeSync(fd, formatLine({ journal: HEADER, version: 2, base: entries.length }));
  for (const entry of entries) writeEntry(fd, entry);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  if (fs.existsSync(journalPath) && !damagedCopy) {
    fs.rmSync(previousPath, { force: true });
    fs.linkSync(journalPath, previousPath); // a second name, so the rename below keeps it
  }
  fs.renameSync(tmp, journalPath); // atomic: a crash leaves one journal or the other intact
  const dirFd = fs.openSync(args.data, "r");
  fs.fsyncSync(dirFd);
  fs.closeSync(dirFd);
  seq = entries.length;
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
    const counts = await replay();
    console.error(`JOURNAL-REPLAYED ${JSON.stringify({ ...counts, previous: previousPath })}`);
    await compact();
  } catch (err) {
    console.error(`cosmos_server: start-up failed: ${err.stack || err}`);
    process.exit(1);
  }
  replaying = false;
  console.log(`READY ${server.address().port}`);
});
