"""The channels' daily bills, read as statements of the refunds they paid (``reconcile``).

- **Alipay** (``alipay.data.dataservice.bill.downloadurl.query``, ``bill_type=trade``): a zip
  of GBK CSV files; the business detail (``..._业务明细.csv``, not its ``(汇总)`` summary)
  has ``#`` comment lines around a table whose refund rows (``业务类型`` ``退款``) carry
  our ``out_request_no`` in ``退款批次号/请求号`` and the refund as a negative
  ``订单金额（元）``. Cells end with a tab (so spreadsheets keep long numbers as text).
- **WeChat Pay** (``GET /v3/bill/tradebill``, ``bill_type=REFUND``): a UTF-8 CSV whose cells
  start with a backquote; a summary table follows the detail from the line ``总交易单数``.
  Refund rows carry our ``out_refund_no`` in ``商户退款单号``, the amount asked in
  ``申请退款金额`` (``退款金额`` in older layouts), and ``退款状态`` ``SUCCESS`` once the
  money moved.

Columns are found by their header names, never by position, since both channels have added
columns over the years. Times are Beijing time; amounts yuan with two decimals, read as fen
through Decimal.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation

from chalicelib.domain.days import SHANGHAI
from chalicelib.domain.reconciliation import SUCCESS, StatementEntry

__all__ = ["BillUnreadable", "alipay_refunds", "wechat_refunds"]

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_ALIPAY_DETAIL = "业务明细.csv"
_ALIPAY_KIND, _ALIPAY_REFUND = "业务类型", "退款"
_ALIPAY_REFUND_NO = "退款批次号/请求号"
_ALIPAY_AMOUNTS = ("订单金额（元）", "订单金额(元)")
_ALIPAY_TIMES = ("完成时间", "创建时间")
_WECHAT_SUMMARY = "总交易单数"
_WECHAT_REFUND_NO = "商户退款单号"
_WECHAT_AMOUNTS = ("申请退款金额", "退款金额")
_WECHAT_STATUS = "退款状态"
_WECHAT_TIMES = ("退款成功时间", "退款申请时间")
"""A refund not (yet) successful has no success time: it is dated when it was asked for,
never by ``交易时间``, the payment's time, days before."""


class BillUnreadable(ValueError):
    """A bill that is not in the layout its channel documents."""


def alipay_refunds(archive: bytes) -> list[StatementEntry]:
    """The refunds of an Alipay trade bill (the downloaded zip), oldest first."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as bill:
            detail = next(
                (info for info in bill.infolist() if _zip_name(info).endswith(_ALIPAY_DETAIL)),
                None,
            )
            if detail is None:
                raise BillUnreadable("the Alipay bill has no business detail file")
            text = bill.read(detail).decode("gb18030")
    except (zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise BillUnreadable(f"the Alipay bill is not a GBK CSV zip: {error}") from error
    rows = (row for row in csv.reader(io.StringIO(text)) if row and not row[0].startswith("#"))
    entries = [
        StatementEntry(
            refund_no=row[_ALIPAY_REFUND_NO],
            amount=abs(_fen(_first(row, _ALIPAY_AMOUNTS))),
            status=SUCCESS,
            at=_beijing(_first(row, _ALIPAY_TIMES)),
        )
        for row in _table(rows, (_ALIPAY_KIND, _ALIPAY_REFUND_NO), strip="\t ")
        if row[_ALIPAY_KIND] == _ALIPAY_REFUND
    ]
    return sorted(entries, key=lambda entry: (entry.at, entry.refund_no))


def wechat_refunds(text: str) -> list[StatementEntry]:
    """The refunds of a WeChat Pay refund bill, oldest first; only those that moved money
    (``退款状态`` SUCCESS) are money moved, the others are listed with their status."""
    # Lines end at "\n" alone: splitlines() would also cut a row at a U+2028 or \x1c in a
    # product name, which the CSV holds as text.
    lines = text.lstrip("\ufeff").split("\n")
    end = next((n for n, line in enumerate(lines) if line.startswith(_WECHAT_SUMMARY)), len(lines))
    rows = (row for row in csv.reader(lines[:end]) if row)
    entries = [
        StatementEntry(
            refund_no=row[_WECHAT_REFUND_NO],
            amount=_fen(_first(row, _WECHAT_AMOUNTS)),
            status=row[_WECHAT_STATUS],
            at=_beijing(_first(row, _WECHAT_TIMES)),
        )
        for row in _table(rows, (_WECHAT_REFUND_NO, _WECHAT_STATUS), strip="`\t ")
    ]
    return sorted(entries, key=lambda entry: (entry.at, entry.refund_no))


def _table(
    rows: Iterator[list[str]], required: tuple[str, ...], strip: str
) -> Iterator[dict[str, str]]:
    """Rows as dicts by the header row's names (the first row naming every ``required``)."""
    header: list[str] | None = None
    try:
        for row in rows:
            cells = [cell.strip(strip) for cell in row]
            if header is None:
                if all(name in cells for name in required):
                    header = cells
                continue
            if len(cells) < len(header):
                raise BillUnreadable(f"a bill row has {len(cells)} cells, its header {len(header)}")
            yield dict(zip(header, cells, strict=False))
    except csv.Error as error:
        # The csv module's own refusal (a bare carriage return inside a cell): no layout
        # either channel writes.
        raise BillUnreadable(f"the bill is not CSV: {error}") from error
    if header is None:
        raise BillUnreadable(f"the bill has no header row naming {', '.join(required)}")


def _first(row: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        if row.get(name):
            return row[name]
    raise BillUnreadable(f"a bill row has none of {', '.join(names)}")


def _fen(text: str) -> int:
    try:
        amount = Decimal(text.replace(",", ""))
    except InvalidOperation as error:
        raise BillUnreadable(f"not an amount of yuan: {text!r}") from error
    fen = amount * 100
    if not fen.is_finite() or fen != fen.to_integral_value():
        raise BillUnreadable(f"not an amount of yuan with two decimals: {text!r}")
    return int(fen)


def _beijing(text: str) -> datetime:
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=SHANGHAI)
    except ValueError as error:
        raise BillUnreadable(f"not a bill time: {text!r}") from error


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member's name: Alipay writes GBK names without the zip's UTF-8 flag, which
    zipfile then reads as cp437."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gb18030")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename
