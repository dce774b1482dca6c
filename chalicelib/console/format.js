// Money in fen, times in the business's zone (Asia/Shanghai), whatever the agent's machine.

import { locale, t } from "./i18n.js";

const ZONE = "Asia/Shanghai";

/** 8800 -> "¥88.00": integer fen, never rounded. */
export function money(fen) {
  if (fen === null || fen === undefined) return "—";
  const sign = fen < 0 ? "-" : "";
  const abs = Math.abs(fen);
  const yuan = Math.trunc(abs / 100).toLocaleString(locale());
  return `${sign}¥${yuan}.${String(abs % 100).padStart(2, "0")}`;
}

/** "88", "88.5", "88.50" -> 8850 fen; null when the text is not an amount of yuan. */
export function parseYuan(text) {
  const match = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(text);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] || "").padEnd(2, "0"));
}

/** 8850 -> "88.50", as an amount field shows it. */
export function yuanText(fen) {
  return `${Math.trunc(fen / 100)}.${String(fen % 100).padStart(2, "0")}`;
}

const MINUTE = { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false };

function dated(iso, fields) {
  if (!iso) return "—";
  return new Intl.DateTimeFormat(locale(), { timeZone: ZONE, ...fields }).format(new Date(iso));
}

/** A time to the minute, with its year. */
export function time(iso) {
  return dated(iso, { year: "numeric", ...MINUTE });
}

/** A time to the minute, within the year: queue rows and step tables. */
export function shortTime(iso) {
  return dated(iso, MINUTE);
}

export function clock(date) {
  return new Intl.DateTimeFormat(locale(), {
    timeZone: ZONE,
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  }).format(date);
}

/** "in 2 days" / "5 hours ago", from now, in the largest unit that is at least 1. */
export function relative(iso, now = Date.now()) {
  const seconds = (new Date(iso).getTime() - now) / 1000;
  const format = new Intl.RelativeTimeFormat(locale(), { numeric: "auto" });
  const units = [
    ["day", 86400],
    ["hour", 3600],
    ["minute", 60],
  ];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return format.format(Math.trunc(seconds / size), unit);
  }
  return format.format(0, "minute");
}

/** Whether a due time has passed (by this machine's clock). */
export function overdue(iso, now = Date.now()) {
  return Boolean(iso) && new Date(iso).getTime() < now;
}

/** Today's date in Asia/Shanghai, moved by ``days``: "2026-11-30". */
export function shanghaiDay(days = 0) {
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: ZONE,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
  }).format(new Date());
  const day = new Date(`${parts}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() + days);
  return day.toISOString().slice(0, 10);
}

export function percent(rate) {
  return new Intl.NumberFormat(locale(), { style: "percent", maximumFractionDigits: 1 }).format(rate);
}

export function number(value) {
  return new Intl.NumberFormat(locale()).format(value);
}

export function hours(value) {
  return value === null || value === undefined ? "—" : t("unit.hours", { n: number(Math.round(value * 10) / 10) });
}

export function bytes(size) {
  if (size < 1024) return t("unit.bytes", { n: size });
  if (size < 1024 * 1024) return t("unit.kib", { n: number(Math.round(size / 102.4) / 10) });
  return t("unit.mib", { n: number(Math.round(size / 104857.6) / 10) });
}
