// Compiled (never run) by test/types.test.js: the hand-written index.d.ts must accept the documented
// calls, type their replies, and refuse misuse (each @ts-expect-error must meet an error).

import { connect } from "@nats-io/transport-node";
import CtxMeterDefault, {
  type Changed,
  type ContextHistory,
  type ContextUsage,
  CtxMeter,
  CtxMeterError,
  type ModelsReply,
  type TokenCount,
  type TokenUsage,
  isSessionId,
  usageOf,
} from "ctxmeter-client";

export async function documentedCalls(): Promise<void> {
  const m = await CtxMeter.connect("nats://127.0.0.1:4222", { name: "agent" }, { deadline: 5_000 });
  const borrowed = new CtxMeterDefault(await connect({ servers: "nats://127.0.0.1:4222" }), {
    onRetry: ({ attempt, code, delay }) => void [attempt, code.toUpperCase(), delay.toFixed(0)],
  });

  const got: ContextUsage = await m.get("s1");
  const set: Changed<ContextUsage> = await m.set("s1", {
    used: 1000,
    total: 200_000,
    model: "gpt-4o",
    reserved: 8000,
    compact_at: 150_000,
    estimated: false,
  });
  const duplicate: boolean = set.duplicate;
  const left: number = (await m.add("s1", 10, { idempotencyKey: "k1" })).left;
  await m.free("s1", 5);
  await m.reset("s1", { deadline: 1000 });
  const compactions: number = (await m.compact("s1", 500)).compactions;
  const compactedAt: string | null = (await m.compact("s1", 400)).compacted_at;
  await m.report("s1", { usage: { prompt_tokens: 1, completion_tokens: 2 }, model: "gpt-4o" });
  await m.report("s1", { input_tokens: 1, output_tokens: 2 }, { model: "claude-sonnet-4" });
  await m.report("s1", { usageMetadata: { promptTokenCount: 3 }, modelVersion: "gemini-2.5-pro" });
  const count: TokenCount = await m.count([{ role: "user", content: "hi" }], { model: "gpt-4o" });
  const byEncoding: TokenCount = await m.count("hi", { encoding: "cl100k_base" });
  const draft: TokenUsage = await m.draft("s1", "typing…", { max: 8000 });
  const history: ContextHistory = await m.history("s1", { limit: 10 });
  const op: "set" | "add" | "free" | "usage" | "reset" | "compact" = history.points[0].op;
  const models: ModelsReply = await m.models();
  const maxOutput: number | null = models.models[0].max_output;
  const usage: Record<string, unknown> = (await usageOf({ prompt_tokens: 1 })).usage;
  const source: "model" | "reported" | "default" | undefined = set.window_source;
  const reasoning: number | null | undefined = set.reasoning;
  const valid: boolean = isSessionId("s1");

  try {
    await m.get("bad.id");
  } catch (error) {
    if (error instanceof CtxMeterError) {
      const code: string = error.code;
      const attempts: number = error.attempts;
      const retryable: boolean = error.retryable;
      void [code, attempts, retryable, error.message, error.status];
    }
  }
  void [got, duplicate, left, compactions, compactedAt, count, byEncoding, draft, op, maxOutput, usage, valid];
  await borrowed.close();
  await m.close();
}

export async function misuse(m: CtxMeter): Promise<void> {
  // @ts-expect-error: used is required
  await m.set("s1", { total: 5 });
  // @ts-expect-error: tokens are a number
  await m.add("s1", "5");
  // @ts-expect-error: encodings are o200k_base or cl100k_base
  await m.count("hi", { encoding: "p50k_base" });
  // @ts-expect-error: a count is no draft
  const wrong: TokenUsage = await m.count("hi");
  // @ts-expect-error: get changes nothing, so its reply has no duplicate flag
  const flag: boolean = (await m.get("s1")).duplicate;
  // @ts-expect-error: options are objects
  await m.history("s1", 10);
  void [wrong, flag];
}
