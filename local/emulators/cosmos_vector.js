// Vector search for the local Cosmos emulator (@zeit/cosmosdb-query 0.7.2, as pinned by
// @vercel/cosmosdb-server 1.0.1), so the query Azure Cosmos DB for NoSQL runs
//
//   SELECT TOP @k c.id, VectorDistance(c.embedding, @q) AS score FROM c
//   WHERE c.model = @model ORDER BY VectorDistance(c.embedding, @q)
//
// runs here unchanged. Nothing inside node_modules is edited: this module only adds to the
// query engine's module objects and overrides one getter, before the server is loaded.
//
//  * VectorDistance(v1, v2 [, bruteForce] [, {distanceFunction, dataType, ...}]) is a built-in
//    function. cosine and dotproduct are similarities (higher = closer), euclidean is a
//    distance (lower = closer), as documented for Azure. Without distanceFunction the
//    container's vectorEmbeddingPolicy entry for the first argument's path decides; with
//    neither, cosine. Non-numeric or mismatched vectors give undefined (no score, no error).
//    bruteForce and the index options are accepted and ignored: every search here is exact.
//  * ORDER BY VectorDistance(...) (no ASC/DESC, as on Azure) sorts most similar first. The
//    package's transformer only sorts by document paths, so the query's AST is rewritten to sort
//    by a placeholder path and the generated code computes the value per row.
//  * The package builds FROM rows with `reduce(($, c) => [...$, {c}], [])`, quadratic in the
//    number of documents (30k documents: 5.4 s for any query). The generated code appends
//    instead; the result is the same array.
"use strict";
const path = require("path");

const queryRoot = path.dirname(require.resolve("@zeit/cosmosdb-query/package.json"));
const lib = (name) => require(path.join(queryRoot, "lib", name));
const cosmosQuery = lib("index");
const builtins = lib("builtin-functions");
const helpers = lib("helpers");
const transformer = lib("transformer");
const { SyntaxError: QuerySyntaxError } = lib("parser");
const generate = require(require.resolve("@babel/generator", { paths: [queryRoot] })).default;

const { clone, memberParts, walk, rowFunction } = require("./query_ast");

const MARK = "\u0000drvec";

// ------------------------------------------------------------------ the function itself
// The container being queried: Items.prototype.query runs a query synchronously, so a plain
// variable set around that call names the right container.
let activeVectorPolicy = null;

const FUNCTIONS = {
  cosine: (a, b) => {
    let dot = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i += 1) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
    return na === 0 || nb === 0 ? undefined : dot / Math.sqrt(na * nb);
  },
  dotproduct: (a, b) => {
    let dot = 0;
    for (let i = 0; i < a.length; i += 1) dot += a[i] * b[i];
    return dot;
  },
  euclidean: (a, b) => {
    let sum = 0;
    for (let i = 0; i < a.length; i += 1) { const d = a[i] - b[i]; sum += d * d; }
    return Math.sqrt(sum);
  },
};
const isVector = (v) => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "number" && Number.isFinite(x));

function distanceFunction(docPath, options) {
  let name = options && options.distanceFunction;
  if (name === undefined) {
    const entries = (activeVectorPolicy && activeVectorPolicy.vectorEmbeddings) || [];
    const entry = entries.find((e) => e && e.path === docPath);
    name = entry ? entry.distanceFunction : "cosine";
  }
  const key = String(name).toLowerCase();
  if (!FUNCTIONS[key]) {
    throw new QuerySyntaxError(`VectorDistance: unknown distanceFunction '${name}' (cosine, dotproduct or euclidean)`);
  }
  return key;
}

// __DRVECTORDISTANCE(docPath, v1, v2, bruteForce, options): VectorDistance with the path of its
// first argument (or null) prepended by the rewrite below, for the policy lookup.
function score(docPath, a, b, bruteForce, options) {
  if (bruteForce !== undefined && typeof bruteForce !== "boolean") return undefined;
  if (options !== undefined && (options === null || typeof options !== "object" || Array.isArray(options))) return undefined;
  const fn = distanceFunction(docPath, options);
  if (!isVector(a) || !isVector(b) || a.length !== b.length) return undefined;
  return { fn, value: FUNCTIONS[fn](a, b) };
}
builtins.__DRVECTORDISTANCE = (...args) => {
  const s = score(...args);
  return s && s.value;
};
// The ORDER BY key: ascending order of this is "most similar first" for every function.
builtins.__DRVECTORORDER = (...args) => {
  const s = score(...args);
  if (!s || s.value === undefined) return undefined;
  return s.fn === "euclidean" ? s.value : -s.value;
};

// ------------------------------------------------------------------ SQL AST rewrite
const isVectorDistance = (n) => n && n.type === "scalar_function_expression" && !n.udf &&
  n.name && typeof n.name.name === "string" && n.name.name.toUpperCase() === "VECTORDISTANCE";

function memberPath(node) {
  // c.embedding -> "/embedding" (the root alias dropped), c["a"].b -> "/a/b"; else null.
  const found = memberParts(node);
  return found ? `/${found.parts.join("/")}` : null;
}

function asInternalCall(node, name) {
  const args = node.arguments || [];
  if (args.length < 2 || args.length > 4) {
    throw new QuerySyntaxError("The VectorDistance function requires 2 to 4 argument(s)");
  }
  const docPath = memberPath(args[0]);
  return {
    type: "scalar_function_expression",
    name: { type: "identifier", name },
    arguments: [docPath === null ? { type: "null_constant" } : { type: "string_constant", value: docPath }, ...args],
  };
}

// Every VectorDistance(...) call anywhere in the query becomes __DRVECTORDISTANCE(path, ...).
function rewriteCalls(node) {
  if (Array.isArray(node)) return node.map(rewriteCalls);
  if (!node || typeof node !== "object") return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) out[k] = rewriteCalls(v);
  return isVectorDistance(node) ? asInternalCall(out, "__DRVECTORDISTANCE") : out;
}

// ORDER BY VectorDistance(...) -> ORDER BY <root alias>["\0drvecN"]; returns the order keys.
function rewriteOrderBy(sql) {
  const query = sql.body;
  const orders = [];
  if (!query || query.type !== "select_query" || !query.orderBy) return orders;
  query.orderBy.expressions.forEach((sortExpression, i) => {
    if (!isVectorDistance(sortExpression.expression)) return;
    if (sortExpression.order) {
      throw new QuerySyntaxError("ORDER BY VectorDistance(...) takes no ASC/DESC: results always come most similar first");
    }
    const marker = `${MARK}${i}`;
    orders.push({ marker, call: asInternalCall(sortExpression.expression, "__DRVECTORORDER") });
    sortExpression.expression = {
      type: "scalar_member_expression",
      object: { type: "identifier", name: "$drvec" },
      property: { type: "string_constant", value: marker },
      computed: true,
    };
  });
  return orders;
}

// ------------------------------------------------------------------ JS AST surgery

// The per-row function computing an order key: transform `SELECT VALUE <key> FROM <same FROM>`
// and take the projection's arrow function `({c}) => [<key>, {c}]` apart.
function orderKeyFunction(sql, call) {
  return rowFunction(sql.body.from, call, (ast) => transformer.default(ast), "cosmos_vector");
}

// [...$, x] inside reduce(($, ...) => ..., []) -> $h.__drAppend($, x): same array, linear time.
function linearReduce(jsAst) {
  walk(jsAst, (n) => {
    if (!(n.type === "CallExpression" && n.callee.type === "MemberExpression" &&
          n.callee.property.name === "reduce" && n.arguments.length === 2 &&
          n.arguments[1].type === "ArrayExpression" && n.arguments[1].elements.length === 0)) return;
    const fn = n.arguments[0];
    if (fn.type !== "ArrowFunctionExpression" || !fn.params[0] || fn.params[0].name !== "$") return;
    walk(fn, (m, parent, key) => {
      if (m.type !== "ArrayExpression" || m.elements.length !== 2) return;
      const [first, second] = m.elements;
      if (!first || first.type !== "SpreadElement" || first.argument.type !== "Identifier" ||
          first.argument.name !== "$" || !second) return;
      const spread = second.type === "SpreadElement";
      const replacement = { type: "CallExpression",
        callee: { type: "MemberExpression", object: { type: "Identifier", name: "$h" },
          property: { type: "Identifier", name: spread ? "__drAppendAll" : "__drAppend" }, computed: false },
        arguments: [{ type: "Identifier", name: "$" }, spread ? second.argument : second] };
      parent[key] = replacement;
    });
  });
}
helpers.__drAppend = (a, v) => { a.push(v); return a; };
helpers.__drAppendAll = (a, vs) => { for (const v of vs) a.push(v); return a; };

// Order keys [<alias>, "\0drvecN"] become ["\0drvecN", <key function>]; sort and paginate
// below compute the key once per row into row["\0drvecN"] and sort by that path.
function attachOrderKeys(jsAst, keyFunctions) {
  walk(jsAst, (n) => {
    if (n.type !== "ArrayExpression" || n.elements.length !== 2) return;
    const last = n.elements[1];
    if (last && last.type === "StringLiteral" && keyFunctions.has(last.value)) {
      n.elements = [{ type: "StringLiteral", value: last.value }, keyFunctions.get(last.value)];
    }
  });
}
function materialize(rows, orders, rowOf) {
  const plain = orders.map(([keys, desc]) => [keys.length === 2 && typeof keys[1] === "function" ? [keys[0]] : keys, desc]);
  orders.forEach(([keys], i) => {
    if (plain[i][0] === keys) return;
    const [marker, key] = keys;
    for (const row of rows) { const r = rowOf(row); r[marker] = key(r); }
  });
  return plain;
}
const sortUnpatched = helpers.sort;
helpers.sort = (collection, getRid, compositeIndexes, ...orders) =>
  sortUnpatched(collection, getRid, compositeIndexes, ...materialize(collection, orders, (r) => r));
const paginateUnpatched = helpers.paginate;
helpers.paginate = (collection, maxItemCount, continuation, getRid, ...orders) =>
  paginateUnpatched(collection, maxItemCount, continuation, getRid, ...materialize(collection, orders, ([, d]) => d));

// ------------------------------------------------------------------ compile
const Query = Object.getPrototypeOf(cosmosQuery.default("SELECT * FROM c"));
Object.defineProperty(Query, "code", {
  configurable: true,
  get() {
    if (!this._code) {
      const ast = clone(this.ast); // this.ast stays as parsed (containsPartitionKeys reads it)
      const orders = rewriteOrderBy(ast).map((o) => ({ ...o, call: rewriteCalls(o.call) }));
      const sql = rewriteCalls(ast);
      const jsAst = transformer.default(sql);
      linearReduce(jsAst);
      if (orders.length) {
        attachOrderKeys(jsAst, new Map(orders.map(({ marker, call }) => [marker, orderKeyFunction(sql, call)])));
      }
      this._code = generate(jsAst).code;
    }
    return this._code;
  },
});

// ------------------------------------------------------------------ container policy
function install(Items) {
  const queryUnpatched = Items.prototype.query;
  Items.prototype.query = function (...args) {
    const parent = this._parent && this._parent.read();
    const previous = activeVectorPolicy;
    activeVectorPolicy = (parent && parent.vectorEmbeddingPolicy) || null;
    try {
      return queryUnpatched.apply(this, args);
    } finally {
      activeVectorPolicy = previous;
    }
  };
}

// What Azure checks when a container is created with a vector policy; null if it is fine.
const DATA_TYPES = new Set(["float32", "float16", "int8", "uint8"]);
const INDEX_TYPES = new Set(["flat", "quantizedflat", "diskann"]);
function vectorPolicyProblem(body) {
  const policy = body.vectorEmbeddingPolicy;
  const indexes = (body.indexingPolicy && body.indexingPolicy.vectorIndexes) || [];
  const embeddings = (policy && policy.vectorEmbeddings) || [];
  if (policy !== undefined && (policy === null || !Array.isArray(policy.vectorEmbeddings))) {
    return "vectorEmbeddingPolicy.vectorEmbeddings must be an array";
  }
  for (const e of embeddings) {
    if (!e || typeof e.path !== "string" || !e.path.startsWith("/")) return "each vector embedding needs a path starting with '/'";
    if (!DATA_TYPES.has(String(e.dataType).toLowerCase())) return `vector embedding ${e.path}: dataType must be float32, float16, int8 or uint8`;
    if (!FUNCTIONS[String(e.distanceFunction).toLowerCase()]) return `vector embedding ${e.path}: distanceFunction must be cosine, dotproduct or euclidean`;
    if (!Number.isInteger(e.dimensions) || e.dimensions < 1) return `vector embedding ${e.path}: dimensions must be a positive integer`;
  }
  if (!Array.isArray(indexes)) return "indexingPolicy.vectorIndexes must be an array";
  for (const index of indexes) {
    if (!index || !embeddings.some((e) => e.path === index.path)) {
      return `vector index ${index && index.path}: the path is not in the container's vectorEmbeddingPolicy`;
    }
    if (!INDEX_TYPES.has(String(index.type).toLowerCase())) return `vector index ${index.path}: type must be flat, quantizedFlat or diskANN`;
  }
  return null;
}

module.exports = { install, vectorPolicyProblem };
