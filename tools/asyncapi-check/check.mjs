// Validate an AsyncAPI document with the official parser (@asyncapi/parser), as CI does
// (tests/test_asyncapi.py runs it):
//
//   node tools/asyncapi-check/check.mjs schemas/asyncapi.yaml [--print-json]
//   node tools/asyncapi-check/check.mjs some.yaml --load-only
//
// Prints every diagnostic (errors, warnings, infos, hints) to stderr and exits 1 when any is an error,
// 2 on a usage or read error, 0 otherwise. --print-json also prints the file as read by a YAML loader
// (js-yaml's default schema, the strictest reading of plain scalars) as JSON on stdout, so the tests can
// check that the hand-written YAML reads back as exactly the document it was generated from;
// --load-only does only that (for YAML that is no AsyncAPI document).

import { readFile } from "node:fs/promises";
import { resolve } from "node:path";

import { DiagnosticSeverity, Parser } from "@asyncapi/parser";
import yaml from "js-yaml";

const FLAGS = new Set(["--print-json", "--load-only"]);
const SEVERITY = {
  [DiagnosticSeverity.Error]: "error",
  [DiagnosticSeverity.Warning]: "warning",
  [DiagnosticSeverity.Information]: "info",
  [DiagnosticSeverity.Hint]: "hint",
};

function where(diagnostic) {
  const path = (diagnostic.path ?? []).join("/");
  const start = diagnostic.range?.start;
  const line = start ? `:${start.line + 1}:${start.character + 1}` : "";
  return `${line} ${path ? `/${path}` : "(document)"}`;
}

async function validate(name, file, text) {
  const { document, diagnostics } = await new Parser().parse(text, { source: file });
  for (const diagnostic of diagnostics) {
    const severity = SEVERITY[diagnostic.severity] ?? String(diagnostic.severity);
    console.error(`${severity}: ${name}${where(diagnostic)}: ${diagnostic.message} [${diagnostic.code}]`);
  }
  const errors = diagnostics.filter((diagnostic) => diagnostic.severity === DiagnosticSeverity.Error);
  if (errors.length > 0 || document === undefined) {
    console.error(`${name}: ${errors.length} error(s): not a valid AsyncAPI document`);
    return false;
  }
  console.error(`${name}: a valid AsyncAPI ${document.version()} document (${diagnostics.length} other diagnostic(s))`);
  return true;
}

async function main(argv) {
  const args = argv.filter((arg) => !FLAGS.has(arg));
  const unknown = args.filter((arg) => arg.startsWith("--"));
  if (args.length !== 1 || unknown.length > 0) {
    console.error("usage: node check.mjs <asyncapi.yaml> [--print-json | --load-only]");
    return 2;
  }
  const [name] = args;
  const file = resolve(name);
  let text;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    console.error(`cannot read ${file}: ${error.message}`);
    return 2;
  }

  if (!argv.includes("--load-only") && !(await validate(name, file, text))) {
    return 1;
  }
  if (argv.includes("--print-json") || argv.includes("--load-only")) {
    let loaded;
    try {
      loaded = yaml.load(text);
    } catch (error) {
      console.error(`${name}: not YAML: ${error.message}`);
      return 1;
    }
    process.stdout.write(`${JSON.stringify(loaded)}\n`);
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
