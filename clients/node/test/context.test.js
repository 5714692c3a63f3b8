// Every context call against the real functions: reply shapes (the committed JSON Schema) and values.

import assert from "node:assert/strict";
import { test } from "node:test";

import { CtxMeter } from "../index.js";
import { assertShape, meter, natsConnection, natsUrl, newSessionId } from "./support/env.js";

test("get answers the zero state of a new session", async () => {
  const m = await meter();
  const sid = newSessionId();
  const usage = await m.get(sid);
  assertShape(usage, "ContextUsage");
  assert.equal(usage.session_id, sid);
  assert.equal(usage.used, 0);
  assert.equal(usage.revision, 0);
  assert.equal(usage.level, "normal");
  assert.equal(usage.left, usage.compact_at);
  assert.equal("duplicate" in usage, false, "get is no change: no duplicate flag");
});

test("set, add and free change used; each reply is a ContextUsage", async () => {
  const m = await meter();
  const sid = newSessionId();
  const set = await m.set(sid, { used: 1000, total: 10_000 });
  assertShape(set, "ContextUsage");
  assert.equal(set.used, 1000);
  assert.equal(set.total, 10_000);
  assert.equal(set.percentage, 10);
  assert.equal(set.duplicate, false);
  assert.ok(set.revision > 0);

  const added = await m.add(sid, 7500);
  assertShape(added, "ContextUsage");
  assert.equal(added.used, 8500);
  assert.equal(added.level, "warning");
  assert.equal(added.estimated, true, "add is an estimate until the next usage report");
  assert.ok(added.revision > set.revision);

  const freed = await m.free(sid, 9000);
  assertShape(freed, "ContextUsage");
  assert.equal(freed.used, 0, "free floors at 0");
  assert.deepEqual(await m.get(sid), freed);
});

test("duplicate is not enumerable: the reply is exactly the contract's object", async () => {
  const m = await meter();
  const reply = await m.add(newSessionId(), 1);
  assert.equal(Object.keys(reply).includes("duplicate"), false);
  assert.equal(JSON.stringify(reply).includes("duplicate"), false);
  assert.equal(reply.duplicate, false);
});

test("set with a model takes its window; reserved and compact_at give left and level", async () => {
  const m = await meter();
  const sid = newSessionId();
  const byModel = await m.set(sid, { used: 64_000, model: "gpt-4o" });
  assert.equal(byModel.total, 128_000);
  assert.equal(byModel.model, "gpt-4o");

  const usage = await m.set(sid, { used: 90_000, total: 200_000, reserved: 20_000, compact_at: 100_000 });
  assertShape(usage, "ContextUsage");
  assert.equal(usage.reserved, 20_000);
  assert.equal(usage.compact_at, 100_000);
  assert.equal(usage.left, 10_000);
  assert.equal(usage.percentage, 45, "percentage stays used / total");
  assert.equal(usage.level, "critical", "level comes from used / compact_at (90 %)");
  assert.equal(usage.estimated, false);

  const stated = await m.set(sid, { used: 50_000, estimated: true });
  assert.equal(stated.estimated, true);
  assert.equal(stated.compact_at, 100_000, "compact_at stays as set");
});

test("reset zeroes used and keeps the window, model, reserved and compact_at", async () => {
  const m = await meter();
  const sid = newSessionId();
  await m.set(sid, { used: 5000, total: 50_000, model: "gpt-4o", reserved: 1000, compact_at: 40_000 });
  const usage = await m.reset(sid);
  assertShape(usage, "ContextUsage");
  assert.equal(usage.used, 0);
  assert.equal(usage.total, 50_000);
  assert.equal(usage.model, "gpt-4o");
  assert.equal(usage.reserved, 1000);
  assert.equal(usage.compact_at, 40_000);
  assert.equal(usage.duplicate, false);
});

test("compact records a compaction", async () => {
  const m = await meter();
  const sid = newSessionId();
  await m.set(sid, { used: 150_000, total: 200_000 });
  const usage = await m.compact(sid, 30_000);
  assertShape(usage, "ContextUsage");
  assert.equal(usage.used, 30_000);
  assert.equal(usage.compactions, 1);
  assert.equal(typeof usage.compacted_at, "string");
  assert.ok(!Number.isNaN(Date.parse(usage.compacted_at)), usage.compacted_at);
  assert.equal(usage.duplicate, false);
  assert.equal((await m.compact(sid, 20_000)).compactions, 2);
});

test("history lists the changes, oldest first, the last being the current state", async () => {
  const m = await meter();
  const sid = newSessionId();
  await m.set(sid, { used: 100, total: 1000 });
  await m.add(sid, 50);
  await m.free(sid, 30);
  const current = await m.compact(sid, 10);
  const history = await m.history(sid);
  assertShape(history, "ContextHistory");
  assert.equal(history.session_id, sid);
  assert.deepEqual(
    history.points.map((point) => [point.op, point.used]),
    [
      ["set", 100],
      ["add", 150],
      ["free", 120],
      ["compact", 10],
    ],
  );
  const last = history.points.at(-1);
  assert.equal(last.revision, current.revision);
  assert.equal(last.total, 1000);

  const newest = await m.history(sid, { limit: 2 });
  assert.deepEqual(
    newest.points.map((point) => point.op),
    ["free", "compact"],
  );
});

test("concurrent adds on one meter are each applied once (one key per call)", async () => {
  const m = await meter();
  const sid = newSessionId();
  const replies = await Promise.all(Array.from({ length: 20 }, () => m.add(sid, 3)));
  assert.ok(replies.every((reply) => reply.duplicate === false));
  assert.equal((await m.get(sid)).used, 60);
});

test("new CtxMeter(nc).close() leaves the connection open; CtxMeter.connect(...).close() closes its own", async () => {
  const nc = await natsConnection();
  const borrowed = new CtxMeter(nc);
  await borrowed.close();
  assert.equal(nc.isClosed(), false);
  assert.equal((await borrowed.get(newSessionId())).used, 0, "the connection still serves");

  const owned = await CtxMeter.connect(natsUrl(), { name: "ctxmeter-node-test" });
  assert.equal((await owned.add(newSessionId(), 1)).used, 1);
  await owned.close();
  assert.equal(owned.nc.isClosed(), true);
});

test("meter options are checked: a misspelt or invalid one is a TypeError", async () => {
  const nc = await natsConnection();
  assert.throws(() => new CtxMeter(nc, { deadlin: 5000 }), /unknown CtxMeter option deadlin/);
  assert.throws(() => new CtxMeter(nc, { deadline: 0 }), /deadline must be a positive/);
  assert.throws(() => new CtxMeter(nc, { onRetry: "log" }), /onRetry must be a function/);
  assert.throws(() => new CtxMeter(undefined), TypeError);
});

test("the shape check itself refuses what the contract does not allow", async () => {
  const usage = await (await meter()).get(newSessionId());
  const { left, ...missing } = usage;
  assert.equal(typeof left, "number");
  for (const broken of [missing, { ...usage, extra: 1 }, { ...usage, used: -1 }, { ...usage, level: "high" }]) {
    assert.throws(() => assertShape(broken, "ContextUsage"), assert.AssertionError);
  }
});
