// Full-text search for the local Cosmos emulator (@zeit/cosmosdb-query 0.7.2, as pinned by
// @vercel/cosmosdb-server 1.0.1), so the queries Azure Cosmos DB for NoSQL runs for a search by
// words,
//
//   SELECT * FROM c WHERE c.owner = @owner AND FullTextContainsAny(c.search.text, @w0, @w1)
//   ORDER BY RANK FullTextScore(c.search.text, @w0, @w1) OFFSET @offset LIMIT @limit
//   ... ORDER BY RANK RRF(FullTextScore(c.search.text, @w0), VectorDistance(c.search.vector, @v))
//
// run here unchanged. Like cosmos_vector.js (which must be loaded first), nothing inside
// node_modules is edited: this module wraps the parser's and the transformer's module functions
// and adds to the built-in functions and helpers.
//
// Text analysis (en-US; the only language accepted in a fullTextPolicy here): tokens are the
// maximal runs of Unicode letters and digits (\p{L}, \p{N}), a single apostrophe (' or U+2019)
// between two of them staying inside the token; each token is lower-cased, dropped if it is in
// the Snowball English stop-word list (https://snowballstem.org/algorithms/english/stop.txt),
// and stemmed with the Snowball English (Porter2) stemmer (npm snowball-stemmers). Everything
// else (punctuation, quotes, control characters, "AND"/"OR"/"-": no operators) separates
// tokens. Azure does not document its tokenizer or stop words; these are the published ones.
//
//  * FullTextContains(path, term), FullTextContainsAll(path, t1, t2, ...),
//    FullTextContainsAny(path, t1, ...): a term matches when its analysed tokens occur in the
//    field's analysed tokens consecutively, in order (stop words are removed from both sides
//    first, so "dog on beach" matches "dog. Beach"). A term with no tokens left (stop words
//    only, punctuation) matches nothing. A field that is not a string gives undefined (the row
//    fails the WHERE, as with NOT). Terms are strings (or arrays of strings): literals or
//    parameters; anything else is a 400.
//  * ORDER BY RANK FullTextScore(path, t1, ...): BM25 (k1 = 1.2, b = 0.75, Lucene's
//    idf = ln(1 + (N - n + 0.5) / (n + 0.5))), summed over the terms; tf is the number of
//    (overlapping) places a term's tokens occur, |D| the field's token count. N, the average
//    |D| and n per term are over every document of the container, whatever the WHERE says: what
//    Azure's query plan computes (SELECT COUNT(1), SUM(_FullTextWordCount(path)),
//    COUNTIF(FullTextContains(path, term)) ... FROM c, no WHERE) and the SDK's default
//    full_text_score_scope "Global" ("statistics are computed across all documents in the
//    container"). Most relevant first; equal scores by _rid; rows whose field is not a string
//    score -1 (Azure's "?? -1"), so they come last. A row with score 0 (none of the terms) is
//    still a row: filter with FullTextContains* in WHERE.
//  * ORDER BY RANK RRF(s1, s2, ... [, weights]): s = FullTextScore(...) or VectorDistance(...).
//    Each component ranks the rows that passed the WHERE by its own order (FullTextScore:
//    higher first; VectorDistance: most similar first, by the container's distance function as
//    cosmos_vector.js decides it; no score: last), ranks dense (equal scores share a rank, the
//    next score gets the next rank: the SDK's _compute_ranks), and the row scores
//    sum(weight_i / (60 + rank_i)). weights is an array of numbers, one per component (default
//    1 each); a negative weight ranks that component the other way round with |weight|, as
//    Azure's query plans do ("componentWeights": [1.0, 0.3] and ORDER BY ... ASC for [1, -0.3]).
//    Azure ranks within the union of each component's top candidates (its plans ask each
//    component for TOP 120 when the query asks TOP 10); this emulator ranks every row that
//    passed the WHERE, so far down the list the two can differ.
//  * ORDER BY RANK takes one scoring function, no ASC/DESC, and needs TOP or OFFSET ... LIMIT
//    (the Azure SDKs refuse a ranked query without one); FullTextScore and RRF anywhere else
//    (a projection, WHERE, plain ORDER BY) are a 400, as on Azure.
//  * OFFSET <n> LIMIT <m> (numbers or parameters) at the end of a query, which the package's
//    parser does not know at all, works for every query: skip n, take m after ORDER BY.
// Each document's analysed field is kept (token ids, keyed by the document object and path, so
// replaced and deleted documents are forgotten with them): only the first query that reads a
// document's text analyses it.
"use strict";
const path = require("path");

const queryRoot = path.dirname(require.resolve("@zeit/cosmosdb-query/package.json"));
const lib = (name) => require(path.join(queryRoot, "lib", name));
const builtins = lib("builtin-functions");
const helpers = lib("helpers");
const transformer = lib("transformer");
const parser = lib("parser");
const { SyntaxError: QuerySyntaxError } = parser;
const englishStemmer = require("snowball-stemmers").newStemmer("english");

if (typeof builtins.__DRVECTORORDER !== "function") {
  throw new Error("cosmos_fulltext: load cosmos_vector.js first (RRF ranks VectorDistance with it)");
}

const bad = (message) => new QuerySyntaxError(message);

// ------------------------------------------------------------------ text analysis
// Snowball's English stop-word list, https://snowballstem.org/algorithms/english/stop.txt
const STOP_WORDS = new Set(`
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
her hers herself it its itself they them their theirs themselves what which who whom this that
these those am is are was were be been being have has had having do does did doing would should
could ought i'm you're he's she's it's we're they're i've you've we've they've i'd you'd he'd
she'd we'd they'd i'll you'll he'll she'll we'll they'll isn't aren't wasn't weren't hasn't
haven't hadn't doesn't don't didn't won't wouldn't shan't shouldn't can't cannot couldn't
mustn't let's that's who's what's here's there's when's where's why's how's a an the and but if
or because as until while of at by for with about against between into through during before
after above below to from up down in out on off over under again further then once here there
when where why how all any both each few more most other some such no nor not only own same so
than too very`.split(/\s+/).filter(Boolean));

const TOKEN = /[\p{L}\p{N}]+(?:['\u2019][\p{L}\p{N}]+)*/gu;
const stemIds = new Map(); // stem -> id (grows with the vocabulary of the stored texts)
const rawStems = new Map(); // token as written -> stem id, or -1 for a stop word
const NO_ID = -2; // a query token whose stem no stored text has: matches nothing

function stemOf(raw) {
  const word = raw.toLowerCase().replace(/\u2019/g, "'");
  return STOP_WORDS.has(word) ? null : englishStemmer.stem(word);
}

// Token ids of a stored text; new stems get new ids.
function analyseStored(text) {
  const ids = [];
  for (const [raw] of text.matchAll(TOKEN)) {
    let id = rawStems.get(raw);
    if (id === undefined) {
      const stem = stemOf(raw);
      if (stem === null) id = -1;
      else {
        id = stemIds.get(stem);
        if (id === undefined) { id = stemIds.size; stemIds.set(stem, id); }
      }
      rawStems.set(raw, id);
    }
    if (id >= 0) ids.push(id);
  }
  return Int32Array.from(ids);
}

// Token ids of a query term (never adds to the vocabulary). Cached while the vocabulary has not
// grown: a stem unknown then (NO_ID) may be known after the next write.
const termCache = new Map();
function analyseTerm(term) {
  const hit = termCache.get(term);
  if (hit && hit.vocabulary === stemIds.size) return hit.ids;
  const ids = [];
  for (const [raw] of term.matchAll(TOKEN)) {
    const known = rawStems.get(raw);
    if (known === -1) continue;
    if (known !== undefined) { ids.push(known); continue; }
    const stem = stemOf(raw);
    if (stem === null) continue;
    const id = stemIds.get(stem);
    ids.push(id === undefined ? NO_ID : id);
  }
  const result = Int32Array.from(ids);
  if (termCache.size > 10000) termCache.clear();
  termCache.set(term, { vocabulary: stemIds.size, ids: result });
  return result;
}

// The analysed field of a document: keyed by the object the path starts from and the path, and
// checked against the text itself (a replaced document is a new object anyway).
const storedCache = new WeakMap();
function analysed(root, docPath, text) {
  if (root === null || typeof root !== "object" || docPath === null) return analyseStored(text);
  let byPath = storedCache.get(root);
  if (!byPath) { byPath = new Map(); storedCache.set(root, byPath); }
  const hit = byPath.get(docPath);
  if (hit && hit.text === text) return hit.ids;
  const ids = analyseStored(text);
  byPath.set(docPath, { text, ids });
  return ids;
}

// How many times (overlapping) the phrase `p` occurs in `d`; stops at `limit`.
function occurrences(d, p, limit = Infinity) {
  const m = p.length;
  if (m === 0 || p[0] === NO_ID) return 0;
  let count = 0;
  for (let i = 0, last = d.length - m; i <= last; i += 1) {
    if (d[i] !== p[0]) continue;
    let j = 1;
    while (j < m && d[i + j] === p[j]) j += 1;
    if (j === m && ++count >= limit) return count;
  }
  return count;
}

// Terms: strings, or arrays of strings (the SDK README's FullTextScore(c.text, ['a', 'b'])).
function termList(fn, args) {
  const out = [];
  for (const t of args) {
    if (typeof t === "string") out.push(t);
    else if (Array.isArray(t) && t.every((x) => typeof x === "string")) out.push(...t);
    else throw bad(`${fn}: every search term must be a string (got ${t === null ? "null" : Array.isArray(t) ? "an array" : typeof t})`);
  }
  return out;
}

const CONTAINS = { FULLTEXTCONTAINS: "FullTextContains", FULLTEXTCONTAINSALL: "FullTextContainsAll", FULLTEXTCONTAINSANY: "FullTextContainsAny" };

// __DRFTCONTAINS(name, root, docPath, value, ...terms)
builtins.__DRFTCONTAINS = (name, root, docPath, value, ...args) => {
  const strings = termList(CONTAINS[name], args);
  if (typeof value !== "string") return undefined;
  // The text first: a term is analysed against a vocabulary that has every stem of the text.
  const ids = analysed(root, docPath, value);
  const terms = strings.map(analyseTerm);
  const has = (p) => occurrences(ids, p, 1) > 0;
  return name === "FULLTEXTCONTAINSALL" ? terms.every(has) : terms.some(has);
};
// __DRFTANALYSE(root, docPath, value): the per-row input of FullTextScore.
builtins.__DRFTANALYSE = (root, docPath, value) =>
  (typeof value === "string" ? analysed(root, docPath, value) : undefined);

// ------------------------------------------------------------------ BM25 and RRF
const K1 = 1.2;
const B = 0.75;
const RRF_K = 60;

function getPath(doc, parts) {
  let v = doc;
  for (const p of parts) {
    if (v === null || typeof v !== "object") return undefined;
    v = v[p];
  }
  return v;
}

// Scores of one FullTextScore over `rows`, statistics over `docs` (the whole container).
function fullTextScores(component, rows, docs) {
  const strings = termList("FullTextScore", component.terms);
  const texts = [];
  let total = 0;
  for (const doc of docs) {
    const text = getPath(doc, component.parts);
    if (typeof text !== "string") continue;
    const ids = analysed(doc, component.path, text);
    total += ids.length;
    texts.push(ids);
  }
  const terms = strings.map(analyseTerm); // after the texts: every stored stem is known
  const df = terms.map(() => 0);
  for (const ids of texts) terms.forEach((p, j) => { if (occurrences(ids, p, 1) > 0) df[j] += 1; });
  const n = docs.length;
  const avgdl = n > 0 && total > 0 ? total / n : 1;
  const idf = df.map((k) => Math.log(1 + (n - k + 0.5) / (k + 0.5)));
  return rows.map((row) => {
    const ids = component.key(row);
    if (ids === undefined) return -1;
    const norm = K1 * (1 - B + (B * ids.length) / avgdl);
    let score = 0;
    terms.forEach((p, j) => {
      const tf = occurrences(ids, p);
      if (tf > 0) score += (idf[j] * tf * (K1 + 1)) / (tf + norm);
    });
    return score;
  });
}

// Dense ranks (1 = best) of `values`, higher better.
function denseRanks(values) {
  const order = values.map((v, i) => i).sort((a, b) => values[b] - values[a]);
  const ranks = new Array(values.length);
  let rank = 0;
  order.forEach((i, k) => {
    if (k === 0 || values[i] !== values[order[k - 1]]) rank += 1;
    ranks[i] = rank;
  });
  return ranks;
}

const { clone, memberParts, walk, rowFunction } = require("./query_ast");

const MARK = "\u0000drrank";
const WORST = -Number.MAX_VALUE;
// The scores of the ORDER BY RANK query being executed, by _rid: paginate's continuation tokens
// carry them (a query runs synchronously, so the last __drRank call is this query's).
let rankScores = new Map();
helpers.__drRankScore = (rid) => rankScores.get(rid);
// $h.__drRank(rows, getRid, spec): the rows of an ORDER BY RANK query, best first.
helpers.__drRank = (rows, getRid, spec) => {
  const { components } = spec;
  let weights = spec.weights;
  if (weights === undefined || weights === null) weights = components.map(() => 1);
  if (!Array.isArray(weights) || weights.length !== components.length ||
      !weights.every((w) => typeof w === "number" && Number.isFinite(w))) {
    throw bad(`RRF: the weights must be an array of ${components.length} numbers, one per scoring function`);
  }
  // Every component as "higher is better", no score = WORST.
  const values = components.map((c) => {
    if (c.kind === "fulltext") return fullTextScores(c, rows, spec.docs);
    return rows.map((row) => { const v = c.key(row); return v === undefined ? WORST : -v; });
  });
  let scores;
  if (!spec.rrf) {
    scores = values[0];
  } else {
    scores = rows.map(() => 0);
    values.forEach((v, i) => {
      const w = weights[i];
      const ranks = denseRanks(w < 0 ? v.map((x) => (x === WORST ? WORST : -x)) : v);
      const magnitude = Math.abs(w);
      ranks.forEach((r, k) => { scores[k] += magnitude / (RRF_K + r); });
    });
  }
  const order = rows.map((r, i) => i).sort((a, b) => {
    if (scores[a] !== scores[b]) return scores[b] - scores[a];
    const ra = getRid(rows[a]);
    const rb = getRid(rows[b]);
    return ra < rb ? -1 : ra > rb ? 1 : 0;
  });
  rankScores = new Map(order.map((i) => [getRid(rows[i]), scores[i]]));
  return order.map((i) => rows[i]);
};

// $h.__drOffsetLimit(rows, offset, limit)
helpers.__drOffsetLimit = (rows, offset, limit) => {
  const ok = (v) => typeof v === "number" && Number.isInteger(v) && v >= 0;
  if (!ok(offset) || !ok(limit)) throw bad("OFFSET and LIMIT take non-negative integers");
  return rows.slice(offset, offset + limit);
};

// ------------------------------------------------------------------ syntax the parser lacks
// The query with string literals and -- comments blanked out (same length), so keywords are
// only found in the query's own text.
function codeOnly(text) {
  let out = "";
  for (let i = 0; i < text.length; ) {
    const ch = text[i];
    if (ch === "'" || ch === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== ch) j += text[j] === "\\" ? 2 : 1;
      j = Math.min(j + 1, text.length);
      out += ch + " ".repeat(Math.max(0, j - i - 2)) + (j - i >= 2 ? ch : "");
      i = j;
    } else if (ch === "-" && text[i + 1] === "-") {
      let j = i;
      while (j < text.length && text[j] !== "\n") j += 1;
      out += " ".repeat(j - i);
      i = j;
    } else {
      out += ch;
      i += 1;
    }
  }
  return out;
}

const SENTINEL = "__drrank__";
const OFFSET_LIMIT = /(^|[\s)])OFFSET\s+(@[A-Za-z_][A-Za-z0-9_]*|[-+]?\d+(?:\.\d+)?)\s+LIMIT\s+(@[A-Za-z_][A-Za-z0-9_]*|[-+]?\d+(?:\.\d+)?)\s*$/i;
const valueNode = (token) => (token.startsWith("@")
  ? { type: "parameter_name", name: token }
  : { type: "number_constant", value: Number(token) });

function isSentinel(e) {
  return e && e.type === "scalar_member_expression" && e.object.type === "identifier" &&
    e.object.name === SENTINEL && !e.computed && e.property.name === SENTINEL;
}

// ORDER BY RANK <f> -> ORDER BY __drrank__.__drrank__, <f> for the grammar, then the sentinel
// is taken out again and <f>'s sort expression marked rank: true. A trailing OFFSET x LIMIT y
// is cut off and kept as select_query.offsetLimit.
const parseUnpatched = parser.parse;
parser.parse = function parse(text, options) {
  if (typeof text !== "string") return parseUnpatched.call(this, text, options);
  let sql = text;
  let code = codeOnly(sql);
  let offsetLimit = null;
  const ol = OFFSET_LIMIT.exec(code);
  if (ol) {
    offsetLimit = { offset: valueNode(ol[2]), limit: valueNode(ol[3]) };
    const cut = ol.index + ol[1].length;
    sql = sql.slice(0, cut);
    code = code.slice(0, cut);
  }
  const rankAt = [];
  const rank = /\bORDER\s+BY\s+(RANK)(?=\s+(?!ASC\b|DESC\b)[A-Za-z_])/gi;
  for (let m = rank.exec(code); m; m = rank.exec(code)) rankAt.push(m.index + m[0].length - 4);
  for (const at of rankAt.reverse()) sql = `${sql.slice(0, at)}${SENTINEL}.${SENTINEL},${sql.slice(at + 4)}`;
  const ast = parseUnpatched.call(this, sql, options);
  if (rankAt.length) {
    (function visit(node) {
      if (Array.isArray(node)) { node.forEach(visit); return; }
      if (!node || typeof node !== "object") return;
      if (node.type === "sort_specification" && isSentinel(node.expressions[0] && node.expressions[0].expression)) {
        if (node.expressions[0].order) throw bad("ORDER BY RANK takes no ASC/DESC");
        node.expressions.shift();
        if (node.expressions.length) node.expressions[0].rank = true;
      }
      Object.values(node).forEach(visit);
    }(ast));
  }
  if (offsetLimit) {
    if (!ast.body || ast.body.type !== "select_query") throw bad("OFFSET LIMIT needs a SELECT query");
    ast.body.offsetLimit = offsetLimit;
  }
  return ast;
};

// ------------------------------------------------------------------ SQL AST rewrite
const fnName = (n) => (n && n.type === "scalar_function_expression" && !n.udf && n.name &&
  typeof n.name.name === "string" ? n.name.name.toUpperCase() : null);

const memberPath = memberParts; // c.search.text -> { root: "c", parts: ["search", "text"] }
const str = (value) => ({ type: "string_constant", value });
const call = (name, args) => ({ type: "scalar_function_expression", name: { type: "identifier", name }, arguments: args });

// FullTextContains*(x.a.b, t...) -> __DRFTCONTAINS("NAME", x, "/a/b", x.a.b, t...); FullTextScore
// and RRF outside ORDER BY RANK are refused.
function rewriteCalls(node, inRank = false) {
  if (Array.isArray(node)) return node.map((n) => rewriteCalls(n, inRank));
  if (!node || typeof node !== "object") return node;
  const name = fnName(node);
  if ((name === "FULLTEXTSCORE" || name === "RRF") && !inRank) {
    throw bad(`${name === "RRF" ? "RRF" : "FullTextScore"} can only be used in an ORDER BY RANK clause` +
      `${name === "RRF" ? "" : " or as an argument of RRF"}; it can't be part of a projection ` +
      "(SELECT FullTextScore(c.text, 'word') AS score FROM c is invalid), a WHERE or a plain ORDER BY");
  }
  const out = {};
  for (const [k, v] of Object.entries(node)) out[k] = rewriteCalls(v, inRank);
  if (CONTAINS[name]) {
    const args = out.arguments || [];
    if (name === "FULLTEXTCONTAINS" ? args.length !== 2 : args.length < 2) {
      throw bad(`The ${CONTAINS[name]} function requires ${name === "FULLTEXTCONTAINS" ? "2" : "at least 2"} argument(s)`);
    }
    const mp = memberPath(args[0]);
    return call("__DRFTCONTAINS", [str(name),
      mp ? { type: "identifier", name: mp.root } : { type: "null_constant" },
      mp ? str(`/${mp.parts.join("/")}`) : { type: "null_constant" }, ...args]);
  }
  return out;
}

// A term or weights argument as a JS expression: constants and parameters only.
function constantJs(node, what) {
  switch (node.type) {
    case "string_constant": return { type: "StringLiteral", value: node.value };
    case "number_constant": return { type: "NumericLiteral", value: node.value };
    case "parameter_name":
      return { type: "MemberExpression", object: { type: "Identifier", name: "$p" },
        property: { type: "Identifier", name: node.name.slice(1) }, computed: false };
    case "array_constant":
    case "scalar_array_expression":
      return { type: "ArrayExpression", elements: node.elements.map((e) => constantJs(e, what)) };
    case "scalar_unary_expression":
      if (node.operator === "-" && node.argument.type === "number_constant") {
        return { type: "NumericLiteral", value: -node.argument.value };
      }
      break;
    default:
  }
  throw bad(`${what} must be literals or parameters`);
}

const jsId = (name) => ({ type: "Identifier", name });
const jsProp = (key, value) => ({ type: "ObjectProperty", key: jsId(key), value, computed: false, shorthand: false });


const transformUnpatched = transformer.default;
// The per-row function for `value` over the query's FROM: `SELECT VALUE <value> FROM <from>`
// transformed, and its projection `({c}) => [<value>, {c}]` taken apart.
function rowValue(from, value) {
  return rowFunction(from, value, transformUnpatched, "cosmos_fulltext");
}

function fromAlias(from) {
  const source = from && from.source;
  if (!source || source.iteration) return null; // FROM x IN c.list: x is not a document
  if (source.alias) return source.alias.name;
  const e = source.expression;
  return e && e.type === "collection_expression" && e.expression.type === "identifier" ? e.expression.name : null;
}

// The JS object describing an ORDER BY RANK expression (see helpers.__drRank).
function rankSpec(body, expr) {
  const alias = fromAlias(body.from);
  const component = (node) => {
    const name = fnName(node);
    if (name === "FULLTEXTSCORE") {
      const args = node.arguments || [];
      if (args.length < 2) throw bad("The FullTextScore function requires at least 2 argument(s)");
      const mp = memberPath(args[0]);
      if (!mp || mp.root !== alias) {
        throw bad(`FullTextScore: the first argument must be a property path of the FROM alias (e.g. ${alias || "c"}.text)`);
      }
      const docPath = `/${mp.parts.join("/")}`;
      const key = rowValue(body.from, call("__DRFTANALYSE", [{ type: "identifier", name: alias }, str(docPath), args[0]]));
      return { type: "ObjectExpression", properties: [
        jsProp("kind", { type: "StringLiteral", value: "fulltext" }),
        jsProp("path", { type: "StringLiteral", value: docPath }),
        jsProp("parts", { type: "ArrayExpression", elements: mp.parts.map((p) => ({ type: "StringLiteral", value: p })) }),
        jsProp("terms", { type: "ArrayExpression", elements: args.slice(1).map((a) => constantJs(a, "FullTextScore's search terms")) }),
        jsProp("key", key),
      ] };
    }
    if (name === "__DRVECTORDISTANCE") { // VectorDistance, as cosmos_vector.js rewrote it
      const key = rowValue(body.from, { ...node, name: { type: "identifier", name: "__DRVECTORORDER" } });
      return { type: "ObjectExpression", properties: [
        jsProp("kind", { type: "StringLiteral", value: "vector" }), jsProp("key", key)] };
    }
    throw bad("RRF takes scoring functions (FullTextScore, VectorDistance) and, last, an array of weights");
  };
  const name = fnName(expr);
  let components;
  let weights = { type: "NullLiteral" };
  let rrf = false;
  if (name === "FULLTEXTSCORE") {
    components = [component(expr)];
  } else if (name === "RRF") {
    rrf = true;
    const args = [...(expr.arguments || [])];
    if (args.length && !fnName(args[args.length - 1])) weights = constantJs(args.pop(), "RRF's weights");
    if (args.length === 0) throw bad("RRF needs at least one scoring function");
    components = args.map(component);
  } else {
    throw bad("ORDER BY RANK takes a scoring function: FullTextScore(...) or RRF(...)");
  }
  return { type: "ObjectExpression", properties: [
    jsProp("docs", jsId("$c")),
    jsProp("rrf", { type: "BooleanLiteral", value: rrf }),
    jsProp("weights", weights),
    jsProp("components", { type: "ArrayExpression", elements: components }),
  ] };
}

const isHelperCall = (n, name) => n.type === "CallExpression" && n.callee.type === "MemberExpression" &&
  n.callee.object.type === "Identifier" && n.callee.object.name === "$h" && n.callee.property.name === name;
const isRankOrder = (n) => n && n.type === "ArrayExpression" && n.elements.length === 2 &&
  n.elements[0].type === "ArrayExpression" && n.elements[0].elements.some((e) => e.type === "StringLiteral" && e.value === MARK);

transformer.default = function transform(sqlAst) {
  const sql = clone(sqlAst);
  const body = sql.body;
  let spec = null;
  // 1. ORDER BY RANK: validate, keep the expression aside, sort by a placeholder path.
  const ranked = body && body.orderBy && body.orderBy.expressions.findIndex((e) => e.rank);
  if (ranked !== undefined && ranked !== null && ranked >= 0) {
    const sortExpressions = body.orderBy.expressions;
    const expr = sortExpressions[ranked].expression;
    const vectorOrder = expr.type === "scalar_member_expression" && expr.object.type === "identifier" &&
      expr.object.name === "$drvec"; // ORDER BY RANK VectorDistance(...), rewritten by cosmos_vector.js
    if (vectorOrder) {
      delete sortExpressions[ranked].rank; // cosmos_vector.js sorts it
    } else {
      if (sortExpressions.length > 1) throw bad("ORDER BY RANK can't be combined with other ORDER BY items");
      if (!body.top && !body.offsetLimit) {
        throw bad("ORDER BY RANK needs TOP or OFFSET ... LIMIT (the Azure SDKs refuse a ranked query without one)");
      }
      const rewritten = rewriteCalls(expr, true);
      spec = rankSpec(body, rewritten);
      sortExpressions[ranked] = { type: "sort_expression", order: null, expression: {
        type: "scalar_member_expression", object: { type: "identifier", name: "$drrank" },
        property: str(MARK), computed: true } };
    }
  }
  // 2. FullTextContains* everywhere; FullTextScore and RRF anywhere else are refused.
  const rewrittenSql = rewriteCalls(sql);
  if (rewrittenSql.body && rewrittenSql.body.orderBy) {
    for (const e of rewrittenSql.body.orderBy.expressions) {
      if (e.rank) throw bad("RANK is only valid in the top-level ORDER BY of a query");
    }
  }
  // 3. OFFSET x LIMIT y as a TOP whose slice is replaced below.
  const ol = rewrittenSql.body && rewrittenSql.body.offsetLimit;
  if (ol) {
    if (rewrittenSql.body.top) throw bad("TOP and OFFSET LIMIT can't be used in the same query");
    rewrittenSql.body.top = { type: "top_specification", value: call("__DROFFSETLIMIT", [ol.offset, ol.limit]) };
    delete rewrittenSql.body.offsetLimit;
  }
  const jsAst = transformUnpatched(rewrittenSql);
  walk(jsAst, (n, parent, key) => {
    if (spec && isHelperCall(n, "sort") && isRankOrder(n.arguments[n.arguments.length - 1])) {
      parent[key] = { type: "CallExpression", callee: { type: "MemberExpression", object: jsId("$h"),
        property: jsId("__drRank"), computed: false }, arguments: [n.arguments[0], n.arguments[1], spec] };
    }
  });
  // (a pass of its own: the slice wraps the sort replaced above)
  walk(jsAst, (n, parent, key) => {
    if (n.type === "CallExpression" && n.callee.type === "MemberExpression" &&
        n.callee.property.name === "slice" && n.arguments.length === 2 &&
        n.arguments[1].type === "CallExpression" && n.arguments[1].callee.type === "MemberExpression" &&
        n.arguments[1].callee.property.name === "__DROFFSETLIMIT") {
      parent[key] = { type: "CallExpression", callee: { type: "MemberExpression", object: jsId("$h"),
        property: jsId("__drOffsetLimit"), computed: false },
      arguments: [n.callee.object, ...n.arguments[1].arguments] };
    }
  });
  // paginate's order (continuation tokens): the score each row got, highest first, as a
  // [marker, key function] pair that cosmos_vector.js's paginate computes per row.
  walk(jsAst, (n) => {
    if (!isHelperCall(n, "paginate")) return;
    const getRid = n.arguments[3];
    n.arguments = n.arguments.map((a) => (!isRankOrder(a) ? a : { type: "ArrayExpression", elements: [
      { type: "ArrayExpression", elements: [{ type: "StringLiteral", value: MARK }, {
        type: "ArrowFunctionExpression", params: [jsId("$row")], body: { type: "CallExpression",
          callee: { type: "MemberExpression", object: jsId("$h"), property: jsId("__drRankScore"), computed: false },
          arguments: [{ type: "CallExpression", callee: clone(getRid), arguments: [jsId("$row")] }] } }] },
      { type: "BooleanLiteral", value: true }] }));
  });
  return jsAst;
};

// ------------------------------------------------------------------ container policy
function install(Items) {
  const queryUnpatched = Items.prototype.query;
  Items.prototype.query = function (...args) {
    try {
      return queryUnpatched.apply(this, args);
    } catch (err) {
      // Parse errors happen before the package marks errors as the client's (400, not 500).
      if (err instanceof QuerySyntaxError) err.badRequest = true;
      throw err;
    }
  };
}

// What Azure checks when a container is created with a full-text policy; null if it is fine.
const LANGUAGES = new Set(["en-us"]);
const hasWildcard = (p) => /[*[\]]/.test(p);
function fullTextPolicyProblem(body) {
  const policy = body.fullTextPolicy;
  const indexes = body.indexingPolicy && body.indexingPolicy.fullTextIndexes;
  const paths = (policy && policy.fullTextPaths) || [];
  if (policy !== undefined && policy !== null) {
    if (typeof policy !== "object" || Array.isArray(policy)) return "fullTextPolicy must be an object";
    if (policy.defaultLanguage !== undefined && typeof policy.defaultLanguage !== "string") {
      return "fullTextPolicy.defaultLanguage must be a string";
    }
    if (!Array.isArray(policy.fullTextPaths)) return "fullTextPolicy.fullTextPaths must be an array";
    for (const p of paths) {
      if (!p || typeof p.path !== "string" || !p.path.startsWith("/")) return "each full-text path needs a path starting with '/'";
      if (hasWildcard(p.path)) return `full-text path ${p.path}: wildcards (*, []) are not supported`;
      const language = p.language === undefined ? policy.defaultLanguage : p.language;
      if (language !== undefined && !LANGUAGES.has(String(language).toLowerCase())) {
        return `full-text path ${p.path}: language '${language}' is not supported by the local emulator (en-US only)`;
      }
    }
    if (policy.defaultLanguage !== undefined && !LANGUAGES.has(policy.defaultLanguage.toLowerCase())) {
      return `fullTextPolicy.defaultLanguage '${policy.defaultLanguage}' is not supported by the local emulator (en-US only)`;
    }
  }
  if (indexes !== undefined) {
    if (!Array.isArray(indexes)) return "indexingPolicy.fullTextIndexes must be an array";
    for (const index of indexes) {
      if (!index || typeof index.path !== "string" || hasWildcard(index.path) || !paths.some((p) => p.path === index.path)) {
        return `full-text index ${index && index.path}: the path is not in the container's fullTextPolicy`;
      }
    }
  }
  return null;
}

module.exports = { install, fullTextPolicyProblem };
