// Refund analytics of a period (GET /admin/stats) drawn as charts, and a day's
// reconciliation with the payment channels (GET /admin/reconciliation, cs-senior).

import { barChart } from "./charts.js";
import { field, fill, h, rebuildKeeping } from "./dom.js";
import { hours, money, number, percent, shanghaiDay, time } from "./format.js";
import { label, t } from "./i18n.js";
import { errorBox } from "./notice.js";

const STATUS_ORDER = [
  "submitted",
  "pending_review",
  "needs_info",
  "appealed",
  "approved",
  "awaiting_return",
  "paying",
  "paid",
  "payout_failed",
  "rejected",
  "cancelled",
  "closed",
];
const MAX_DAYS = 366;

function dateField(id, text, value, problem) {
  return field(id, text, h("input", { type: "date", id, value, required: true }), null, problem);
}

function tile(name, value, tone) {
  return h("div", { class: ["tile", tone && `tone-${tone}`] }, h("dt", {}, name), h("dd", {}, value));
}

export class StatsView {
  constructor({ api }) {
    this.api = api;
    this.from = shanghaiDay(-29);
    this.to = shanghaiDay(0);
    this.stats = null;
    this.error = null;
    this.invalid = null;
    this.loading = false;
    this.reads = 0;
    this.element = h("section", { class: "stats page", "aria-labelledby": "stats-title" });
  }

  start() {
    this.render();
    if (!this.stats && !this.loading) this.load();
  }

  async load() {
    const from = this.element.querySelector("#stats-from")?.value || this.from;
    const to = this.element.querySelector("#stats-to")?.value || this.to;
    this.from = from;
    this.to = to;
    const days = (Date.parse(to) - Date.parse(from)) / 86400000 + 1;
    this.invalid = !from || !to ? t("stats.dates_required") : days < 1 ? t("stats.order") : days > MAX_DAYS ? t("stats.too_long", { max: MAX_DAYS }) : null;
    if (this.invalid) {
      this.render();
      this.element.querySelector("#stats-to")?.focus();
      return;
    }
    const asked = ++this.reads;
    this.loading = true;
    this.render();
    let stats = null;
    let error = null;
    try {
      stats = await this.api.stats(from, to);
    } catch (failure) {
      error = failure;
    }
    if (asked !== this.reads) return; // a later period was asked for meanwhile
    this.loading = false;
    this.stats = stats;
    this.error = error;
    this.render();
  }

  figures(stats) {
    const rate = stats.orders ? percent(stats.refunds / stats.orders) : "—";
    const reasons = Object.entries(stats.by_reason)
      .sort((a, b) => b[1] - a[1])
      .map(([reason, value]) => ({ label: label("reason", reason), value }));
    const statuses = Object.entries(stats.by_status)
      .sort((a, b) => STATUS_ORDER.indexOf(a[0]) - STATUS_ORDER.indexOf(b[0]))
      .map(([status, value]) => ({ label: label("status", status), value, tone: status }));
    const breaches = [
      { label: t("stats.sla_review"), value: stats.sla_breaches.review, tone: "late" },
      { label: t("stats.sla_payout"), value: stats.sla_breaches.payout, tone: "late" },
    ];
    const count = (value) => number(value);
    return [
      h(
        "dl",
        { class: "tiles" },
        tile(t("stats.orders"), number(stats.orders)),
        tile(t("stats.refunds"), number(stats.refunds)),
        tile(t("stats.rate"), rate),
        tile(t("stats.median_review"), hours(stats.median_review_hours)),
        tile(t("stats.median_payout"), hours(stats.median_payout_hours)),
        tile(t("stats.breaches"), number(stats.sla_breaches.review + stats.sla_breaches.payout), stats.sla_breaches.review + stats.sla_breaches.payout ? "late" : null),
      ),
      h(
        "div",
        { class: "charts" },
        barChart({ title: t("stats.by_reason"), rows: reasons, format: count, empty: t("stats.nothing") }),
        barChart({ title: t("stats.by_status"), rows: statuses, format: count, empty: t("stats.nothing") }),
        barChart({ title: t("stats.sla"), rows: breaches, format: count, empty: t("stats.nothing") }),
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "anomalies-title" },
        h("h3", { id: "anomalies-title" }, t("stats.anomalies"), " ", h("span", { class: "count" }, String(stats.anomalies.length))),
        h("p", { class: "hint" }, t("stats.anomaly_rule")),
        stats.anomalies.length === 0
          ? h("p", { class: "muted" }, t("stats.no_anomalies"))
          : h(
              "div",
              { class: "table-wrap" },
              h(
                "table",
                {},
                h("caption", { class: "visually-hidden" }, t("stats.anomalies")),
                h(
                  "thead",
                  {},
                  h("tr", {}, ["scope", "key", "orders", "refunds", "rate", "baseline"].map((name) => h("th", { scope: "col" }, t(`stats.col_${name}`)))),
                ),
                h(
                  "tbody",
                  {},
                  stats.anomalies.map((item) =>
                    h(
                      "tr",
                      {},
                      h("td", {}, label("scope", item.scope)),
                      h("td", {}, item.key),
                      h("td", { class: "number" }, number(item.orders)),
                      h("td", { class: "number" }, number(item.refunds)),
                      h("td", { class: "number late" }, percent(item.rate)),
                      h("td", { class: "number" }, percent(item.baseline_rate)),
                    ),
                  ),
                ),
              ),
            ),
      ),
    ];
  }

  render() {
    rebuildKeeping(this.element, () => {
      const from = dateField("stats-from", t("stats.from"), this.from, null);
      const to = dateField("stats-to", t("stats.to"), this.to, this.invalid);
      fill(
        this.element,
        h("h2", { id: "stats-title" }, t("stats.title")),
        h(
          "form",
          {
            class: "toolbar",
            novalidate: true,
            onsubmit: (event) => {
              event.preventDefault();
              this.load();
            },
          },
          from,
          to,
          h("button", { type: "submit", class: "primary", id: "stats-submit" }, this.loading ? t("stats.loading") : t("stats.show")),
        ),
        this.error ? errorBox(this.error, t("stats.title")) : null,
        this.stats ? h("p", { class: "muted small" }, t("stats.period", { from: this.stats.from, to: this.stats.to })) : null,
        this.stats ? this.figures(this.stats) : null,
      );
    });
  }
}

export class ReconciliationView {
  constructor({ api }) {
    this.api = api;
    this.day = shanghaiDay(-1);
    this.result = null;
    this.missing = null;
    this.error = null;
    this.loading = false;
    this.reads = 0;
    this.element = h("section", { class: "reconciliation page", "aria-labelledby": "recon-title" });
  }

  start() {
    this.render();
    if (!this.result && !this.missing && !this.error && !this.loading) this.load();
  }

  async load() {
    this.day = this.element.querySelector("#recon-day")?.value || this.day;
    const day = this.day;
    const asked = ++this.reads;
    this.loading = true;
    this.render();
    let result = null;
    let error = null;
    try {
      result = await this.api.reconciliation(day);
    } catch (failure) {
      error = failure;
    }
    if (asked !== this.reads) return; // another day was asked for meanwhile
    this.loading = false;
    this.result = result;
    // API.md: 404 when no run covered the day. That is an answer, not a fault.
    this.missing = error && error.status === 404 ? day : null;
    this.error = error && error.status !== 404 ? error : null;
    this.render();
  }

  channel(name, figures) {
    return h(
      "section",
      { class: "card", "aria-labelledby": `recon-${name}` },
      h("h3", { id: `recon-${name}` }, label("channel", name)),
      h(
        "dl",
        { class: "tiles" },
        tile(t("recon.entries"), number(figures.entries)),
        tile(t("recon.amount"), money(figures.amount)),
        tile(t("recon.matched"), number(figures.matched)),
        tile(t("recon.mismatches"), number(figures.mismatches.length), figures.mismatches.length ? "late" : "ok"),
      ),
      figures.mismatches.length === 0
        ? h("p", { class: "ok-text" }, t("recon.all_matched"))
        : h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              {},
              h("caption", { class: "visually-hidden" }, t("recon.mismatch_list", { channel: label("channel", name) })),
              h(
                "thead",
                {},
                h("tr", {}, ["kind", "refund", "channel_amount", "platform_amount", "platform_status"].map((col) => h("th", { scope: "col" }, t(`recon.col_${col}`)))),
              ),
              h(
                "tbody",
                {},
                figures.mismatches.map((item) =>
                  h(
                    "tr",
                    {},
                    h("td", {}, label("mismatch", item.kind)),
                    h("td", {}, item.refund_id ?? "—"),
                    h("td", { class: "number" }, money(item.channel_amount)),
                    h("td", { class: "number" }, money(item.platform_amount)),
                    h("td", {}, item.platform_status ? label("status", item.platform_status) : "—"),
                  ),
                ),
              ),
            ),
          ),
    );
  }

  render() {
    rebuildKeeping(this.element, () => {
      const result = this.result;
      fill(
        this.element,
        h("h2", { id: "recon-title" }, t("recon.title")),
        h("p", { class: "hint" }, t("recon.about")),
        h(
          "form",
          {
            class: "toolbar",
            novalidate: true,
            onsubmit: (event) => {
              event.preventDefault();
              this.load();
            },
          },
          dateField("recon-day", t("recon.day"), this.day, null),
          h("button", { type: "submit", class: "primary", id: "recon-submit" }, this.loading ? t("stats.loading") : t("recon.show")),
        ),
        this.error ? errorBox(this.error, t("recon.title")) : null,
        this.missing ? h("p", { class: "notice", role: "status" }, t("recon.no_run", { day: this.missing })) : null,
        result
          ? [
              h("p", { class: "muted small" }, t("recon.ran_at", { day: result.day, at: time(result.ran_at) })),
              Object.entries(result.channels).map(([name, figures]) => this.channel(name, figures)),
            ]
          : null,
      );
    });
  }
}
