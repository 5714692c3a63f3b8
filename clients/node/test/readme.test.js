// The ctxmeter README's Node.js snippet runs as written: its two lines, with the server it names swapped
// for the test's and the `sessionId` and `response` an agent loop has in hand (an OpenAI chat completion,
// as the SDK returns it), report the right context size.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { CtxMeter } from "../index.js";
import { meter, natsUrl, newSessionId } from "./support/env.js";

const README = new URL("../../../README.md", import.meta.url);
const WRITTEN_URL = "nats://127.0.0.1:4222";

function nodeSnippet() {
  const text = readFileSync(README, "utf8");
  const section = text.slice(text.indexOf("Node.js ([clients/node]"));
  const match = /```js\n([\s\S]*?)```/.exec(section);
  assert.ok(match, "the README has no Node.js snippet after its Node.js line");
  return match[1];
}

test("the README's Node.js snippet reports a response as written", async () => {
  const snippet = nodeSnippet();
  assert.ok(snippet.includes(WRITTEN_URL), "the snippet no longer connects to the URL this test swaps");
  const sessionId = newSessionId();
  const response = {
    id: "chatcmpl-readme",
    object: "chat.completion",
    model: "gpt-4o-2024-08-06",
    choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
    usage: { prompt_tokens: 1200, completion_tokens: 300, total_tokens: 1500 },
  };
  const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
  const body = `${snippet.replace(WRITTEN_URL, natsUrl())}\nreturn meter;`;
  const run = new AsyncFunction("CtxMeter", "sessionId", "response", body);
  const opened = await run(CtxMeter, sessionId, response);
  try {
    const usage = await (await meter()).get(sessionId);
    assert.equal(usage.used, 1500);
    assert.equal(usage.total, 128000); // gpt-4o's window, from the model the response names
    assert.equal(usage.estimated, false);
  } finally {
    await opened.close();
  }
});
