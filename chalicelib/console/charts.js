// Charts drawn as inline SVG: horizontal bars, each labelled with its value, and a summary
// of every value in the chart's accessible description.

import { h, s, uid } from "./dom.js";

const WIDTH = 520;
const LABEL = 150;
const VALUE = 64;
const ROW = 26;
const BAR = 16;

/**
 * A bar chart.
 * @param title the chart's heading
 * @param rows [{label, value, tone}] in the order to draw them
 * @param format a value -> text function for the value labels
 * @param empty the text shown when there is nothing to draw
 */
export function barChart({ title, rows, format, empty }) {
  const titleId = uid("chart-title");
  const heading = h("h3", { id: titleId, class: "chart-title" }, title);
  if (rows.length === 0) return h("figure", { class: "chart" }, heading, h("p", { class: "muted" }, empty));
  const max = Math.max(1, ...rows.map((row) => row.value));
  const span = WIDTH - LABEL - VALUE;
  const height = rows.length * ROW + 4;
  const summary = rows.map((row) => `${row.label}: ${format(row.value)}`).join("; ");
  const chart = s(
    "svg",
    {
      class: "bars",
      viewBox: `0 0 ${WIDTH} ${height}`,
      width: WIDTH,
      height,
      role: "img",
      "aria-labelledby": titleId,
      "aria-describedby": `${titleId}-desc`,
    },
    s("desc", { id: `${titleId}-desc` }, summary),
    rows.map((row, index) => {
      const y = index * ROW + 4;
      const length = row.value === 0 ? 0 : Math.max(2, (row.value / max) * span);
      return s(
        "g",
        { class: ["bar-row", row.tone && `tone-${row.tone}`] },
        s("text", { class: "bar-label", x: LABEL - 8, y: y + BAR - 3, "text-anchor": "end" }, row.label),
        s("rect", { class: "bar", x: LABEL, y, width: length, height: BAR, rx: 3 }),
        s("text", { class: "bar-value", x: LABEL + length + 6, y: y + BAR - 3 }, format(row.value)),
      );
    }),
  );
  return h("figure", { class: "chart" }, heading, chart);
}
