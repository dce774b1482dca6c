// The queue of one status, as the API orders it: highest escalation first, then earliest due.
// It refreshes itself every 15 seconds, keeping the agent's page, selection and focus.

import { fill, h, rebuildKeeping } from "./dom.js";
import { clock, money, overdue, relative, shortTime } from "./format.js";
import { label, t } from "./i18n.js";
import { errorBox } from "./notice.js";

const REFRESH_MS = 15000;

/** The statuses an agent works from, in the order of a working day; appeals for seniors. */
const STATUSES = [
  "pending_review",
  "appealed",
  "awaiting_return",
  "payout_failed",
  "needs_info",
  "submitted",
  "approved",
  "paying",
  "paid",
  "rejected",
  "cancelled",
  "closed",
];

/** The due time that runs for a refund now: its review's, else its payout's. */
export function dueOf(refund) {
  return refund.review_due_at || refund.payout_due_at || null;
}

export function escalationBadge(level) {
  if (!level) return null;
  return h("span", { class: ["badge", `level-${level}`] }, t("queue.level", { level }));
}

export function dueText(iso) {
  if (!iso) return h("span", { class: "muted" }, t("queue.no_due"));
  const late = overdue(iso);
  return h(
    "span",
    { class: late ? "due late" : "due" },
    t(late ? "queue.overdue" : "queue.due", { at: shortTime(iso), relative: relative(iso) }),
  );
}

export class QueueView {
  constructor({ api, session, onOpen, onRefreshed, initial }) {
    this.api = api;
    this.session = session;
    this.onOpen = onOpen;
    this.onRefreshed = onRefreshed;
    this.status = STATUSES.includes(initial.status) ? initial.status : "pending_review";
    if (this.status === "appealed" && !session.senior) this.status = "pending_review";
    this.escalated = false;
    this.cursors = [null];
    this.items = [];
    this.next = null;
    this.selected = initial.refund || null;
    this.lastIndex = 0;
    this.opened = initial.refund || null;
    this.error = null;
    this.loading = false;
    this.reads = 0;
    this.updatedAt = null;
    this.element = h("section", { class: "queue panel", "aria-labelledby": "queue-title" });
    this.timer = null;
  }

  statuses() {
    return STATUSES.filter((status) => status !== "appealed" || this.session.senior);
  }

  start() {
    this.render();
    this.load();
    this.timer = setInterval(() => {
      if (!document.hidden && !this.loading) this.load();
    }, REFRESH_MS);
  }

  stop() {
    clearInterval(this.timer);
  }

  /** Read the page the agent is on; an answer to an earlier read (another status, say)
   * that arrives after a later one was asked for is dropped. */
  async load() {
    const asked = ++this.reads;
    this.loading = true;
    this.render();
    let page = null;
    let error = null;
    try {
      page = await this.api.queue(this.status, this.escalated, this.cursors[this.cursors.length - 1]);
    } catch (failure) {
      error = failure;
    }
    if (asked !== this.reads) return;
    this.loading = false;
    this.error = error;
    if (page) {
      this.items = page.items;
      this.next = page.next_cursor;
      this.updatedAt = new Date();
      if (!this.items.some((item) => item.refund_id === this.selected)) {
        // The selected refund left this page (decided, or moved on): keep the place.
        const place = Math.min(this.lastIndex, this.items.length - 1);
        this.selected = place >= 0 ? this.items[place].refund_id : null;
      }
    }
    this.render();
    this.onRefreshed(this.items);
  }

  reset() {
    this.cursors = [null];
    this.selected = null;
    this.lastIndex = 0;
    this.load();
  }

  move(delta) {
    if (this.items.length === 0) return;
    const index = this.items.findIndex((item) => item.refund_id === this.selected);
    const nextIndex = Math.max(0, Math.min(this.items.length - 1, (index < 0 ? -delta : index) + delta));
    this.select(this.items[nextIndex].refund_id, true);
  }

  select(id, focus) {
    this.selected = id;
    this.lastIndex = this.items.findIndex((item) => item.refund_id === id);
    this.render();
    if (focus) this.focusSelected();
  }

  focusSelected() {
    const row = this.element.querySelector(".row[aria-current='true']");
    if (row) {
      row.focus();
      row.scrollIntoView({ block: "nearest" });
    }
  }

  openSelected() {
    if (this.selected) this.open(this.selected);
  }

  open(id) {
    this.selected = id;
    this.opened = id;
    this.lastIndex = this.items.findIndex((item) => item.refund_id === id);
    this.render();
    this.onOpen(id);
  }

  nextPage() {
    if (!this.next) return;
    this.cursors.push(this.next);
    this.selected = null;
    this.lastIndex = 0;
    this.load();
  }

  previousPage() {
    if (this.cursors.length < 2) return;
    this.cursors.pop();
    this.selected = null;
    this.lastIndex = 0;
    this.load();
  }

  row(item) {
    const selected = item.refund_id === this.selected;
    const assignee =
      item.assignee === null
        ? h("span", { class: "muted" }, t("queue.unclaimed"))
        : h("span", { class: item.assignee === this.session.sub ? "mine" : "" }, t("queue.claimed_by", { who: item.assignee }));
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          id: `row-${item.refund_id}`,
          class: ["row", selected && "selected", item.refund_id === this.opened && "opened"],
          "aria-current": selected ? "true" : null,
          tabindex: selected || (!this.selected && item === this.items[0]) ? "0" : "-1",
          dataset: { refund: item.refund_id },
          onclick: () => this.open(item.refund_id),
        },
        h(
          "span",
          { class: "row-top" },
          escalationBadge(item.escalation_level),
          h("span", { class: "row-id" }, item.refund_id),
          h("span", { class: "row-amount" }, money(item.amount)),
        ),
        h("span", { class: "row-middle" }, label("reason", item.reason), " · ", item.order_id, " · ", item.user_id),
        h("span", { class: "row-bottom" }, dueText(dueOf(item)), assignee),
      ),
    );
  }

  render() {
    const hadFocus = this.element.contains(document.activeElement);
    rebuildKeeping(this.element, () => {
      const statusSelect = h(
        "select",
        {
          id: "queue-status",
          onchange: (event) => {
            this.status = event.target.value;
            this.reset();
          },
        },
        this.statuses().map((status) =>
          h("option", { value: status, selected: status === this.status }, label("status", status)),
        ),
      );
      statusSelect.dataset.fresh = "";
      const escalatedBox = h("input", {
        type: "checkbox",
        id: "queue-escalated",
        checked: this.escalated,
        onchange: (event) => {
          this.escalated = event.target.checked;
          this.reset();
        },
      });
      escalatedBox.dataset.fresh = "";
      const pageNumber = this.cursors.length;
      fill(
        this.element,
        h("h2", { id: "queue-title" }, t("queue.title")),
        h(
          "div",
          { class: "queue-filters" },
          h("label", { for: "queue-status" }, t("queue.status")),
          statusSelect,
          h("label", { class: "check", for: "queue-escalated" }, escalatedBox, t("queue.escalated_only")),
        ),
        h(
          "p",
          { class: "queue-meta muted small" },
          this.loading ? t("queue.loading") : this.updatedAt ? t("queue.updated", { at: clock(this.updatedAt) }) : "",
          " ",
          h(
            "button",
            { type: "button", id: "queue-refresh", class: "link", onclick: () => this.load() },
            t("queue.refresh"),
          ),
        ),
        this.error ? errorBox(this.error, t("queue.title")) : null,
        this.items.length === 0 && !this.loading && !this.error
          ? h("p", { class: "empty" }, t("queue.empty", { status: label("status", this.status) }))
          : h("ol", { class: "rows", "aria-label": t("queue.list", { status: label("status", this.status) }) }, this.items.map((item) => this.row(item))),
        h(
          "nav",
          { class: "pager", "aria-label": t("queue.pages") },
          h("button", { type: "button", id: "queue-previous", class: "secondary", disabled: pageNumber < 2, onclick: () => this.previousPage() }, t("queue.previous")),
          h("span", { class: "muted small" }, t("queue.page", { page: pageNumber })),
          h("button", { type: "button", id: "queue-next", class: "secondary", disabled: !this.next, onclick: () => this.nextPage() }, t("queue.next")),
        ),
      );
    });
    // The focused row left the page (decided elsewhere): focus stays in the list.
    if (hadFocus && !this.element.contains(document.activeElement)) this.focusSelected();
  }
}
