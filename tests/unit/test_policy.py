"""The refund policy: quotes (V1, V2, PH1, S1, PR1, E1-E4, X1, O2), evidence (F2), text (F3).

Every quote here is judged on the fixed business clock ``now`` of conftest.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from chalicelib.domain.model import (
    QUALITY_REASONS,
    EvidenceKind,
    Gift,
    OrderBooking,
    OrderKind,
    OrderStatus,
    PayoutChannel,
    PlatformFault,
    Reason,
    Usage,
)
from chalicelib.domain.policy import (
    BreakdownItem,
    description_problem,
    is_fast_track,
    missing_evidence,
    required_evidence,
)

K = EvidenceKind
NON_QUALITY_REASONS = sorted(set(Reason) - QUALITY_REASONS)


def items(quote):
    """The breakdown as plain (item, amount) pairs, easy to compare."""
    return [(b.item, b.amount) for b in quote.breakdown]


def assert_refused(quote, rule):
    """A refusal: API.md says refundable false, amount 0, rule and message say why."""
    assert quote.rule == rule, quote.message
    assert quote.refundable is False
    assert quote.amount == 0
    assert quote.breakdown == ()
    assert quote.message
    assert quote.payout_channels == ()


def assert_refundable(quote, amount):
    """A refundable quote: the amount, a breakdown adding up to it, both payout channels."""
    assert quote.rule is None, quote.message
    assert quote.refundable is True
    assert quote.amount == amount
    assert sum(b.amount for b in quote.breakdown) == amount
    assert quote.payout_channels == (PayoutChannel.ORIGINAL, PayoutChannel.BALANCE)


# --- Virtual goods: V1, V2, E2 -------------------------------------------------------------


def test_v1_unused_virtual_good_refunds_the_full_paid_amount(make_order, quote_for):
    """V1: GIVEN an unused game card paid 100.00 WHEN quoted THEN 10000 fen come back."""
    order = make_order(paid_amount=10000, usage=Usage(total_units=100, used_units=0))

    quote = quote_for(order, Reason.INVALID_CODE)

    assert_refundable(quote, 10000)
    assert items(quote) == [("paid_amount", 10000)]
    assert quote.order_id == "o-1001"
    assert quote.needs_return is False


def test_v2_partly_used_rounds_down_to_the_fen(make_order, quote_for):
    """V2: GIVEN paid 1000 fen and 1 of 3 units left WHEN quoted THEN 1000 x 1/3 = 333.33 is
    rounded down to 333, and the breakdown states the 667 kept for the used units."""
    order = make_order(list_price=1000, paid_amount=1000, usage=Usage(3, 2))

    quote = quote_for(order, Reason.INVALID_CODE)

    assert_refundable(quote, 333)
    assert items(quote) == [("paid_amount", 1000), ("used_units", -667)]


def test_v2_membership_days_left_are_refunded_by_remaining_value(make_order, quote_for):
    """V2: GIVEN a 30-day membership paid 2500 with 10 days used WHEN quoted THEN 2500 x 20/30
    = 1666.67 -> 1666."""
    order = make_order(list_price=2500, paid_amount=2500, usage=Usage(30, 10))

    quote = quote_for(order, Reason.OTHER)

    assert_refundable(quote, 1666)
    assert items(quote) == [("paid_amount", 2500), ("used_units", -834)]


@pytest.mark.parametrize("reason", [Reason.CHANGED_MIND, Reason.INVALID_CODE, Reason.DEFECTIVE])
def test_e2_fully_used_credit_is_not_refundable_whatever_the_reason(make_order, quote_for, reason):
    """E2: GIVEN top-up credit credited and used in full WHEN quoted, even for a quality
    reason THEN it is refused with E2 (E2 overrides the quality clause of E1)."""
    order = make_order(usage=Usage(total_units=100, used_units=100))

    assert_refused(quote_for(order, reason), "E2")


# --- Refund deadline: E2 ---------------------------------------------------------------------


def test_e2_one_second_before_the_deadline_is_refundable(make_order, quote_for, now):
    """E2: GIVEN a deadline one second after now WHEN quoted THEN it is still refundable."""
    order = make_order(refund_deadline=now + timedelta(seconds=1))

    assert_refundable(quote_for(order, now=now), order.paid_amount)


@pytest.mark.parametrize("after", [timedelta(0), timedelta(seconds=1), timedelta(days=30)])
def test_e2_at_or_after_the_deadline_is_expired(make_order, quote_for, now, after):
    """E2: GIVEN now exactly at the deadline, or after it WHEN quoted THEN refused with E2
    (refundable only while now is before the deadline)."""
    order = make_order(refund_deadline=now - after)

    quote = quote_for(order, Reason.DEFECTIVE, now=now)

    assert_refused(quote, "E2")
    assert "deadline" in quote.message


# --- Order status: X1, E1 --------------------------------------------------------------------


def test_x1_completed_order_cannot_be_applied_for(make_order, quote_for):
    """X1: GIVEN an order the system marked completed (code issued) WHEN quoted THEN refused
    with X1, and the message says customer service can correct it."""
    quote = quote_for(make_order(status=OrderStatus.COMPLETED), Reason.INVALID_CODE)

    assert_refused(quote, "X1")
    assert "customer service" in quote.message


def test_e1_cancelled_order_is_not_refundable(make_order, quote_for):
    """E1: GIVEN a cancelled order WHEN quoted THEN refused with E1 (nothing paid to refund)."""
    assert_refused(quote_for(make_order(status=OrderStatus.CANCELLED)), "E1")


@pytest.mark.parametrize("status", [OrderStatus.PAID, OrderStatus.DELIVERED, OrderStatus.SHIPPED])
def test_e1_paid_statuses_are_eligible(make_order, quote_for, status):
    """E1: GIVEN an order paid, delivered or shipped (all paid) WHEN quoted THEN refundable."""
    order = make_order(kind=OrderKind.PHYSICAL, status=status)

    assert quote_for(order, Reason.DEFECTIVE).refundable is True


# --- Refusal order: X1, E1, E2, E3, S1, PR1, E4 ----------------------------------------------


def test_refusal_order_x1_before_e2_for_a_completed_and_expired_order(make_order, quote_for, now):
    """X1 before E2: GIVEN an order completed AND expired WHEN quoted THEN the rule is X1."""
    order = make_order(status=OrderStatus.COMPLETED, refund_deadline=now - timedelta(days=1))

    assert_refused(quote_for(order), "X1")


def test_refusal_order_x1_before_e4_even_with_an_open_refund(make_order, quote_for):
    """X1 before E4: GIVEN a completed order with an open refund WHEN quoted THEN X1."""
    booking = OrderBooking(open_refund_id="rf_other", open_refund_amount=100)

    assert_refused(quote_for(make_order(status=OrderStatus.COMPLETED), booking=booking), "X1")


def test_refusal_order_e1_before_e2_for_a_cancelled_and_expired_order(make_order, quote_for, now):
    """E1 before E2: GIVEN an order cancelled AND expired WHEN quoted THEN the rule is E1."""
    order = make_order(status=OrderStatus.CANCELLED, refund_deadline=now - timedelta(days=1))

    assert_refused(quote_for(order), "E1")


def test_refusal_order_e2_before_e3_for_expired_customised_goods(make_order, quote_for, now):
    """E2 before E3: GIVEN customised goods past their deadline, changed mind WHEN quoted
    THEN the rule is E2, not E3."""
    order = make_order(
        kind=OrderKind.PHYSICAL,
        status=OrderStatus.SHIPPED,
        customized=True,
        refund_deadline=now - timedelta(seconds=1),
    )

    assert_refused(quote_for(order, Reason.CHANGED_MIND), "E2")


def test_refusal_order_e2_before_s1_for_a_finished_expired_service(make_order, quote_for, now):
    """E2 before S1: GIVEN a service 100% done AND expired WHEN quoted THEN the rule is E2."""
    order = make_order(
        kind=OrderKind.SERVICE,
        service_completion=Decimal(1),
        refund_deadline=now - timedelta(days=1),
    )

    assert_refused(quote_for(order), "E2")


def test_refusal_order_e3_before_pr1_for_customised_goods_with_kept_gifts(make_order, quote_for):
    """E3 before PR1: GIVEN customised goods whose kept gifts exceed the refund, changed mind
    WHEN quoted THEN the rule is E3."""
    order = make_order(
        kind=OrderKind.PHYSICAL,
        status=OrderStatus.PAID,
        customized=True,
        gifts=(Gift("mug", "马克杯", 20000),),
    )

    assert_refused(quote_for(order, gifts_returned=False), "E3")


def test_refusal_order_s1_before_pr1_for_a_finished_service_with_gifts(make_order, quote_for):
    """S1 before PR1: GIVEN a service 100% done with a kept gift WHEN quoted THEN S1."""
    order = make_order(
        kind=OrderKind.SERVICE,
        service_completion=Decimal(1),
        gifts=(Gift("coupon", "优惠券", 20000),),
    )

    assert_refused(quote_for(order, gifts_returned=False), "S1")


def test_refusal_order_pr1_before_e4_when_gifts_exceed_and_a_refund_is_open(make_order, quote_for):
    """PR1 before E4: GIVEN kept gifts worth the whole refund AND a refund open elsewhere WHEN
    quoted THEN the rule is PR1."""
    order = make_order(gifts=(Gift("skin", "皮肤", 20000),))
    booking = OrderBooking(open_refund_id="rf_other", open_refund_amount=100)

    assert_refused(quote_for(order, booking=booking, gifts_returned=False), "PR1")


# --- Customised goods: E3 --------------------------------------------------------------------


@pytest.mark.parametrize("reason", NON_QUALITY_REASONS)
def test_e3_customised_goods_without_a_defect_are_not_refundable(make_order, quote_for, reason):
    """E3: GIVEN customised merchandise WHEN quoted for a reason that is not a quality problem
    THEN refused with E3."""
    order = make_order(kind=OrderKind.PHYSICAL, status=OrderStatus.PAID, customized=True)

    assert_refused(quote_for(order, reason), "E3")


@pytest.mark.parametrize("reason", sorted(QUALITY_REASONS))
def test_e3_customised_goods_with_a_quality_reason_are_refundable(make_order, quote_for, reason):
    """E3: GIVEN customised merchandise, shipped WHEN quoted for a quality reason THEN it is
    refundable in full, shipping included (PH1), and the goods come back."""
    order = make_order(
        kind=OrderKind.PHYSICAL,
        status=OrderStatus.SHIPPED,
        customized=True,
        list_price=5000,
        shipping_fee=800,
        paid_amount=5800,
    )

    quote = quote_for(order, reason)

    assert_refundable(quote, 5800)
    assert quote.needs_return is True


def test_e3_customised_flag_does_not_affect_virtual_goods(make_order, quote_for):
    """E3: GIVEN a virtual order flagged customised WHEN quoted for changed mind THEN E3 does
    not apply (it is about special physical goods)."""
    assert quote_for(make_order(customized=True)).refundable is True


# --- Physical goods: PH1 ---------------------------------------------------------------------


@pytest.mark.parametrize("reason", [Reason.CHANGED_MIND, Reason.DEFECTIVE])
def test_ph1_not_shipped_refunds_everything_including_shipping(make_order, quote_for, reason):
    """PH1: GIVEN a physical order not yet shipped (status paid), with 10.00 shipping WHEN
    quoted THEN the whole paid amount comes back, shipping included, nothing to return."""
    order = make_order(
        kind=OrderKind.PHYSICAL,
        status=OrderStatus.PAID,
        list_price=10000,
        shipping_fee=1000,
        paid_amount=11000,
    )

    quote = quote_for(order, reason)

    assert_refundable(quote, 11000)
    assert items(quote) == [("paid_amount", 11000)]
    assert quote.needs_return is False


@pytest.mark.parametrize("status", [OrderStatus.SHIPPED, OrderStatus.DELIVERED])
@pytest.mark.parametrize("reason", NON_QUALITY_REASONS)
def test_ph1_shipped_without_quality_problem_keeps_shipping_and_needs_return(
    make_order, quote_for, status, reason
):
    """PH1: GIVEN physical goods shipped WHEN quoted for a non-quality reason THEN the user
    bears shipping (shipping_not_refunded) and the goods must come back."""
    order = make_order(
        kind=OrderKind.PHYSICAL,
        status=status,
        list_price=10000,
        shipping_fee=1000,
        paid_amount=11000,
    )

    quote = quote_for(order, reason)

    assert_refundable(quote, 10000)
    assert items(quote) == [("paid_amount", 11000), ("shipping_not_refunded", -1000)]
    assert quote.needs_return is True
    assert "PH1" in quote.message


@pytest.mark.parametrize("reason", sorted(QUALITY_REASONS))
def test_ph1_shipped_with_quality_problem_refunds_shipping_and_needs_return(
    make_order, quote_for, reason
):
    """PH1: GIVEN physical goods shipped WHEN quoted for a quality reason THEN shipping is
    refunded too (the seller bears it), and the goods must come back."""
    order = make_order(
        kind=OrderKind.PHYSICAL,
        status=OrderStatus.SHIPPED,
        list_price=10000,
        shipping_fee=1000,
        paid_amount=11000,
    )

    quote = quote_for(order, reason)

    assert_refundable(quote, 11000)
    assert items(quote) == [("paid_amount", 11000)]
    assert quote.needs_return is True


def test_ph1_shipped_with_free_shipping_has_no_shipping_deduction(make_order, quote_for):
    """PH1: GIVEN shipped goods with no shipping fee, changed mind WHEN quoted THEN no zero
    `shipping_not_refunded` line, the full amount, and a return."""
    order = make_order(kind=OrderKind.PHYSICAL, status=OrderStatus.SHIPPED, shipping_fee=0)

    quote = quote_for(order)

    assert_refundable(quote, 10000)
    assert items(quote) == [("paid_amount", 10000)]
    assert quote.needs_return is True


# --- Services: S1 ----------------------------------------------------------------------------


def test_s1_service_not_started_is_refunded_in_full(make_order, quote_for):
    """S1: GIVEN a service not started (completion 0) WHEN quoted THEN full refund."""
    order = make_order(kind=OrderKind.SERVICE, status=OrderStatus.PAID)

    quote = quote_for(order, Reason.SERVICE_NOT_DELIVERED)

    assert_refundable(quote, 10000)
    assert items(quote) == [("paid_amount", 10000)]


def test_s1_half_done_service_refunds_half(make_order, quote_for):
    """S1: GIVEN a top-up service 50% done WHEN quoted THEN 50% back."""
    order = make_order(kind=OrderKind.SERVICE, service_completion=Decimal("0.5"))

    quote = quote_for(order, Reason.SERVICE_NOT_DELIVERED)

    assert_refundable(quote, 5000)
    assert items(quote) == [("paid_amount", 10000), ("service_completed", -5000)]


def test_s1_completion_in_exact_decimals_rounds_down(make_order, quote_for):
    """S1: GIVEN paid 1000 and completion 0.3333 WHEN quoted THEN 1000 x 0.6667 = 666.7 is
    computed exactly and rounded down to 666."""
    order = make_order(
        kind=OrderKind.SERVICE,
        list_price=1000,
        paid_amount=1000,
        service_completion=Decimal("0.3333"),
    )

    quote = quote_for(order, Reason.SERVICE_NOT_DELIVERED)

    assert_refundable(quote, 666)
    assert items(quote) == [("paid_amount", 1000), ("service_completed", -334)]


@pytest.mark.parametrize("reason", [Reason.SERVICE_NOT_DELIVERED, Reason.DEFECTIVE])
def test_s1_service_fully_done_is_not_refundable(make_order, quote_for, reason):
    """S1: GIVEN a service 100% done WHEN quoted, whatever the reason THEN refused with S1."""
    order = make_order(kind=OrderKind.SERVICE, service_completion=Decimal("1.0000"))

    assert_refused(quote_for(order, reason), "S1")


# --- Amounts that round to nothing -----------------------------------------------------------


def test_s1_service_whose_remaining_share_rounds_to_zero_is_refused(make_order, quote_for):
    """S1 + API.md (refundable exactly when amount > 0): GIVEN paid 1 fen, 99.99% done WHEN
    quoted THEN 0.0001 fen rounds down to 0, so it is a refusal naming S1, never a
    "refundable" quote of 0 fen."""
    order = make_order(
        kind=OrderKind.SERVICE,
        list_price=1,
        paid_amount=1,
        service_completion=Decimal("0.9999"),
    )

    assert_refused(quote_for(order, Reason.SERVICE_NOT_DELIVERED), "S1")


def test_e2_virtual_good_whose_remaining_value_rounds_to_zero_is_refused(make_order, quote_for):
    """V2 + E2: GIVEN paid 2 fen with 1 of 3 units left WHEN quoted THEN 0.67 fen rounds down
    to 0: nothing of value is left, a refusal naming E2 (consumed), not a 0-fen refund."""
    order = make_order(list_price=2, paid_amount=2, usage=Usage(3, 2))

    assert_refused(quote_for(order, Reason.INVALID_CODE), "E2")


def test_ph1_shipped_goods_where_shipping_is_everything_paid_are_refused(make_order, quote_for):
    """PH1 + API.md (refundable exactly when amount > 0): GIVEN a free gift item shipped for
    5.00 of shipping WHEN quoted for changed mind THEN the user bears the shipping, nothing
    is left, and the quote is a refusal naming PH1, not a 0-fen refund."""
    order = make_order(
        kind=OrderKind.PHYSICAL,
        status=OrderStatus.SHIPPED,
        list_price=0,
        shipping_fee=500,
        paid_amount=500,
    )

    assert_refused(quote_for(order, Reason.CHANGED_MIND), "PH1")


# --- Promotions and gifts: PR1 ---------------------------------------------------------------


def test_pr1_promotion_refunds_the_paid_amount_never_the_list_price(make_order, quote_for):
    """PR1: GIVEN a card listed at 100.00 sold at 88.00 WHEN quoted THEN 8800 comes back; the
    list price appears nowhere in the breakdown."""
    order = make_order(list_price=10000, paid_amount=8800)

    quote = quote_for(order, Reason.INVALID_CODE)

    assert_refundable(quote, 8800)
    assert items(quote) == [("paid_amount", 8800)]


def test_pr1_promotion_partly_used_is_based_on_paid_amount(make_order, quote_for):
    """PR1 + V2: GIVEN list 10000, paid 6000, half the units used WHEN quoted THEN 3000 (half
    of what was paid, not of the list price)."""
    order = make_order(list_price=10000, paid_amount=6000, usage=Usage(100, 50))

    assert_refundable(quote_for(order, Reason.INVALID_CODE), 3000)


def test_pr1_gift_not_returned_is_deducted(make_order, quote_for):
    """PR1: GIVEN a promotion with a 5.00 gift kept WHEN quoted THEN a `gift_not_returned`
    deduction of 500 appears, as in API.md's example."""
    order = make_order(list_price=10000, paid_amount=8800, gifts=(Gift("skin", "皮肤", 500),))

    quote = quote_for(order, Reason.INVALID_CODE, gifts_returned=False)

    assert_refundable(quote, 8300)
    assert items(quote) == [("paid_amount", 8800), ("gift_not_returned", -500)]


def test_pr1_several_kept_gifts_are_deducted_together(make_order, quote_for):
    """PR1: GIVEN two kept gifts (3.00 and 2.50) WHEN quoted THEN 550 is deducted."""
    gifts = (Gift("a", "赠品A", 300), Gift("b", "赠品B", 250))
    order = make_order(gifts=gifts)

    quote = quote_for(order, gifts_returned=False)

    assert_refundable(quote, 9450)
    assert items(quote) == [("paid_amount", 10000), ("gift_not_returned", -550)]


def test_pr1_gifts_returned_means_no_deduction(make_order, quote_for):
    """PR1: GIVEN a promotion with a gift WHEN the gifts are returned THEN nothing is deducted."""
    order = make_order(paid_amount=8800, gifts=(Gift("skin", "皮肤", 500),))

    quote = quote_for(order, gifts_returned=True)

    assert_refundable(quote, 8800)
    assert items(quote) == [("paid_amount", 8800)]


@pytest.mark.parametrize("gift_value", [1000, 1001, 50000])
def test_pr1_gift_worth_the_whole_refund_or_more_is_a_refusal(make_order, quote_for, gift_value):
    """PR1: GIVEN a kept gift worth at least what would come back (1000 fen) WHEN quoted THEN
    refused with PR1 (return the gift to get money back)."""
    order = make_order(list_price=1000, paid_amount=1000, gifts=(Gift("g", "赠品", gift_value),))

    quote = quote_for(order, gifts_returned=False)

    assert_refused(quote, "PR1")
    assert "gift" in quote.message


def test_pr1_gift_is_judged_against_what_is_left_after_v2(make_order, quote_for):
    """PR1 + V2: GIVEN paid 1000, 1/3 units left (333) WHEN a 300 gift is kept THEN 33 comes
    back; WHEN a 400 gift is kept THEN it exceeds what is left: PR1."""
    small = make_order(
        list_price=1000, paid_amount=1000, usage=Usage(3, 2), gifts=(Gift("g", "", 300),)
    )
    large = make_order(
        list_price=1000, paid_amount=1000, usage=Usage(3, 2), gifts=(Gift("g", "", 400),)
    )

    kept_small = quote_for(small, Reason.INVALID_CODE, gifts_returned=False)

    assert_refundable(kept_small, 33)
    assert items(kept_small) == [
        ("paid_amount", 1000),
        ("used_units", -667),
        ("gift_not_returned", -300),
    ]
    assert_refused(quote_for(large, Reason.INVALID_CODE, gifts_returned=False), "PR1")


# --- Platform fault fast track: O2 -----------------------------------------------------------


@pytest.mark.parametrize("fault", list(PlatformFault))
def test_o2_matching_platform_fault_is_fast_tracked(make_order, fault):
    """O2: GIVEN the order system reported its own fault WHEN the reason is that fault THEN
    the refund is fast-tracked; another reason is not."""
    order = make_order(platform_fault=fault)

    assert is_fast_track(order, Reason(fault.value)) is True
    assert is_fast_track(order, Reason.CHANGED_MIND) is False
    assert is_fast_track(make_order(), Reason(fault.value)) is False


def test_o2_fast_track_needs_no_evidence_and_lifts_e2(make_order, quote_for, now):
    """O2: GIVEN a duplicate charge the platform detected, on an expired, fully used order
    with a kept gift WHEN quoted for duplicate_charge THEN no evidence is required, E2 is
    lifted, nothing is deducted: the full paid amount comes back."""
    order = make_order(
        list_price=10000,
        paid_amount=8800,
        usage=Usage(100, 100),
        refund_deadline=now - timedelta(days=3),
        gifts=(Gift("skin", "皮肤", 500),),
        platform_fault=PlatformFault.DUPLICATE_CHARGE,
    )

    quote = quote_for(order, Reason.DUPLICATE_CHARGE, gifts_returned=False)

    assert_refundable(quote, 8800)
    assert items(quote) == [("paid_amount", 8800)]
    assert quote.required_evidence == ()


def test_o2_fast_track_pays_the_full_amount_of_a_partly_done_service(make_order, quote_for):
    """O2: GIVEN a service half done that was charged twice by the platform WHEN quoted for
    duplicate_charge THEN the full paid amount (no service_completed deduction)."""
    order = make_order(
        kind=OrderKind.SERVICE,
        service_completion=Decimal("0.5"),
        platform_fault=PlatformFault.DUPLICATE_CHARGE,
    )

    assert_refundable(quote_for(order, Reason.DUPLICATE_CHARGE), 10000)


def test_o2_fast_track_for_wrong_item_refunds_shipping_too(make_order, quote_for):
    """O2 + PH1: GIVEN shipped goods the platform issued wrongly WHEN quoted for
    wrong_item_issued THEN everything paid, shipping included, comes back."""
    order = make_order(
        kind=OrderKind.PHYSICAL,
        status=OrderStatus.SHIPPED,
        list_price=10000,
        shipping_fee=1000,
        paid_amount=11000,
        platform_fault=PlatformFault.WRONG_ITEM_ISSUED,
    )

    quote = quote_for(order, Reason.WRONG_ITEM_ISSUED)

    assert_refundable(quote, 11000)
    assert quote.required_evidence == ()


def test_o2_platform_fault_with_another_reason_follows_the_normal_rules(make_order, quote_for, now):
    """O2 / E2: GIVEN a platform fault duplicate_charge on an expired order WHEN the user
    claims invalid_code instead THEN no fast track: E2 applies."""
    order = make_order(
        platform_fault=PlatformFault.DUPLICATE_CHARGE, refund_deadline=now - timedelta(days=1)
    )

    assert_refused(quote_for(order, Reason.INVALID_CODE), "E2")


def test_o2_fast_track_does_not_lift_x1_or_e4(make_order, quote_for):
    """O2 / X1 / E4: GIVEN a platform fault WHEN the order is completed THEN X1 still comes
    first; WHEN a refund is already open THEN E4 still applies."""
    fault = PlatformFault.DUPLICATE_CHARGE
    completed = make_order(platform_fault=fault, status=OrderStatus.COMPLETED)
    booking = OrderBooking(open_refund_id="rf_other", open_refund_amount=10000)

    assert_refused(quote_for(completed, Reason.DUPLICATE_CHARGE), "X1")
    assert_refused(
        quote_for(make_order(platform_fault=fault), Reason.DUPLICATE_CHARGE, booking=booking),
        "E4",
    )


# --- Several refunds of one order: E4 --------------------------------------------------------


def test_e4_open_refund_elsewhere_is_a_refusal(make_order, quote_for):
    """E4: GIVEN another refund open on the order WHEN quoted THEN refused with E4."""
    booking = OrderBooking(open_refund_id="rf_1", open_refund_amount=3000)

    quote = quote_for(make_order(), booking=booking)

    assert_refused(quote, "E4")
    assert "open" in quote.message


def test_e4_earlier_refunds_cap_the_amount(make_order, quote_for):
    """E4: GIVEN 60.00 of a 100.00 order already refunded WHEN quoted THEN at most 40.00, with
    an `already_refunded` deduction so the breakdown adds up."""
    booking = OrderBooking(refunded_total=6000)

    quote = quote_for(make_order(), Reason.INVALID_CODE, booking=booking)

    assert_refundable(quote, 4000)
    assert items(quote) == [("paid_amount", 10000), ("already_refunded", -6000)]


def test_e4_no_cap_line_when_the_policy_amount_fits_in_what_is_left(make_order, quote_for):
    """E4 + V2: GIVEN 333 due by V2 and 500 of 1000 refunded earlier WHEN quoted THEN 333,
    with no `already_refunded` line (the policy amount fits in the 500 left)."""
    order = make_order(list_price=1000, paid_amount=1000, usage=Usage(3, 2))

    quote = quote_for(order, Reason.INVALID_CODE, booking=OrderBooking(refunded_total=500))

    assert_refundable(quote, 333)
    assert [b.item for b in quote.breakdown] == ["paid_amount", "used_units"]


def test_e4_cap_applies_after_gift_deduction(make_order, quote_for):
    """E4 + PR1: GIVEN 8000 of 10000 refunded and a 500 gift kept WHEN quoted THEN the policy
    amount 9500 is capped at the 2000 left."""
    order = make_order(gifts=(Gift("g", "赠品", 500),))

    quote = quote_for(order, booking=OrderBooking(refunded_total=8000), gifts_returned=False)

    assert_refundable(quote, 2000)
    assert items(quote) == [
        ("paid_amount", 10000),
        ("gift_not_returned", -500),
        ("already_refunded", -7500),
    ]


def test_e4_nothing_left_is_a_refusal(make_order, quote_for):
    """E4: GIVEN the whole paid amount already refunded WHEN quoted THEN refused with E4."""
    assert_refused(quote_for(make_order(), booking=OrderBooking(refunded_total=10000)), "E4")


def test_e4_own_booking_does_not_count_against_itself(make_order, quote_for):
    """E4: GIVEN a create in progress that booked its 10000 as the open refund rf_1 WHEN it
    is quoted again as rf_1 THEN its own booking is not counted: 10000; as another refund
    THEN E4."""
    booking = OrderBooking(open_refund_id="rf_1", open_refund_amount=10000)

    assert_refundable(quote_for(make_order(), booking=booking, own_refund_id="rf_1"), 10000)
    assert_refused(quote_for(make_order(), booking=booking, own_refund_id="rf_2"), "E4")


def test_e4_own_booking_with_earlier_refunds(make_order, quote_for):
    """E4: GIVEN 3000 refunded earlier and rf_1 booked 7000 WHEN rf_1 is quoted THEN 7000."""
    booking = OrderBooking(refunded_total=3000, open_refund_id="rf_1", open_refund_amount=7000)

    quote = quote_for(make_order(), booking=booking, own_refund_id="rf_1")

    assert_refundable(quote, 7000)


@pytest.mark.parametrize(
    ("booking", "own", "expected"),
    [
        (OrderBooking(), None, 10000),
        (OrderBooking(refunded_total=2500), None, 7500),
        (OrderBooking(2500, "rf_1", 1000), None, 6500),
        (OrderBooking(2500, "rf_1", 1000), "rf_1", 7500),
        (OrderBooking(2500, "rf_1", 1000), "rf_2", 6500),
        (OrderBooking(10000), None, 0),
    ],
)
def test_e4_booking_remaining(booking, own, expected):
    """E4: GIVEN paid, in-flight and own refunds WHEN asked what is left THEN paid minus the
    committed total minus the open refund, unless that open refund is the asker's own."""
    assert booking.remaining(10000, own_refund_id=own) == expected


# --- Messages --------------------------------------------------------------------------------


def test_f4_quote_message_mentions_the_defaulted_reason(make_order, quote_for):
    """F4 / API.md quote: GIVEN no reason given (defaulted to changed_mind) WHEN quoted THEN
    the message says the quote is for changed_mind; without the default it does not."""
    defaulted = quote_for(make_order(), Reason.CHANGED_MIND, reason_defaulted=True)
    explicit = quote_for(make_order(), Reason.CHANGED_MIND)

    assert "changed_mind" in defaulted.message
    assert "default" in defaulted.message
    assert "default" not in explicit.message
    assert str(defaulted.amount) in defaulted.message


def test_e3_refusal_message_mentions_the_defaulted_reason(make_order, quote_for):
    """E3 / API.md quote: GIVEN customised goods quoted without a reason (changed_mind by
    default) WHEN refused with E3 THEN the message still says the reason was defaulted, so
    the user knows a quality reason would be judged differently."""
    order = make_order(kind=OrderKind.PHYSICAL, status=OrderStatus.PAID, customized=True)

    quote = quote_for(order, Reason.CHANGED_MIND, reason_defaulted=True)

    assert_refused(quote, "E3")
    assert "changed_mind" in quote.message
    assert "quality" in quote.message


# --- Evidence: F2 ----------------------------------------------------------------------------

V2_PARTLY_USED = Usage(100, 40)

F2_TABLE = [
    # (kind, usage, reason, platform fault, required kinds) -- one line per F2 row and case
    (OrderKind.VIRTUAL, None, Reason.CHANGED_MIND, None, (K.ORDER_SCREENSHOT,)),
    (OrderKind.VIRTUAL, V2_PARTLY_USED, Reason.CHANGED_MIND, None, (K.ORDER_SCREENSHOT,)),
    *[
        (OrderKind.VIRTUAL, None, r, None, (K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT))
        for r in sorted(set(Reason) - {Reason.CHANGED_MIND})
    ],
    *[
        (
            OrderKind.VIRTUAL,
            V2_PARTLY_USED,
            r,
            None,
            (K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT, K.USAGE_RECORD),
        )
        for r in sorted(set(Reason) - {Reason.CHANGED_MIND})
    ],
    (
        OrderKind.VIRTUAL,
        Usage(100, 0),
        Reason.INVALID_CODE,
        None,
        (K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT),
    ),
    *[
        (OrderKind.PHYSICAL, None, r, None, (K.ORDER_SCREENSHOT, K.DEFECT_PHOTO))
        for r in sorted(QUALITY_REASONS)
    ],
    *[(OrderKind.PHYSICAL, None, r, None, (K.ORDER_SCREENSHOT,)) for r in NON_QUALITY_REASONS],
    *[(OrderKind.SERVICE, None, r, None, (K.ORDER_SCREENSHOT, K.CHAT_RECORD)) for r in Reason],
    *[
        (kind, None, Reason(fault.value), fault, ())
        for kind in OrderKind
        for fault in PlatformFault
    ],
    # a platform fault that is not the claimed reason changes nothing
    (
        OrderKind.VIRTUAL,
        None,
        Reason.INVALID_CODE,
        PlatformFault.DUPLICATE_CHARGE,
        (K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT),
    ),
    (
        OrderKind.PHYSICAL,
        None,
        Reason.DEFECTIVE,
        PlatformFault.WRONG_ITEM_ISSUED,
        (K.ORDER_SCREENSHOT, K.DEFECT_PHOTO),
    ),
]


@pytest.mark.parametrize(("kind", "usage", "reason", "fault", "expected"), F2_TABLE)
def test_f2_required_evidence_table(make_order, quote_for, kind, usage, reason, fault, expected):
    """F2: GIVEN an order kind, its usage, a reason and a platform fault WHEN the required
    evidence is asked THEN it is exactly the F2 row, in F2's order, also in the quote."""
    order = make_order(kind=kind, usage=usage, platform_fault=fault)

    assert required_evidence(order, reason) == expected
    assert quote_for(order, reason).required_evidence == expected


@pytest.mark.parametrize(
    ("status", "rule"),
    [(OrderStatus.COMPLETED, "X1"), (OrderStatus.CANCELLED, "E1")],
)
def test_f2_required_evidence_is_listed_even_when_not_refundable(
    make_order, quote_for, status, rule
):
    """F2 / API.md quote: GIVEN a refusal WHEN quoted THEN required_evidence is still listed."""
    quote = quote_for(make_order(status=status), Reason.INVALID_CODE)

    assert_refused(quote, rule)
    assert quote.required_evidence == (K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT)


def test_f2_missing_evidence_lists_what_is_not_uploaded_in_f2_order(make_order):
    """F2: GIVEN a partly used card claimed invalid WHEN only the order screenshot and an
    `other` file are uploaded THEN problem screenshot and usage record are missing, in order."""
    order = make_order(usage=V2_PARTLY_USED)

    missing = missing_evidence(order, Reason.INVALID_CODE, {K.ORDER_SCREENSHOT, K.OTHER})

    assert missing == [K.PROBLEM_SCREENSHOT, K.USAGE_RECORD]


def test_f2_missing_evidence_nothing_uploaded_lists_everything(make_order):
    """F2: GIVEN a service refund with nothing uploaded WHEN checked THEN both kinds are missing."""
    order = make_order(kind=OrderKind.SERVICE)

    assert missing_evidence(order, Reason.OTHER, set()) == [K.ORDER_SCREENSHOT, K.CHAT_RECORD]


def test_f2_missing_evidence_complete_is_empty(make_order):
    """F2: GIVEN a defective physical good with order screenshot and defect photo WHEN checked
    THEN nothing is missing."""
    order = make_order(kind=OrderKind.PHYSICAL)

    assert missing_evidence(order, Reason.DEFECTIVE, {K.ORDER_SCREENSHOT, K.DEFECT_PHOTO}) == []


def test_o2_missing_evidence_fast_track_needs_nothing(make_order):
    """O2 / F2: GIVEN a platform fault matching the reason WHEN nothing is uploaded THEN
    nothing is missing (no extra proof asked)."""
    order = make_order(platform_fault=PlatformFault.WRONG_ITEM_ISSUED)

    assert missing_evidence(order, Reason.WRONG_ITEM_ISSUED, set()) == []


# --- Description: F3 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "description",
    [
        "不好用",
        "没效果",
        "不能用",
        "有问题",
        "doesn't work",
        "no effect",
        "bad",
        "Doesn't work!!!",
        "  NO EFFECT.  ",
        "不好用！没效果！！",
        "不好用，不能用，有问题，没效果",  # 12 characters, still only vague phrases
        "bad bad bad bad bad bad",
        "Doesn’t work!",  # typographic apostrophe, as phone keyboards type it
    ],
)
def test_f3_vague_phrases_only_are_not_specific(description):
    """F3: GIVEN a description made only of vague phrases (Chinese or English) WHEN checked
    THEN it goes back to the user with what to add: fact, evidence, claim."""
    problem = description_problem(description)

    assert problem is not None
    assert "F3" in problem
    assert "fact" in problem


@pytest.mark.parametrize(
    "description",
    [
        "broken",
        "点卡无效了",
        "a b c d e f g h i",  # 9 letters once spaces are removed
        "序列号，无效！要求 退款",  # 9 characters without punctuation and spaces
        "序列号无效要求退款",  # 9
        "!!!...???   ",
        "",
    ],
)
def test_f3_fewer_than_ten_characters_is_too_short(description):
    """F3: GIVEN fewer than 10 characters once spaces and punctuation are removed WHEN checked
    THEN it is sent back as too short, saying the minimum."""
    problem = description_problem(description)

    assert problem is not None
    assert "F3" in problem


def test_f3_too_short_message_says_the_minimum():
    """F3: GIVEN a short non-vague text WHEN checked THEN the message names 10 characters."""
    problem = description_problem("broken")

    assert problem is not None
    assert "10" in problem


@pytest.mark.parametrize(
    "description",
    [
        "订单 o-1001 的点卡到账后提示序列号无效，要求全额退款",
        "订单号123456于2023年10月1日购买的游戏点卡，到账后提示序列号无效（截图附上），要求全额退款",
        "点卡不能用：到账后提示序列号无效（截图附上），要求全额退款",  # vague phrase + facts
        "The code from order o-1001 is rejected as invalid (screenshot attached); refund please",
        "序列号无效要求退款啊",  # exactly 10 characters
        "It doesn't work: code o-1001 says 'already redeemed', screenshot attached.",
    ],
)
def test_f3_specific_description_passes(description):
    """F3: GIVEN a description with fact, evidence and claim, of at least 10 characters WHEN
    checked THEN there is no problem, even if it also contains a vague phrase."""
    assert description_problem(description) is None


def test_breakdown_items_are_integers_in_fen(make_order, quote_for):
    """V2 / S1 (POLICY money): GIVEN any quote WHEN it computes ratios THEN every amount is an
    int, never a float or a Decimal."""
    virtual = quote_for(make_order(usage=Usage(7, 3)), Reason.INVALID_CODE)
    service = quote_for(
        make_order(kind=OrderKind.SERVICE, service_completion=Decimal("0.1234")),
        Reason.SERVICE_NOT_DELIVERED,
    )

    for quote in (virtual, service):
        assert type(quote.amount) is int
        assert all(type(b.amount) is int for b in quote.breakdown)
        assert all(isinstance(b, BreakdownItem) for b in quote.breakdown)
