// count, draft and models against the real functions.

import assert from "node:assert/strict";
import { test } from "node:test";

import { assertShape, meter, newSessionId, rejectsWith } from "./support/env.js";

test("count a text for a model: exact with the model's own encoding", async () => {
  const m = await meter();
  const count = await m.count("Hello, world!", { model: "gpt-4o" });
  assertShape(count, "TokenCount");
  assert.deepEqual(count, { count: 4, model: "gpt-4o", encoding: "o200k_base", exact: true });
});

test("count with an encoding only, and for a model counted with the nearest encoding", async () => {
  const m = await meter();
  const byEncoding = await m.count("Hello, world!", { encoding: "cl100k_base" });
  assertShape(byEncoding, "TokenCount");
  assert.equal(byEncoding.model, null);
  assert.equal(byEncoding.encoding, "cl100k_base");
  const claude = await m.count("Hello, world!", { model: "claude-sonnet-4" });
  assert.equal(claude.exact, false);
});

test("count chat messages with the per-message overhead", async () => {
  const m = await meter();
  const text = await m.count("Hello", { model: "gpt-4o" });
  const messages = await m.count([{ role: "user", content: "Hello" }], { model: "gpt-4o" });
  assertShape(messages, "TokenCount");
  // 3 per message, the role and content tokens, 3 to prime the reply.
  assert.equal(messages.count, 3 + 1 + text.count + 3);
  const withNulls = await m.count([{ role: "user", content: "Hello", name: null }], { model: "gpt-4o" });
  assert.equal(withNulls.count, messages.count, "null fields of SDK message objects are dropped");
});

test("draft stores a session's draft count against a limit", async () => {
  const m = await meter();
  const sid = newSessionId();
  const usage = await m.draft(sid, "Hello, world!", { model: "gpt-4o", max: 5 });
  assertShape(usage, "TokenUsage");
  assert.equal(usage.session_id, sid);
  assert.equal(usage.count, 4);
  assert.equal(usage.max, 5);
  assert.equal(usage.percentage, 80);
  assert.equal(usage.warning, true);
  assert.equal(usage.level, "warning");
  assert.equal(usage.duplicate, false);
  assert.equal((await m.draft(sid, "")).max, 8000, "no model and no max: the seed's 8,000");
});

test("models lists the registry", async () => {
  const m = await meter();
  const reply = await m.models();
  assertShape(reply, "ModelsReply");
  const gpt4o = reply.models.find((model) => model.name === "gpt-4o");
  assert.ok(gpt4o, "gpt-4o is listed");
  assert.equal(gpt4o.context_window, 128_000);
  assert.equal(gpt4o.encoding, "o200k_base");
  assert.equal(gpt4o.exact, true);
});

test("unknown_model, thrown at once", async () => {
  const m = await meter();
  const error = await rejectsWith(m.count("hi", { model: "no-such-model-anywhere" }), "unknown_model");
  assert.equal(error.attempts, 1);
  assert.equal(error.status, 404);
  assert.ok(error.message.length > 0);
  await rejectsWith(m.set(newSessionId(), { used: 1, model: "no-such-model-anywhere" }), "unknown_model");
});

test("invalid_request from the functions is thrown at once, never retried", async () => {
  const retries = [];
  const m = await meter({ onRetry: (info) => retries.push(info) });
  const sid = newSessionId();
  const bad = [
    () => m.add(sid, -1),
    () => m.add(sid, 1.5),
    () => m.add(sid, "5"),
    () => m.set(sid, { used: 1, totl: 5 }), // a typo is reported, not dropped
    () => m.set(sid, { used: 1, total: 100, reserved: 100 }), // reserved must stay below total
    () => m.history(sid, { limit: 0 }),
    () => m.count("hi", { encoding: "no_such_encoding" }),
    () => m.draft(sid, 42),
  ];
  for (const call of bad) {
    const error = await rejectsWith(call(), "invalid_request");
    assert.equal(error.attempts, 1);
    assert.equal(error.status, 400);
  }
  assert.deepEqual(retries, []);
  assert.equal((await m.get(sid)).revision, 0, "bad input changed nothing");
});

test("client-side invalid_request: nothing to count", async () => {
  const m = await meter();
  assert.equal((await rejectsWith(m.count(42), "invalid_request")).attempts, 0);
  assert.equal((await rejectsWith(m.set(newSessionId(), 5), "invalid_request")).attempts, 0);
});

test("payload_too_large for a text over the limit (4 MiB), from the server or the client", async () => {
  const m = await meter();
  const error = await rejectsWith(m.count("a".repeat(4 * 1024 * 1024 + 1)), "payload_too_large");
  assert.ok(error.attempts <= 1);
});

test("bad session ids throw invalid_session_id without sending anything", async () => {
  const m = await meter();
  const marker = newSessionId();
  const seen = [];
  const spy = m.nc.subscribe("ctxmeter.>", { callback: (_error, msg) => seen.push(msg.subject) });
  await m.nc.flush();
  const bad = [
    "",
    `${marker}.x`,
    `${marker} x`,
    `${marker}*`,
    `${marker}>`,
    `${marker}ü`,
    `${marker}${"a".repeat(128)}`,
    undefined,
    42,
  ];
  for (const sid of bad) {
    for (const call of [
      () => m.get(sid),
      () => m.set(sid, { used: 1 }),
      () => m.add(sid, 1),
      () => m.free(sid, 1),
      () => m.reset(sid),
      () => m.compact(sid, 1),
      () => m.report(sid, { prompt_tokens: 1 }),
      () => m.draft(sid, "x"),
      () => m.history(sid),
    ]) {
      const error = await rejectsWith(call(), "invalid_session_id");
      assert.equal(error.attempts, 0);
    }
  }
  await m.nc.flush();
  spy.unsubscribe();
  assert.deepEqual(
    seen.filter((subject) => subject.includes(marker)),
    [],
  );
  assert.equal((await m.get("a".repeat(128))).session_id, "a".repeat(128), "128 characters are fine");
});
