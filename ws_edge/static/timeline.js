// The demo page's timeline: a session's context used over its changes, drawn as inline SVG (no build step).
//
// Points come from CtxMeter.history() (oldest first) and then from each context_update frame. Each change is
// one step on the x axis (changes come in bursts, so a time axis would squeeze them into a line); the first
// and last times are written under the axis. The compaction point (compact_at) is a dashed line, and every
// compaction (op "compact") a marker. Hooks for tests: #timeline[data-points, data-compactions,
// data-last-used, data-last-revision, data-loads], .tl-point[data-revision, data-used, data-op],
// .tl-compaction[data-revision], #timeline-table.

const SVG = "http://www.w3.org/2000/svg";
const numbers = new Intl.NumberFormat();
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
/** Newest points kept on the page (what one history read returns by default). */
export const TIMELINE_LIMIT = 200;
/** Rows of the accessible table (newest first). */
const TABLE_ROWS = 50;

function svg(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (parent) parent.append(node);
  return node;
}

function timeOf(at) {
  const date = new Date(at);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/**
 * What a context_update changed, as well as a frame tells it (history points carry the real op; a frame
 * cannot tell a `set` from a provider's `usage` report, so both read "update" until the next history read).
 */
function inferOp(previous, usage) {
  if (!previous) return "update";
  if (usage.compactions > (previous.compactions ?? 0)) return "compact";
  if (usage.estimated && usage.used > previous.used) return "add";
  if (usage.estimated && usage.used < previous.used) return "free";
  if (!usage.estimated && usage.used === 0 && previous.used > 0) return "reset";
  return "update";
}

export class Timeline {
  /**
   * @param {HTMLElement} root  the #timeline element (the SVG is drawn inside it)
   * @param {{summary: HTMLElement, table: HTMLTableSectionElement, empty: HTMLElement}} parts
   */
  constructor(root, { summary, table, empty }) {
    this.root = root;
    this.summary = summary;
    this.table = table;
    this.empty = empty;
    this.points = [];
    this.loaded = false;
    this.loads = 0;
    /** The last usage seen (for compactions counts); frames before the first load wait in `queued`. */
    this.last = null;
    this.queued = [];
    this.chart = svg("svg", { class: "tl-chart", role: "img", focusable: "false" });
    root.append(this.chart);
    new ResizeObserver(() => this.render()).observe(root);
  }

  /**
   * Replace the points with a history read (ContextHistory). Points from frames newer than the read are
   * kept, unless `replace` (the revisions went back: what was shown was not the session's).
   */
  load(history, { replace = false } = {}) {
    const points = (history?.points ?? []).map((point) => ({ ...point }));
    const newest = points.length > 0 ? points[points.length - 1].revision : -1;
    const newer = replace ? [] : this.points.filter((point) => point.revision > newest);
    this.points = [...points, ...newer].slice(-TIMELINE_LIMIT);
    this.loaded = true;
    this.loads += 1;
    this.root.dataset.loads = String(this.loads);
    const queued = this.queued;
    this.queued = [];
    for (const usage of queued) this.push(usage, { render: false });
    this.render();
  }

  /**
   * A context_update's data. Returns "appended", "replaced", "ignored", or "behind" when it is older than
   * the newest point (the session was reset underneath, or a bad point was shown): the caller reloads.
   */
  push(usage, { render = true } = {}) {
    const previous = this.last;
    this.last = usage;
    // Revision 0: nothing stored yet (the zero state), so no change to show.
    if (!(usage.revision > 0)) return "ignored";
    if (!this.loaded) {
      this.queued.push(usage);
      return "ignored";
    }
    const newest = this.points[this.points.length - 1];
    const point = {
      at: usage.updated_at,
      op: inferOp(previous, usage),
      used: usage.used,
      total: usage.total,
      compact_at: usage.compact_at ?? usage.total,
      revision: usage.revision,
    };
    let result;
    if (newest && usage.revision === newest.revision) {
      // The same state again (a resync): keep the point, with whatever the frame says now.
      this.points[this.points.length - 1] = { ...point, op: newest.op };
      result = "replaced";
    } else if (newest && usage.revision < newest.revision) {
      result = "behind";
    } else {
      this.points.push(point);
      if (this.points.length > TIMELINE_LIMIT) this.points.splice(0, this.points.length - TIMELINE_LIMIT);
      result = "appended";
    }
    if (render) this.render();
    return result;
  }

  render() {
    const points = this.points;
    const root = this.root;
    const compactions = points.filter((point) => point.op === "compact");
    const newest = points[points.length - 1];
    root.dataset.points = String(points.length);
    root.dataset.compactions = String(compactions.length);
    root.dataset.lastUsed = newest ? String(newest.used) : "";
    root.dataset.lastRevision = newest ? String(newest.revision) : "";
    this.empty.hidden = !this.loaded || points.length > 0;
    this.#renderSummary(points, compactions);
    this.#renderTable(points);
    this.#renderChart(points);
  }

  #renderSummary(points, compactions) {
    if (!this.loaded) return;
    if (points.length === 0) {
      this.summary.textContent = "No changes yet.";
      return;
    }
    const newest = points[points.length - 1];
    const parts = [`${numbers.format(points.length)} change${points.length === 1 ? "" : "s"}`];
    parts.push(
      compactions.length === 0
        ? "no compaction"
        : `${compactions.length} compaction${compactions.length === 1 ? "" : "s"}`,
    );
    parts.push(`now ${numbers.format(newest.used)} of ${numbers.format(newest.total)}`);
    this.summary.textContent = parts.join(" · ");
  }

  #renderTable(points) {
    const rows = points.slice(-TABLE_ROWS).reverse();
    const body = this.table;
    body.replaceChildren(
      ...rows.map((point) => {
        const row = document.createElement("tr");
        for (const text of [
          timeOf(point.at),
          point.op,
          numbers.format(point.used),
          numbers.format(point.compact_at),
          numbers.format(point.total),
        ]) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }),
    );
  }

  #renderChart(points) {
    const chart = this.chart;
    const width = Math.max(200, Math.round(this.root.clientWidth || 600));
    const height = width < 480 ? 150 : 190;
    chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
    chart.setAttribute("width", String(width));
    chart.setAttribute("height", String(height));
    chart.replaceChildren();
    if (points.length === 0) {
      chart.setAttribute("aria-label", "Timeline: no changes yet");
      return;
    }
    const pad = { left: 44, right: 14, top: 12, bottom: 24 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const top = Math.max(1, ...points.map((p) => Math.max(p.total, p.used, p.compact_at)));
    const x = (i) => pad.left + (points.length === 1 ? plotW / 2 : (i * plotW) / (points.length - 1));
    const y = (value) => pad.top + plotH - (Math.min(value, top) / top) * plotH;
    const base = pad.top + plotH;

    // Grid and axis labels: 0, half and the top of the scale.
    const grid = svg("g", { class: "tl-grid", "aria-hidden": "true" }, chart);
    for (const share of [0, 0.5, 1]) {
      const gy = y(top * share);
      svg("line", { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy }, grid);
      const label = svg("text", { x: pad.left - 6, y: gy, "text-anchor": "end", "dominant-baseline": "middle" }, grid);
      label.textContent = compact.format(Math.round(top * share));
    }
    const first = svg("text", { x: pad.left, y: height - 6, "text-anchor": "start" }, grid);
    first.textContent = timeOf(points[0].at);
    if (points.length > 1) {
      const last = svg("text", { x: width - pad.right, y: height - 6, "text-anchor": "end" }, grid);
      last.textContent = timeOf(points[points.length - 1].at);
    }

    // Used: an area under a line through every change.
    const line = points.map((p, i) => `${i === 0 ? "M" : "L"}${x(i).toFixed(1)},${y(p.used).toFixed(1)}`).join(" ");
    const lastX = x(points.length - 1).toFixed(1);
    const firstX = x(0).toFixed(1);
    svg("path", { class: "tl-area", d: `${line} L${lastX},${base} L${firstX},${base} Z` }, chart);
    svg("path", { class: "tl-line", d: line }, chart);

    // The compaction point: a step line (it changes only when the policy or the window does).
    let threshold = `M${pad.left},${y(points[0].compact_at).toFixed(1)}`;
    points.forEach((p, i) => {
      if (i > 0) threshold += ` H${x(i).toFixed(1)} V${y(p.compact_at).toFixed(1)}`;
    });
    threshold += ` H${width - pad.right}`;
    svg("path", { class: "tl-threshold", d: threshold }, chart);
    const newest = points[points.length - 1];
    const thresholdLabel = svg(
      "text",
      { class: "tl-threshold-label", x: pad.left + 4, y: y(newest.compact_at) - 5, "text-anchor": "start" },
      chart,
    );
    thresholdLabel.textContent =
      newest.compact_at < newest.total ? `compacts at ${compact.format(newest.compact_at)}` : "window";

    // Compactions: a marker at each change that was one.
    const radius = points.length > 60 ? 1.5 : 3;
    points.forEach((p, i) => {
      if (p.op !== "compact") return;
      const marker = svg("g", { class: "tl-compaction", "data-revision": p.revision }, chart);
      svg("line", { x1: x(i), x2: x(i), y1: pad.top, y2: base }, marker);
      svg("path", { d: `M${x(i) - 5},${pad.top} h10 l-5,7 z` }, marker);
      svg("title", {}, marker).textContent = `Compacted to ${numbers.format(p.used)} tokens at ${timeOf(p.at)}`;
    });

    // Every change as a point (with its details on hover).
    points.forEach((p, i) => {
      const dot = svg(
        "circle",
        {
          class: i === points.length - 1 ? "tl-point tl-now" : "tl-point",
          cx: x(i).toFixed(1),
          cy: y(p.used).toFixed(1),
          r: i === points.length - 1 ? radius + 1.5 : radius,
          "data-revision": p.revision,
          "data-used": p.used,
          "data-op": p.op,
        },
        chart,
      );
      svg("title", {}, dot).textContent = `${timeOf(p.at)} · ${p.op} · ${numbers.format(p.used)} tokens`;
    });

    const lowest = Math.min(...points.map((p) => p.used));
    const highest = Math.max(...points.map((p) => p.used));
    const compactions = points.filter((p) => p.op === "compact").length;
    chart.setAttribute(
      "aria-label",
      `Timeline of the last ${points.length} change${points.length === 1 ? "" : "s"}: used between ` +
        `${numbers.format(lowest)} and ${numbers.format(highest)} tokens, now ${numbers.format(newest.used)} of ` +
        `${numbers.format(newest.total)}; compaction at ${numbers.format(newest.compact_at)}; ` +
        `${compactions === 0 ? "no compactions" : `${compactions} compaction${compactions === 1 ? "" : "s"}`}.`,
    );
  }
}
