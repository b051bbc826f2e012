#!/usr/bin/env node
// Compile the contracts with solc from npm and write provenance/chain/compiled/<Name>.json, inside
// the Python package so that a wheel ships them (read with importlib.resources).
// The output is deterministic: tests run this into a temporary folder and compare byte for byte
// with the committed artifacts. Usage: node contracts/compile.js [OUT_DIR]
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const CONTRACTS = ["ProvenanceRegistry", "ProvenanceNFT", "RoyaltySplitter"];
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  // Cancun runs on every current public testnet and on anvil.
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

const here = __dirname;
const root = path.dirname(here);
const outDir = path.resolve(process.argv[2] || path.join(root, "provenance", "chain", "compiled"));

function findImports(importPath) {
  // Imports such as "@openzeppelin/contracts/..." resolve in node_modules, offline.
  for (const base of [here, path.join(root, "node_modules")]) {
    const candidate = path.join(base, importPath);
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, "utf8") };
  }
  return { error: `File not found: ${importPath}` };
}

const sources = {};
for (const name of CONTRACTS) {
  sources[`${name}.sol`] = { content: fs.readFileSync(path.join(here, `${name}.sol`), "utf8") };
}
const output = JSON.parse(
  solc.compile(JSON.stringify({ language: "Solidity", sources, settings: SETTINGS }), { import: findImports })
);
const errors = (output.errors || []).filter((e) => e.severity === "error");
// Warnings in our own sources do not stop the build but are shown: they often point at a real
// mistake. Those inside OpenZeppelin are its maintainers' business and only noise here.
const ours = (e) => !((e.sourceLocation && e.sourceLocation.file) || "").startsWith("@");
for (const w of (output.errors || []).filter((e) => e.severity === "warning" && ours(e))) {
  console.error(w.formattedMessage);
}
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
fs.mkdirSync(outDir, { recursive: true });
for (const name of CONTRACTS) {
  const c = output.contracts[`${name}.sol`][name];
  const artifact = {
    contractName: name,
    compiler: { name: "solc", version: solc.version() },
    settings: { optimizer: SETTINGS.optimizer, evmVersion: SETTINGS.evmVersion },
    abi: c.abi,
    bytecode: "0x" + c.evm.bytecode.object,
    deployedBytecode: "0x" + c.evm.deployedBytecode.object,
  };
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + "\n");
  console.log(`${name}: ${(c.evm.bytecode.object.length / 2) | 0} bytes -> ${path.relative(process.cwd(), outDir)}`);
}
