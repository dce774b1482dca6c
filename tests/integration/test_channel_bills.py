"""The channels' daily bills, read as statements of refunds (``reconcile``, P1, P2).

The bills are built here as the channels write them: Alipay's trade bill a zip of GBK CSV
files whose member names are GBK bytes without the zip's UTF-8 flag, ``#`` comments around
the detail table and a tab after every cell; WeChat Pay's refund bill a UTF-8 CSV whose cells
start with a backquote, a summary table after the detail. What must come out is exactly the
refunds, in fen, at aware Beijing times, oldest first; anything else is BillUnreadable.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime

import pytest

from chalicelib.adapters.channels.bills import BillUnreadable, alipay_refunds, wechat_refunds
from chalicelib.domain.days import SHANGHAI
from chalicelib.domain.reconciliation import SUCCESS, StatementEntry

# ---------------------------------------------------------------- Alipay's trade bill

ALIPAY_ACCOUNT = "2088123456789012"
ALIPAY_DETAIL = f"{ALIPAY_ACCOUNT}_20261130_业务明细.csv"
ALIPAY_SUMMARY = f"{ALIPAY_ACCOUNT}_20261130_业务明细(汇总).csv"
ALIPAY_HEADER_LINE = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,"
    "终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
    "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
    "退款批次号/请求号,服务费（元）,分润（元）,备注"
)
ALIPAY_HEADER = ALIPAY_HEADER_LINE.split(",")
ALIPAY_TRADE_NO = "2026113022001404550500012345"


def alipay_row(
    kind: str, amount: str, created: str, finished: str, refund_no: str = ""
) -> dict[str, str]:
    """One line of the detail: a payment (``交易``) or a refund (``退款``, amounts negative)."""
    return {
        "支付宝交易号": ALIPAY_TRADE_NO,
        "商户订单号": "o-1001",
        "业务类型": kind,
        "商品名称": "Steam 充值卡 100",
        "创建时间": created,
        "完成时间": finished,
        "对方账户": "159****5620",
        "订单金额（元）": amount,
        "商家实收（元）": amount,
        "支付宝红包（元）": "0.00",
        "集分宝（元）": "0.00",
        "支付宝优惠（元）": "0.00",
        "商家优惠（元）": "0.00",
        "券核销金额（元）": "0.00",
        "商家红包消费金额（元）": "0.00",
        "卡消费金额（元）": "0.00",
        "退款批次号/请求号": refund_no,
        "服务费（元）": "0.00",
        "分润（元）": "0.00",
    }


PAYMENT = alipay_row("交易", "100.00", "2026-11-30 10:00:00", "2026-11-30 10:00:05")
ALIPAY_REFUNDS = [
    alipay_row("退款", "-88.00", "2026-11-30 10:00:00", "2026-11-30 15:59:58", "rf_01A"),
    alipay_row("退款", "-0.01", "2026-11-30 10:00:00", "2026-11-30 09:30:00", "rf_02A"),
    alipay_row("退款", "-11.99", "2026-11-30 10:00:00", "2026-11-30 23:59:59", "rf_03A"),
]


def alipay_detail(
    rows: list[dict[str, str]], header: list[str] | None = None, table: bool = True
) -> str:
    """The business detail as Alipay writes it: comments, the table, comments again."""
    names = ALIPAY_HEADER if header is None else header
    lines = [
        "#支付宝业务明细查询",
        f"#账号：[{ALIPAY_ACCOUNT}]",
        "#起始日期：[2026年11月30日 00:00:00]   终止日期：[2026年12月01日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
    ]
    if table:
        lines.append(",".join(names))
        # A tab after every cell, so that a spreadsheet keeps long numbers as text.
        lines += [",".join(f"{row.get(name, '')}\t" for name in names) for row in rows]
    lines += [
        "#-----------------------------------------业务明细列表结束------------------------------------",
        "#交易合计：1笔，商家实收共：100.00元，商家优惠共：0.00元",
        "#退款合计：3笔，商家实收共：-100.00元，商家优惠共：0.00元",
        "#导出时间：[2026年12月01日 09:12:34]",
    ]
    return "\r\n".join(lines) + "\r\n"


ALIPAY_SUMMARY_TEXT = "\r\n".join(
    [
        "#支付宝业务汇总查询",
        "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）",
        "\t,\t,1\t,3\t,0.00\t,0.00\t",
        "#导出时间：[2026年12月01日 09:12:34]",
    ]
)


class _GbkNamedMember(zipfile.ZipInfo):
    """A member whose name is written as the GBK bytes it stands for, the UTF-8 flag unset,
    as Alipay writes them (zipfile itself would write any non-ASCII name as flagged UTF-8)."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        return self.filename.encode("cp437"), self.flag_bits


def alipay_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            member = _GbkNamedMember(
                name.encode("gbk").decode("cp437"), date_time=(2026, 12, 1, 9, 12, 34)
            )
            member.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(member, data)
    bill = buffer.getvalue()
    for name in files:
        assert name.encode("gbk") in bill, "the member name is not GBK bytes"
    return bill


def alipay_bill(rows: list[dict[str, str]], detail: str | None = None) -> bytes:
    """A trade bill zip: the summary first (so that only its name tells it apart), then the
    detail, both GBK."""
    text = alipay_detail(rows) if detail is None else detail
    return alipay_zip(
        {
            ALIPAY_SUMMARY: ALIPAY_SUMMARY_TEXT.encode("gbk"),
            ALIPAY_DETAIL: text.encode("gbk"),
        }
    )


def beijing(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)


def test_an_alipay_bill_reads_as_its_refunds_only_oldest_first() -> None:
    # GIVEN a day's trade bill with a payment and three refunds, as Alipay zips it
    bill = alipay_bill([PAYMENT, *ALIPAY_REFUNDS])
    # WHEN it is read
    entries = alipay_refunds(bill)
    # THEN only the refunds come out, each by our out_request_no, in exact fen, when it was
    # completed (Beijing time), oldest first
    assert entries == [
        StatementEntry("rf_02A", 1, SUCCESS, beijing("2026-11-30 09:30:00")),
        StatementEntry("rf_01A", 8800, SUCCESS, beijing("2026-11-30 15:59:58")),
        StatementEntry("rf_03A", 1199, SUCCESS, beijing("2026-11-30 23:59:59")),
    ]
    # AND the times are aware: the last refund is still the 30th in Beijing, the 30th 15:59 UTC
    assert entries[-1].at.astimezone(UTC) == datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC)


def test_an_alipay_bill_of_payments_only_has_no_refunds() -> None:
    assert alipay_refunds(alipay_bill([PAYMENT])) == []


def test_alipay_columns_are_found_by_name_not_position() -> None:
    # GIVEN a layout with the columns in another order and one Alipay added since
    header = [*reversed(ALIPAY_HEADER), "新增列"]
    detail = alipay_detail([PAYMENT, ALIPAY_REFUNDS[0]], header=header)
    # WHEN it is read
    # THEN the refund is read the same
    assert alipay_refunds(alipay_bill([], detail=detail)) == [
        StatementEntry("rf_01A", 8800, SUCCESS, beijing("2026-11-30 15:59:58"))
    ]


@pytest.mark.parametrize(
    "bill",
    [
        pytest.param(b"<html>bill not found</html>", id="not a zip"),
        pytest.param(b"PK\x03\x04" + b"\x00" * 40, id="a broken zip"),
        pytest.param(
            alipay_zip({ALIPAY_SUMMARY: ALIPAY_SUMMARY_TEXT.encode("gbk")}), id="no detail file"
        ),
        pytest.param(alipay_bill([], detail=alipay_detail([], table=False)), id="no header"),
        pytest.param(
            alipay_zip({ALIPAY_DETAIL: alipay_detail(ALIPAY_REFUNDS).encode("utf-16")}),
            id="not GBK",
        ),
        pytest.param(
            alipay_bill(
                [alipay_row("退款", "-1.234", "2026-11-30 10:00:00", "2026-11-30 11:00:00", "rf_x")]
            ),
            id="three decimals",
        ),
        pytest.param(
            alipay_bill(
                [
                    alipay_row(
                        "退款", "-八十八", "2026-11-30 10:00:00", "2026-11-30 11:00:00", "rf_x"
                    )
                ]
            ),
            id="not a number",
        ),
        pytest.param(
            alipay_bill(
                [alipay_row("退款", "-1.00", "2026-11-30 10:00:00", "2026/11/30 11:00", "rf_x")]
            ),
            id="another time format",
        ),
        pytest.param(
            alipay_bill(
                [], detail=alipay_detail([]).replace("#导出时间", "2088\t,o-1\t\r\n#导出时间")
            ),
            id="a short row",
        ),
        pytest.param(
            alipay_bill([{**ALIPAY_REFUNDS[0], "商品名称": "Steam\r充值卡"}]),
            id="a bare carriage return in a cell",
        ),
    ],
)
def test_an_alipay_bill_not_in_alipay_layout_is_unreadable(bill: bytes) -> None:
    # GIVEN a download that is not a zip, has no detail, no table, is not GBK, or holds an
    # amount or time Alipay does not write
    # WHEN it is read
    # THEN it is refused whole, never read as fewer refunds
    with pytest.raises(BillUnreadable):
        alipay_refunds(bill)


# ---------------------------------------------------------------- WeChat Pay's refund bill

WECHAT_HEADER_LINE = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,"
    "商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,"
    "订单金额,申请退款金额,费率备注"
)
WECHAT_HEADER = WECHAT_HEADER_LINE.split(",")
WECHAT_SUMMARY = [
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额",
    "`3,`0.00,`109.00,`0.00,`0.00000,`300.00,`110.00",
]


def wechat_row(
    refund_no: str,
    status: str,
    asked: str,
    refunded: str,
    requested: str,
    succeeded: str,
    **changes: str,
) -> dict[str, str]:
    row = {
        "交易时间": "2026-11-28 20:00:00",
        "公众账号ID": "wxd678efh567hg6787",
        "商户号": "1900000109",
        "特约商户号": "0",
        "微信订单号": "4200001234202611280123456789",
        "商户订单号": "o-1001",
        "用户标识": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        "交易类型": "NATIVE",
        "交易状态": "REFUND",
        "付款银行": "CMB_CREDIT",
        "货币种类": "CNY",
        "应结订单金额": "0.00",
        "代金券金额": "0.00",
        "退款申请时间": requested,
        "退款成功时间": succeeded,
        "微信退款单号": "50000000382026113009732678859",
        "商户退款单号": refund_no,
        "退款金额": refunded,
        "充值券退款金额": "0.00",
        "退款类型": "ORIGINAL",
        "退款状态": status,
        "商品名称": "Steam 充值卡 100",
        "商户数据包": "",
        "手续费": "0.00000",
        "费率": "0.60%",
        "订单金额": "100.00",
        "申请退款金额": asked,
        "费率备注": "",
    }
    row.update(changes)
    return row


WECHAT_REFUNDS = [
    wechat_row("rf_01W", "SUCCESS", "88.00", "88.00", "2026-11-30 16:00:00", "2026-11-30 16:00:01"),
    # A coupon's share is not refunded in cash: 退款金额 is less than what was asked.
    wechat_row("rf_02W", "SUCCESS", "10.00", "9.00", "2026-11-30 08:00:00", "2026-11-30 08:00:02"),
    wechat_row("rf_03W", "PROCESSING", "12.00", "12.00", "2026-11-30 23:59:00", ""),
]


def wechat_bill(
    rows: list[dict[str, str]], header: list[str] | None = None, summary: bool = True
) -> str:
    """The refund bill as WeChat Pay writes it: every cell after a backquote, the summary
    table after the detail."""
    names = WECHAT_HEADER if header is None else header
    lines = [",".join(names)]
    lines += [",".join(f"`{row.get(name, '')}" for name in names) for row in rows]
    if summary:
        lines += WECHAT_SUMMARY
    return "\r\n".join(lines) + "\r\n"


EXPECTED_WECHAT = [
    StatementEntry("rf_02W", 1000, SUCCESS, beijing("2026-11-30 08:00:02")),
    StatementEntry("rf_01W", 8800, SUCCESS, beijing("2026-11-30 16:00:01")),
    # Not paid yet: listed with its status, at the time it was asked for, not the payment's.
    StatementEntry("rf_03W", 1200, "PROCESSING", beijing("2026-11-30 23:59:00")),
]


@pytest.mark.parametrize("bom", ["", "\ufeff"], ids=["utf-8", "utf-8 with BOM"])
def test_a_wechat_refund_bill_reads_as_its_refunds(bom: str) -> None:
    # GIVEN a day's refund bill, with and without the BOM some downloads carry
    text = bom + wechat_bill(WECHAT_REFUNDS)
    # WHEN it is read
    entries = wechat_refunds(text)
    # THEN every refund comes out by our out_refund_no, for the amount asked (申请退款金额),
    # with its 退款状态, oldest first; the summary's lines are no refunds
    assert entries == EXPECTED_WECHAT


def test_a_wechat_bill_of_an_older_layout_reads_the_refunded_amount() -> None:
    # GIVEN a bill from before WeChat added 订单金额, 申请退款金额 and 费率备注
    header = WECHAT_HEADER[: WECHAT_HEADER.index("订单金额")]
    # WHEN it is read
    entries = wechat_refunds(wechat_bill(WECHAT_REFUNDS[:1], header=header))
    # THEN the amount is 退款金额
    assert entries == [StatementEntry("rf_01W", 8800, SUCCESS, beijing("2026-11-30 16:00:01"))]


def test_a_wechat_bill_without_refunds_is_empty() -> None:
    assert wechat_refunds(wechat_bill([])) == []


def test_a_product_name_with_a_unicode_line_separator_stays_one_row() -> None:
    # GIVEN a refund whose product name (the merchant's own text) holds U+2028, which is no
    # line break in a CSV file
    row = wechat_row(
        "rf_01W",
        "SUCCESS",
        "88.00",
        "88.00",
        "2026-11-30 16:00:00",
        "2026-11-30 16:00:01",
        商品名称="Steam\u2028充值卡",
    )
    # WHEN the bill is read
    # THEN the row is read whole
    assert wechat_refunds(wechat_bill([row])) == EXPECTED_WECHAT[1:2]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("<html>bill not found</html>", id="not a bill"),
        pytest.param(
            wechat_bill([], summary=False).replace("商户退款单号", "商户单号"), id="no header"
        ),
        pytest.param(
            wechat_bill(
                [
                    wechat_row(
                        "rf_x",
                        "SUCCESS",
                        "1.234",
                        "1.234",
                        "2026-11-30 08:00:00",
                        "2026-11-30 08:00:01",
                    )
                ]
            ),
            id="three decimals",
        ),
        pytest.param(
            wechat_bill(
                [wechat_row("rf_x", "SUCCESS", "1.00", "1.00", "2026-11-30 08:00:00", "30/11/2026")]
            ),
            id="another time format",
        ),
        pytest.param(
            wechat_bill([], summary=False)
            + "`2026-11-30 08:00:00,`wx\r\n"
            + "\r\n".join(WECHAT_SUMMARY),
            id="a short row",
        ),
        pytest.param(
            wechat_bill(
                [
                    wechat_row(
                        "rf_x",
                        "SUCCESS",
                        "1.00",
                        "1.00",
                        "2026-11-30 08:00:00",
                        "2026-11-30 08:00:01",
                        商品名称="Steam\r充值卡",
                    )
                ]
            ),
            id="a bare carriage return in a cell",
        ),
    ],
)
def test_a_wechat_bill_not_in_wechat_layout_is_unreadable(text: str) -> None:
    with pytest.raises(BillUnreadable):
        wechat_refunds(text)
