// Retries and deadlines, on a NATS server where no functions serve: each test answers requests itself
// (as the functions would, error headers included), or asks the pytest wrapper to start the real
// functions while a call is retrying. The tests run in order; the last one starts the functions.

import assert from "node:assert/strict";
import { test } from "node:test";
import { headers } from "@nats-io/transport-node";

import { IDEMPOTENCY_HEADER, RETRYABLE_ERRORS } from "../index.js";
import { bareNatsUrl, meter, natsConnection, newSessionId, rejectsWith } from "./support/env.js";

const FAST = { backoffInitial: 5, backoffMax: 40 };
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function errorReply(msg, code, status, message = `${code} for the test`) {
  const h = headers();
  h.set("Nats-Service-Error", message);
  h.set("Nats-Service-Error-Code", String(status));
  msg.respond(JSON.stringify({ error: { code, message } }), { headers: h });
}

function usageReply(sid, used) {
  return JSON.stringify({
    session_id: sid,
    used,
    total: 1000,
    percentage: used / 10,
    level: "normal",
    model: null,
    revision: 1,
    updated_at: "2025-01-01T00:00:00Z",
    reserved: 0,
    compact_at: 1000,
    left: 1000 - used,
    estimated: true,
    compactions: 0,
    compacted_at: null,
  });
}

/** Answers `subject` with `answer(msg, n)` (n from 1) and records every request's idempotency key. */
async function responder(subject, answer) {
  const nc = await natsConnection(bareNatsUrl());
  const keys = [];
  nc.subscribe(subject, {
    callback: (_error, msg) => {
      keys.push(msg.headers?.get(IDEMPOTENCY_HEADER) ?? null);
      answer(msg, keys.length);
    },
  });
  await nc.flush();
  return keys;
}

test("no responders until the deadline: unavailable, after several jittered attempts", async () => {
  const retries = [];
  const m = await meter({ ...FAST, deadline: 400, onRetry: (info) => retries.push(info) }, bareNatsUrl());
  const started = Date.now();
  const error = await rejectsWith(m.add(newSessionId(), 1), "unavailable");
  const elapsed = Date.now() - started;
  // It gives up when the next wait would pass the deadline: at most one wait (backoffMax) before it.
  assert.ok(elapsed >= 400 - 40 - 5, `gave up after ${elapsed} ms, too long before the deadline`);
  assert.ok(elapsed < 5000, `gave up after ${elapsed} ms`);
  assert.ok(error.attempts > 2, `only ${error.attempts} attempts`);
  assert.equal(error.retryable, true);
  assert.ok(retries.every((info) => info.code === "unavailable"));
  // Full jitter: each wait is a random time below its exponential step (capped at backoffMax).
  for (const info of retries) {
    assert.ok(info.delay >= 0 && info.delay <= Math.min(40, 5 * 2 ** (info.attempt - 1)), JSON.stringify(info));
  }
  assert.ok(new Set(retries.map((info) => info.delay)).size > 1, "the waits are random");
});

test("a per-call deadline overrides the meter's", async () => {
  const m = await meter({ ...FAST, deadline: 60_000 }, bareNatsUrl());
  const started = Date.now();
  await rejectsWith(m.get(newSessionId(), { deadline: 200 }), "unavailable");
  assert.ok(Date.now() - started < 5000);
});

test("conflict and internal are retried with the same idempotency key until an answer", async () => {
  const sid = newSessionId();
  const keys = await responder(`ctxmeter.context.add.${sid}`, (msg, n) => {
    if (n === 1) errorReply(msg, "conflict", 409);
    else if (n === 2) errorReply(msg, "internal", 500);
    else if (n === 3) errorReply(msg, "conflict", 409);
    else msg.respond(usageReply(sid, 7));
  });
  const retries = [];
  const m = await meter({ ...FAST, onRetry: (info) => retries.push(info.code) }, bareNatsUrl());
  const reply = await m.add(sid, 7);
  assert.equal(reply.used, 7);
  assert.deepEqual(retries, ["conflict", "internal", "conflict"]);
  assert.equal(keys.length, 4);
  assert.match(keys[0], UUID_RE);
  assert.deepEqual(new Set(keys), new Set([keys[0]]), "one key for every attempt of a call");

  // The next call is another change: another key.
  await m.add(sid, 7);
  assert.equal(keys.length, 5);
  assert.notEqual(keys[4], keys[0]);
});

test("a lost reply (timeout) is retried with the same key; a duplicate answer is returned as such", async () => {
  const sid = newSessionId();
  const keys = await responder(`ctxmeter.context.usage.${sid}`, (msg, n) => {
    if (n === 1) return; // applied, but the reply never arrives
    const h = headers();
    h.set("Ctxmeter-Duplicate", "true");
    msg.respond(usageReply(sid, 42), { headers: h });
  });
  const m = await meter({ ...FAST, attemptTimeout: 200 }, bareNatsUrl());
  const reply = await m.report(sid, { prompt_tokens: 40, completion_tokens: 2 });
  assert.equal(reply.duplicate, true);
  assert.equal(reply.used, 42);
  assert.equal(keys.length, 2);
  assert.equal(keys[1], keys[0]);
});

test("read-only calls carry no idempotency key", async () => {
  const sid = newSessionId();
  const keys = await responder(`ctxmeter.context.get.${sid}`, (msg) => msg.respond(usageReply(sid, 0)));
  const m = await meter(FAST, bareNatsUrl());
  const reply = await m.get(sid);
  assert.equal(reply.used, 0);
  assert.deepEqual(keys, [null]);
});

test("a retryable code until the deadline: thrown with that code", async () => {
  const sid = newSessionId();
  const keys = await responder(`ctxmeter.context.set.${sid}`, (msg) => errorReply(msg, "conflict", 409));
  const m = await meter({ ...FAST, deadline: 300 }, bareNatsUrl());
  const error = await rejectsWith(m.set(sid, { used: 1 }), "conflict");
  assert.equal(error.status, 409);
  assert.equal(error.attempts, keys.length);
  assert.ok(keys.length > 1);
  assert.deepEqual(RETRYABLE_ERRORS.includes(error.code), true);
});

test("input errors are thrown at once, with the server's message", async () => {
  const sid = newSessionId();
  const codes = ["invalid_json", "invalid_request", "invalid_session_id", "unknown_model", "payload_too_large"];
  const statuses = [400, 400, 400, 404, 413];
  let next = 0;
  const keys = await responder(`ctxmeter.context.free.${sid}`, (msg) => {
    errorReply(msg, codes[next], statuses[next], `the server's words on ${codes[next]}`);
    next += 1;
  });
  const m = await meter(FAST, bareNatsUrl());
  for (const [i, code] of codes.entries()) {
    const error = await rejectsWith(m.free(sid, 1), code);
    assert.equal(error.attempts, 1);
    assert.equal(error.status, statuses[i]);
    assert.equal(error.message, `the server's words on ${code}`);
    assert.equal(error.retryable, false);
  }
  assert.equal(keys.length, codes.length);
});

test("a closed connection is not retried", async () => {
  const m = await meter({ ...FAST, deadline: 30_000 }, bareNatsUrl());
  await m.nc.close();
  const started = Date.now();
  const error = await rejectsWith(m.get(newSessionId()), "unavailable");
  assert.equal(error.attempts, 1);
  assert.ok(Date.now() - started < 5000);
});

test("a call made before the functions start succeeds once they serve (real functions)", async () => {
  const control = await natsConnection(bareNatsUrl());
  const retries = [];
  const m = await meter({ deadline: 60_000, onRetry: (info) => retries.push(info.code) }, bareNatsUrl());
  const sid = newSessionId();
  try {
    // The add's first request goes out on this connection before the request that starts the functions,
    // so it surely finds no responders.
    const pending = m.add(sid, 7);
    await m.nc.flush();
    await control.request("ctxmeter_test.functions.start", "", { timeout: 60_000 });
    const usage = await pending;
    assert.equal(usage.used, 7);
    assert.equal(usage.duplicate, false);
    assert.ok(retries.length >= 1, "the call retried");
    assert.equal(retries[0], "unavailable");
    assert.equal((await m.get(sid)).used, 7, "applied once");
  } finally {
    await control.request("ctxmeter_test.functions.stop", "", { timeout: 60_000 });
  }
});
