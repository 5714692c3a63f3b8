// The Node.js versions package.json promises are the ones every runtime dependency supports: a dependency
// whose `engines` asks for a newer Node would make the promise untrue (npm only warns).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const read = (path) => JSON.parse(readFileSync(new URL(path, import.meta.url), "utf8"));
// The lowest major version a range such as ">=18", ">= 18.0.0" or ">= 22.x" admits.
const lowestMajor = (range) => Number(/>=\s*v?(\d+)/.exec(range)?.[1] ?? Number.NaN);

test("every runtime dependency supports the Node.js versions package.json promises", () => {
  const promised = lowestMajor(read("../package.json").engines.node);
  assert.ok(Number.isInteger(promised));
  const lock = read("../package-lock.json");
  const runtime = Object.entries(lock.packages).filter(([path, entry]) => path !== "" && !entry.dev);
  assert.ok(runtime.length > 0);
  const stricter = runtime
    .filter(([, entry]) => entry.engines?.node && lowestMajor(entry.engines.node) > promised)
    .map(([path, entry]) => `${path} needs ${entry.engines.node}`);
  assert.deepEqual(stricter, []);
});

test("the Node.js running these tests is one package.json promises", () => {
  const promised = lowestMajor(read("../package.json").engines.node);
  assert.ok(Number(process.versions.node.split(".")[0]) >= promised);
});
