// Small tools over the two syntax trees the emulator's query patches work on: the Cosmos SQL
// tree of @zeit/cosmosdb-query's parser, and the JavaScript tree its transformer makes of it.
// Shared by cosmos_vector.js and cosmos_fulltext.js.
"use strict";

const clone = (o) => JSON.parse(JSON.stringify(o));

// c.search.text -> { root: "c", parts: ["search", "text"] }; c["a"].b -> parts ["a", "b"];
// anything but a plain document path -> null.
function memberParts(node) {
  const parts = [];
  while (node && node.type === "scalar_member_expression") {
    const p = node.property;
    if (!node.computed && p.type === "identifier") parts.unshift(p.name);
    else if (node.computed && p.type === "string_constant") parts.unshift(p.value);
    else return null;
    node = node.object;
  }
  return node && node.type === "identifier" && parts.length ? { root: node.name, parts } : null;
}

// Every node of a JavaScript tree (Babel's), with its parent and the key it hangs under.
function walk(node, visit, parent = null, key = null) {
  if (!node || typeof node !== "object") return;
  if (Array.isArray(node)) { node.forEach((n, i) => walk(n, visit, node, i)); return; }
  if (typeof node.type === "string") visit(node, parent, key);
  for (const [k, v] of Object.entries(node)) {
    if (k !== "loc" && v && typeof v === "object") walk(v, visit, node, k);
  }
}

// The per-row function computing `value` over a query's FROM: `SELECT VALUE <value> FROM
// <from>` made into JavaScript by `transform`, and its projection `({c}) => [<value>, {c}]`
// taken apart. `who` names the caller in the error for a query shape it cannot handle.
function rowFunction(from, value, transform, who) {
  let found = null;
  walk(transform({ type: "sql", body: { type: "select_query",
    select: { type: "select_specification", value }, from: clone(from) } }), (n) => {
    if (n.type === "CallExpression" && n.callee.type === "MemberExpression" &&
        n.callee.property.name === "map" && n.arguments[0] &&
        n.arguments[0].type === "ArrowFunctionExpression" &&
        n.arguments[0].body.type === "ArrayExpression" && n.arguments[0].body.elements.length === 2) {
      found = n.arguments[0];
    }
  });
  if (!found) throw new Error(`${who}: cannot build the per-row function (unexpected query shape)`);
  return { type: "ArrowFunctionExpression", params: found.params, body: found.body.elements[0] };
}

module.exports = { clone, memberParts, walk, rowFunction };
