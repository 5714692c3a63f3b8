// Type declarations for ctxmeter-elements.js: the <ctxmeter-context> and <ctxmeter-draft> custom elements.

import type { CtxMeter, Status, TokenSource } from "./ctxmeter.js";
import type { ContextUsage, TokenUsage } from "./ctxmeter-schemas.js";

/** What both elements share: the session, the edge, auth and the shared client. */
declare class CtxmeterMeterElement extends HTMLElement {
  /** The `session-id` attribute: 1–128 characters of A-Z a-z 0-9 _ -. */
  sessionId: string;
  /** The `url` attribute: the edge's base URL ("" for the page's origin). */
  url: string;
  /** Gives a JWT (or a promise of one) when the edge requires auth; may be set before or after connecting. */
  getToken: TokenSource | undefined;
  /** The CtxMeter shared by every element of this session and edge on the page; null while off the page. */
  readonly client: CtxMeter | null;
  /** The connection status (also the `state` attribute). */
  readonly status: Status;
}

/** `<ctxmeter-context session-id url label>`: the context ring of a session. */
export declare class CtxmeterContextElement extends CtxmeterMeterElement {
  /** The latest ContextUsage shown, or null before the first. */
  readonly usage: ContextUsage | null;
}

/** `<ctxmeter-draft session-id url for max-tokens debounce-ms model label>`: a draft message's token counter. */
export declare class CtxmeterDraftElement extends CtxmeterMeterElement {
  /** The text counted: the `for` text box's, or what was set here (setting it counts it, debounced). */
  text: string;
  /** True while a count waits for the pause after typing or for its reply (also the `pending` attribute). */
  readonly pending: boolean;
  /** The latest TokenUsage of the session's draft, or null. */
  readonly usage: TokenUsage | null;
  /** The `max-tokens` attribute, when set. */
  readonly maxTokens: number | undefined;
  /** The `debounce-ms` attribute (default 300). */
  readonly debounceMs: number;
  /** The `model` attribute, when set. */
  readonly model: string | undefined;
}

/** "79%", "79.5%", "<0.1%" (floored, so a value just under a threshold never reads as the threshold). */
export declare function percentText(percentage: number): string;
/** A connection status in words ("Live", "Reconnecting in 1.2 s (attempt 2)", ...). */
export declare function statusText(status: Status): string;

/** The elements' events; they bubble and cross shadow roots, so a page can listen anywhere above them. */
export interface CtxmeterEventMap {
  "ctxmeter-context": CustomEvent<ContextUsage>;
  "ctxmeter-draft": CustomEvent<TokenUsage>;
  "ctxmeter-status": CustomEvent<Status>;
}

declare global {
  interface HTMLElementTagNameMap {
    "ctxmeter-context": CtxmeterContextElement;
    "ctxmeter-draft": CtxmeterDraftElement;
  }
  interface HTMLElementEventMap extends CtxmeterEventMap {}
  interface DocumentEventMap extends CtxmeterEventMap {}
}
