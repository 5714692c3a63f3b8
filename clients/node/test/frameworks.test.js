// report() with what Node agent developers hold: Vercel AI SDK results from its own mock language models
// (AI SDK 6, and AI SDK 5 installed as "ai-v5"), streamed provider events, and the shapes the AI SDK keeps
// its providers' usage in. Each number follows the provider's documented rule: the last request's input and
// output, less the reasoning the model drops from the next turn.

import assert from "node:assert/strict";
import { test } from "node:test";

import { generateText, stepCountIs, streamText, tool } from "ai";
import { MockLanguageModelV3, simulateReadableStream } from "ai/test";
import { generateText as generateTextV5, stepCountIs as stepCountIsV5, tool as toolV5 } from "ai-v5";
import { MockLanguageModelV2 } from "ai-v5/test";
import { z } from "zod";

import { CtxMeter } from "../index.js";
import { meter, newSessionId, rejectsWith } from "./support/env.js";

const weather = { description: "The weather in a city", inputSchema: z.object({ city: z.string() }) };
const lookup = async ({ city }) => `sunny in ${city}`;

// Two requests: a tool call (20,000 in, 500 out of which 300 reasoning), then the answer (40,000 in, 1,000
// out of which 500 reasoning). The run's total is 61,500; the context after it is 40,000 + 1,000 - 500.
function v3Usage(input, output, reasoning) {
  return {
    inputTokens: { total: input, noCache: input, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: output, text: output - reasoning, reasoning },
  };
}

function modelV3() {
  let calls = 0;
  return new MockLanguageModelV3({
    modelId: "o3",
    doGenerate: async () => {
      calls += 1;
      const response = { id: `r${calls}`, modelId: "o3-2025-04-16", timestamp: new Date(0) };
      if (calls === 1) {
        return {
          content: [{ type: "tool-call", toolCallId: "c1", toolName: "weather", input: '{"city":"Paris"}' }],
          finishReason: { unified: "tool-calls", raw: "tool_calls" },
          usage: v3Usage(20_000, 500, 300),
          response,
          warnings: [],
        };
      }
      return {
        content: [{ type: "text", text: "Sunny." }],
        finishReason: { unified: "stop", raw: "stop" },
        usage: v3Usage(40_000, 1_000, 500),
        response,
        warnings: [],
      };
    },
  });
}

test("AI SDK 6 generateText: the result's last step, not its totalUsage", async () => {
  const result = await generateText({
    model: modelV3(),
    prompt: "Weather in Paris?",
    tools: { weather: tool({ ...weather, execute: lookup }) },
    stopWhen: stepCountIs(2),
  });
  assert.equal(result.steps.length, 2);
  assert.equal(result.totalUsage.inputTokens, 60_000, "the AI SDK's own sum");
  const m = await meter();
  const sid = newSessionId();
  const usage = await m.report(sid, result);
  assert.deepEqual([usage.used, usage.reasoning, usage.model, usage.total], [40_500, 500, "o3-2025-04-16", 200_000]);
  const step = await m.report(sid, result.steps[0]);
  assert.equal(step.used, 20_200, "a step reports its own request");
  const error = await rejectsWith(m.report(sid, { totalUsage: result.totalUsage }), "invalid_request");
  assert.match(error.message, /last step's usage/);
  assert.equal(error.attempts, 0);
});

test("AI SDK 6 streamText: the result's promised usage, once the stream is read", async () => {
  const model = new MockLanguageModelV3({
    modelId: "o3",
    doStream: async () => ({
      stream: simulateReadableStream({
        chunks: [
          { type: "response-metadata", id: "r1", modelId: "o3-2025-04-16", timestamp: new Date(0) },
          { type: "text-start", id: "t" },
          { type: "text-delta", id: "t", delta: "Sunny." },
          { type: "text-end", id: "t" },
          { type: "finish", finishReason: { unified: "stop", raw: "stop" }, usage: v3Usage(40_000, 1_000, 500) },
        ],
      }),
    }),
  });
  const result = streamText({ model, prompt: "Weather?" });
  await result.consumeStream();
  const usage = await (await meter()).report(newSessionId(), result);
  assert.deepEqual([usage.used, usage.reasoning, usage.model], [40_500, 500, "o3-2025-04-16"]);
});

test("AI SDK 5 generateText: inputTokens/outputTokens/reasoningTokens of the last step", async () => {
  let calls = 0;
  const model = new MockLanguageModelV2({
    modelId: "o3",
    doGenerate: async () => {
      calls += 1;
      const response = { id: `r${calls}`, modelId: "o3-2025-04-16", timestamp: new Date(0) };
      const usage = (input, output, reasoning) => ({
        inputTokens: input,
        outputTokens: output,
        totalTokens: input + output,
        reasoningTokens: reasoning,
      });
      return calls === 1
        ? {
            content: [{ type: "tool-call", toolCallId: "c1", toolName: "weather", input: '{"city":"Paris"}' }],
            finishReason: "tool-calls",
            usage: usage(20_000, 500, 300),
            response,
            warnings: [],
          }
        : {
            content: [{ type: "text", text: "Sunny." }],
            finishReason: "stop",
            usage: usage(40_000, 1_000, 500),
            response,
            warnings: [],
          };
    },
  });
  const result = await generateTextV5({
    model,
    prompt: "Weather in Paris?",
    tools: { weather: toolV5({ ...weather, execute: lookup }) },
    stopWhen: stepCountIsV5(2),
  });
  assert.equal(result.steps.length, 2);
  const usage = await (await meter()).report(newSessionId(), result);
  assert.deepEqual([usage.used, usage.reasoning, usage.model], [40_500, 500, "o3-2025-04-16"]);
});

test("AI SDK 5 with Anthropic: the provider's own usage, where the AI SDK leaves the cache out", async () => {
  // @ai-sdk/anthropic 2 reports inputTokens without cache reads and writes, and keeps Anthropic's usage in
  // providerMetadata.anthropic.usage: that is what is reported.
  const step = {
    usage: { inputTokens: 10, outputTokens: 500, totalTokens: 510, cachedInputTokens: 30_000 },
    providerMetadata: {
      anthropic: {
        cacheCreationInputTokens: 2_000,
        usage: { input_tokens: 10, cache_creation_input_tokens: 2_000, cache_read_input_tokens: 30_000, output_tokens: 500 },
      },
    },
    response: { modelId: "claude-sonnet-4-5-20250929" },
  };
  const usage = await (await meter()).report(newSessionId(), { steps: [step], ...step, totalUsage: step.usage });
  assert.deepEqual([usage.used, usage.model, usage.total], [32_510, "claude-sonnet-4-5-20250929", 200_000]);
});

test("AI SDK 4 usage: promptTokens + completionTokens", async () => {
  const usage = await (await meter()).report(
    newSessionId(),
    { promptTokens: 900, completionTokens: 100, totalTokens: 1_000 },
    { model: "gpt-4o" },
  );
  assert.deepEqual([usage.used, usage.total], [1_000, 128_000]);
});

test("OpenAI Responses stream: the response.completed event", async () => {
  const event = {
    type: "response.completed",
    sequence_number: 9,
    response: {
      id: "resp_1",
      object: "response",
      model: "gpt-5-2025-08-07",
      output: [],
      usage: {
        input_tokens: 30_000,
        input_tokens_details: { cached_tokens: 0 },
        output_tokens: 4_000,
        output_tokens_details: { reasoning_tokens: 3_000 },
        total_tokens: 34_000,
      },
    },
  };
  const usage = await (await meter()).report(newSessionId(), event);
  assert.deepEqual([usage.used, usage.reasoning, usage.model, usage.total], [31_000, 3_000, "gpt-5-2025-08-07", 400_000]);
});

test("Anthropic raw stream events, one after the other", async () => {
  const m = await meter();
  const sid = newSessionId();
  const start = {
    type: "message_start",
    message: {
      id: "msg_1",
      type: "message",
      role: "assistant",
      model: "claude-sonnet-4-5-20250929",
      content: [],
      stop_reason: null,
      usage: { input_tokens: 10, cache_read_input_tokens: 30_000, cache_creation_input_tokens: 0, output_tokens: 1 },
    },
  };
  assert.equal((await m.report(sid, start)).used, 30_011);
  const delta = { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 500 } };
  const usage = await m.report(sid, delta);
  assert.deepEqual([usage.used, usage.model, usage.total], [30_510, "claude-sonnet-4-5-20250929", 200_000]);
});

test("a run's total is refused with what to report instead, naming the object's type", async () => {
  class Usage {
    constructor() {
      Object.assign(this, { requests: 3, input_tokens: 61_000, output_tokens: 900 });
    }
  }
  const error = await rejectsWith((await meter()).report(newSessionId(), new Usage()), "invalid_request");
  assert.match(error.message, /not the context's size/);
  assert.match(error.message, /\(reported object: Usage\)$/);
});

test("connect() with nothing listening: one CtxMeterError('unavailable') naming the URL, at once", async () => {
  const started = Date.now();
  const error = await rejectsWith(CtxMeter.connect("nats://someone:secret@127.0.0.1:1"), "unavailable");
  assert.ok(Date.now() - started < 5_000);
  assert.match(error.message, /no NATS server answers at nats:\/\/127\.0\.0\.1:1/);
  assert.match(error.message, /`ctxmeter up`/);
  assert.doesNotMatch(error.message, /secret/);
});
