// The hand-written index.d.ts: it declares what index.js exports, and TypeScript accepts the
// documented calls and refuses misuse (test/types/usage.ts).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { test } from "node:test";
import { promisify } from "node:util";

import * as client from "../index.js";

test("index.d.ts declares exactly the runtime exports of index.js", () => {
  const declarations = readFileSync(new URL("../index.d.ts", import.meta.url), "utf8");
  const declared = [...declarations.matchAll(/^export declare (?:const|class|function) (\w+)/gm)].map((m) => m[1]);
  if (/^export default /m.test(declarations)) declared.push("default");
  assert.deepEqual(declared.sort(), Object.keys(client).sort());
});

test("TypeScript compiles the documented usage against index.d.ts", async () => {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  const project = new URL("./types/tsconfig.json", import.meta.url).pathname;
  try {
    await promisify(execFile)(process.execPath, [tsc, "-p", project], { cwd: new URL("..", import.meta.url) });
  } catch (error) {
    assert.fail(`tsc found errors:\n${error.stdout}${error.stderr}`);
  }
});
