// Idempotency keys against the real functions: a key is applied at most once per session.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { headers } from "@nats-io/transport-node";

import { DUPLICATE_HEADER, IDEMPOTENCY_HEADER } from "../index.js";
import { meter, natsConnection, newSessionId, rejectsWith } from "./support/env.js";

test("the functions answer a repeated Nats-Msg-Id with Ctxmeter-Duplicate: true and change nothing", async () => {
  const nc = await natsConnection();
  const sid = newSessionId();
  const key = randomUUID();
  const send = () => {
    const h = headers();
    h.set(IDEMPOTENCY_HEADER, key);
    return nc.request(`ctxmeter.context.add.${sid}`, JSON.stringify({ tokens: 5 }), { timeout: 5000, headers: h });
  };
  const first = await send();
  const again = await send();
  assert.notEqual(first.headers?.get(DUPLICATE_HEADER), "true");
  assert.equal(again.headers?.get(DUPLICATE_HEADER), "true");
  assert.equal(first.json().used, 5);
  assert.equal(again.json().used, 5);
  assert.equal(again.json().revision, first.json().revision);
});

test("a call repeated with its key is applied once, and the repeat says duplicate", async () => {
  const m = await meter();
  const sid = newSessionId();
  const key = `openai-response-${randomUUID()}`;
  const first = await m.add(sid, 5, { idempotencyKey: key });
  const again = await m.add(sid, 5, { idempotencyKey: key });
  assert.equal(first.duplicate, false);
  assert.equal(again.duplicate, true);
  assert.equal(again.used, 5);
  assert.equal(again.revision, first.revision);
  assert.equal((await m.get(sid)).used, 5);
  assert.equal((await m.add(sid, 5)).used, 10, "another call, another key");
});

test("every state-changing call sends a key the functions honour", async () => {
  const m = await meter();
  const sid = newSessionId();
  await m.set(sid, { used: 1000, total: 100_000 });
  const changes = {
    set: (options) => m.set(sid, { used: 2000 }, options),
    add: (options) => m.add(sid, 100, options),
    free: (options) => m.free(sid, 50, options),
    compact: (options) => m.compact(sid, 500, options),
    report: (options) => m.report(sid, { prompt_tokens: 700, completion_tokens: 70 }, options),
    reset: (options) => m.reset(sid, options),
  };
  for (const [name, change] of Object.entries(changes)) {
    const options = { idempotencyKey: `${name}-${randomUUID()}` };
    const first = await change(options);
    const before = await m.get(sid);
    await m.add(sid, 1); // a change in between: a duplicate must not undo or redo anything
    const again = await change(options);
    assert.equal(first.duplicate, false, name);
    assert.equal(again.duplicate, true, `${name} repeated with its key is a duplicate`);
    assert.equal(again.used, before.used + 1, `${name} was not applied twice`);
  }
  assert.equal((await m.history(sid)).points.filter((point) => point.op === "compact").length, 1);
});

test("a draft repeated with its key is a duplicate, and keeps the newer draft", async () => {
  const m = await meter();
  const sid = newSessionId();
  const options = { idempotencyKey: randomUUID() };
  const first = await m.draft(sid, "hello", options);
  const newer = await m.draft(sid, "hello there, a longer draft");
  const again = await m.draft(sid, "hello", options);
  assert.equal(first.duplicate, false);
  assert.equal(again.duplicate, true);
  assert.equal(again.count, newer.count, "the repeat changed nothing: the stored draft is the newer one");
  assert.equal(again.revision, newer.revision);
});

test("an idempotency key that is not 1-128 printable ASCII characters is refused before sending", async () => {
  const m = await meter();
  const sid = newSessionId();
  for (const key of ["", "a".repeat(129), "line\nbreak", "ключ"]) {
    const error = await rejectsWith(m.add(sid, 1, { idempotencyKey: key }), "invalid_request");
    assert.equal(error.attempts, 0);
  }
  assert.equal((await m.get(sid)).revision, 0);
});
