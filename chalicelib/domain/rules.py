"""The refund rules a product page shows before ordering (F4), in Chinese and English."""

from __future__ import annotations

from dataclasses import dataclass

from .model import OrderKind

__all__ = ["POLICY_RULE_IDS", "KindRules", "RuleText", "rules_for"]


@dataclass(frozen=True)
class RuleText:
    rule: str
    zh: str
    en: str


@dataclass(frozen=True)
class KindRules:
    rules: tuple[RuleText, ...]
    not_refundable: tuple[RuleText, ...]


_COMMON = (
    RuleText(
        "E1",
        "已付款的订单可以申请退款；有质量问题的商品任何时候都可以申请。",
        "A paid order can be refunded; goods with a quality problem can always be claimed.",
    ),
    RuleText(
        "PR1",
        "促销商品按实际支付金额退款；赠品需一并退回，未退回的按价值从退款中扣除。",
        "Promotional goods are refunded by the amount actually paid; gifts come back too, or "
        "their value is deducted.",
    ),
    RuleText(
        "F2",
        "申请时请上传订单截图等凭证，并具体说明问题、凭证和诉求。",
        "Apply with an order screenshot and the evidence listed, and describe the fact, the "
        "evidence and your claim.",
    ),
    RuleText(
        "R2",
        "提交后3个工作日内完成审核。",
        "Review completes within 3 working days of submission.",
    ),
    RuleText(
        "P1",
        "退款原路返回（1-5个工作日到账），也可选择即时退回平台余额。",
        "Money goes back along the original payment path (1 to 5 working days), or instantly "
        "to the platform balance.",
    ),
)

_EXPIRED = RuleText(
    "E2",
    "超过退款期限的订单不能退款。",
    "Orders past their refund deadline cannot be refunded.",
)
_COMPLETED = RuleText(
    "X1",
    "系统已标记为“已完成”的订单需先由客服更正状态后才能申请。",
    "An order marked completed can be applied for only after customer service corrects it.",
)

_BY_KIND = {
    OrderKind.VIRTUAL: KindRules(
        rules=(
            RuleText("V1", "未使用的虚拟商品全额退款。", "Unused virtual goods: full refund."),
            RuleText(
                "V2",
                "部分使用的虚拟商品按剩余价值退款（向下取整到分），需提供使用记录截图。",
                "Partly used virtual goods: refund of the remaining value, rounded down to the "
                "fen, with a usage-record screenshot.",
            ),
        ),
        not_refundable=(
            RuleText(
                "E2",
                "已全部使用的虚拟商品（如点数已全额到账）不能退款。",
                "Virtual goods fully consumed (e.g. points credited in full) are not refundable.",
            ),
            _EXPIRED,
            _COMPLETED,
        ),
    ),
    OrderKind.PHYSICAL: KindRules(
        rules=(
            RuleText(
                "PH1",
                "未发货全额退款（含运费）；已发货需退回商品，非质量问题须未拆封且包装完好，"
                "往返运费由用户承担；质量问题运费由商家承担。",
                "Not shipped: full refund, shipping included. Shipped: the goods come back; "
                "without a quality problem unopened and intact, and the user bears shipping; "
                "with one, shipping is refunded too.",
            ),
        ),
        not_refundable=(
            RuleText(
                "E3",
                "定制类商品除质量问题外不支持退款。",
                "Customised goods are not refundable unless there is a quality problem.",
            ),
            _EXPIRED,
            _COMPLETED,
        ),
    ),
    OrderKind.SERVICE: KindRules(
        rules=(
            RuleText(
                "S1",
                "服务未开始全额退款；已开始按未完成比例协商退款。",
                "Service not started: full refund. Started: at most the share not yet done.",
            ),
        ),
        not_refundable=(
            RuleText(
                "S1",
                "已全部完成的服务不能退款。",
                "A service fully delivered is not refundable.",
            ),
            _EXPIRED,
            _COMPLETED,
        ),
    ),
}


def rules_for(kind: OrderKind) -> KindRules:
    """The rules shown on a product page of ``kind`` (F4), general rules included."""
    own = _BY_KIND[kind]
    return KindRules(rules=own.rules + _COMMON, not_refundable=own.not_refundable)


POLICY_RULE_IDS = frozenset(
    {
        *("E1", "E2", "E3", "E4"),
        *("V1", "V2", "PH1", "S1", "PR1", "A1"),
        *("F1", "F2", "F3", "F4"),
        *("R1", "R2", "R3", "R4"),
        *("P1", "P2"),
        *("X1", "X2", "X3", "X4"),
        *("O1", "O2", "O3", "O4", "O5"),
    }
)
"""Every rule id of POLICY.md: a decision cites one of these (O3)."""
