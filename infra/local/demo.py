"""Demo orders for the local stack: one of each kind and situation, for two demo users."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from chalicelib.domain.model import (
    Gift,
    Order,
    OrderKind,
    OrderStatus,
    PaymentChannel,
    PlatformFault,
    Usage,
)
from chalicelib.service.orders import upsert_order
from chalicelib.service.ports import Ports

__all__ = ["DEMO_USERS", "demo_orders", "seed_demo_orders"]

DEMO_USERS = ("u-1", "u-2")


def _demo_order(user: str, suffix: str, ports: Ports, **fields: object) -> Order:
    now = ports.clock.now().replace(microsecond=0)
    base: dict[str, object] = {
        "order_id": f"o-{user.split('-')[1]}-{suffix}",
        "user_id": user,
        "paid_at": now - timedelta(days=2),
        "refund_deadline": now + timedelta(days=30),
        "payment_channel": PaymentChannel.ALIPAY,
        "version": 1,
    }
    return Order(**{**base, **fields})  # type: ignore[arg-type]


def demo_orders(ports: Ports) -> list[Order]:
    """Per user: a game card, a partly used top-up, shipped goods, customised goods, a
    service 40% done, a promotion with a gift, and an order the platform charged twice."""
    orders = []
    for user in DEMO_USERS:
        orders += [
            _demo_order(
                user,
                "card",
                ports,
                kind=OrderKind.VIRTUAL,
                sku="steam-100",
                title="Steam 100 点卡",
                category="game-card",
                list_price=10000,
                paid_amount=8800,
                status=OrderStatus.DELIVERED,
            ),
            _demo_order(
                user,
                "topup",
                ports,
                kind=OrderKind.VIRTUAL,
                sku="topup-500",
                title="话费充值 500 点",
                category="top-up",
                list_price=5000,
                paid_amount=5000,
                usage=Usage(total_units=500, used_units=120),
                status=OrderStatus.DELIVERED,
                payment_channel=PaymentChannel.WECHAT,
            ),
            _demo_order(
                user,
                "headset",
                ports,
                kind=OrderKind.PHYSICAL,
                sku="headset-x1",
                title="游戏耳机",
                category="peripheral",
                list_price=29900,
                paid_amount=30900,
                shipping_fee=1000,
                status=OrderStatus.SHIPPED,
            ),
            _demo_order(
                user,
                "mug",
                ports,
                kind=OrderKind.PHYSICAL,
                sku="mug-custom",
                title="定制马克杯",
                category="merch",
                list_price=6900,
                paid_amount=6900,
                customized=True,
                status=OrderStatus.PAID,
            ),
            _demo_order(
                user,
                "boost",
                ports,
                kind=OrderKind.SERVICE,
                sku="rank-boost",
                title="代练上分",
                category="game-service",
                list_price=20000,
                paid_amount=20000,
                service_completion=Decimal("0.4"),
                status=OrderStatus.DELIVERED,
            ),
            _demo_order(
                user,
                "promo",
                ports,
                kind=OrderKind.VIRTUAL,
                sku="vip-year",
                title="年度会员（促销）",
                category="membership",
                list_price=19800,
                paid_amount=12800,
                gifts=(Gift(sku="skin-01", title="限定皮肤", value=1500),),
                status=OrderStatus.DELIVERED,
            ),
            _demo_order(
                user,
                "dup",
                ports,
                kind=OrderKind.VIRTUAL,
                sku="steam-50",
                title="Steam 50 点卡",
                category="game-card",
                list_price=5000,
                paid_amount=5000,
                platform_fault=PlatformFault.DUPLICATE_CHARGE,
                status=OrderStatus.DELIVERED,
            ),
        ]
    return orders


def seed_demo_orders(ports: Ports) -> None:
    """Feed the demo orders in through the same use case the order system's route calls."""
    for order in demo_orders(ports):
        upsert_order(ports, order)
