"""The customer-service console in a real browser (Chromium, headless, through Playwright)
over the local stack: an agent's day from sign-in to a paid refund, a decision the API
refuses explained in words, returned goods and a failed payout settled, an order corrected
(X1), a senior deciding an appeal, taking over a claim and reading the analytics and the
reconciliation, and the hosted-UI sign-in of deployed stages.

Every page is checked for console errors (beyond the refusals a test provokes on purpose),
for accessible names, headings and language, and screenshots are kept in
``test-artifacts/console/``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from infra.local.tokens import LOCAL_DEFAULT_SECRET, mint_token
from tests.e2e.conftest import started_stack
from tests.e2e.workflow_client import AGENT_1, AGENT_2, PDF, SENIOR, Api, Who

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CONSOLE_FILES = Path(__file__).resolve().parents[2] / "chalicelib" / "console"
WAIT_MS = 15_000
SPECIFIC = "订单到账后点卡序列号提示无效，截图为证，要求全额退款"
COGNITO = "https://auth.refunds.test"


def _screenshot_png() -> bytes:
    """A 240x150 RGB PNG that looks like a screenshot: a title bar and three text lines."""
    width, height = 240, 150
    lines = ((44, 180), (68, 140), (92, 200))  # (top, length) of each grey "text" line

    def pixel(x: int, y: int) -> bytes:
        if y < 24:
            return b"\x1d\x4e\xd8"
        if any(top <= y < top + 10 and 16 <= x < 16 + length for top, length in lines):
            return b"\x5b\x64\x73"
        return b"\xf4\xf5\xf7"

    rows = b"".join(b"\x00" + b"".join(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


SCREENSHOT = _screenshot_png()

# An axe-style audit of the page as it stands: names, headings, language, references.
AUDIT = """() => {
  const problems = [];
  const text = (el) => (el ? el.textContent.replace(/\\s+/g, " ").trim() : "");
  const byIds = (ids) => ids.split(/\\s+/).map((id) => document.getElementById(id));
  const nameOf = (el) => {
    if (el.getAttribute("aria-labelledby")) return byIds(el.getAttribute("aria-labelledby")).map(text).join(" ").trim();
    if (el.getAttribute("aria-label")) return el.getAttribute("aria-label").trim();
    if (el.id) {
      const label = document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
      if (label && text(label)) return text(label);
    }
    if (el.closest("label")) return text(el.closest("label"));
    return el.getAttribute("title") || "";
  };
  if (!document.documentElement.lang) problems.push("the page has no lang");
  if (!document.title.trim()) problems.push("the page has no title");
  for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    if (!nameOf(el)) problems.push(`${el.tagName.toLowerCase()}#${el.id} has no accessible name`);
  }
  for (const el of document.querySelectorAll("button")) {
    if (!(el.getAttribute("aria-label") || text(el))) problems.push(`a button has no text: ${el.outerHTML.slice(0, 80)}`);
  }
  for (const el of document.querySelectorAll("a[href]")) {
    const img = el.querySelector("img[alt]");
    if (!(text(el) || el.getAttribute("aria-label") || (img && img.alt.trim()))) problems.push(`a link has no name: ${el.href}`);
  }
  for (const el of document.querySelectorAll("img")) {
    if (!el.hasAttribute("alt")) problems.push(`an image has no alt: ${el.src}`);
  }
  for (const el of document.querySelectorAll("svg[role=img]")) {
    if (!nameOf(el)) problems.push("a chart has no accessible name");
  }
  const headings = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")];
  if (!headings.some((h) => h.tagName === "H1")) problems.push("no h1");
  let level = 0;
  for (const h of headings) {
    const next = Number(h.tagName[1]);
    if (next > level + 1) problems.push(`heading "${text(h)}" skips from h${level} to h${next}`);
    if (!text(h)) problems.push(`an empty h${next}`);
    level = next;
  }
  const seen = new Set();
  for (const el of document.querySelectorAll("[id]")) {
    if (seen.has(el.id)) problems.push(`duplicate id ${el.id}`);
    seen.add(el.id);
  }
  for (const attr of ["aria-labelledby", "aria-describedby"]) {
    for (const el of document.querySelectorAll(`[${attr}]`)) {
      for (const id of el.getAttribute(attr).split(/\\s+/)) {
        if (!document.getElementById(id)) problems.push(`${attr} names a missing id ${id}`);
      }
    }
  }
  for (const el of document.querySelectorAll("fieldset")) {
    if (!el.querySelector(":scope > legend")) problems.push("a fieldset has no legend");
  }
  return problems;
}"""

FAILED_REQUEST = re.compile(
    r"Failed to load resource: the server responded with a status of (\d{3})"
)


# ---------------------------------------------------------------------- the stack


@dataclass
class Stack:
    api: Api
    aws_endpoint: str

    @property
    def url(self) -> str:
        return self.api.base


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with started_stack() as local:
        yield Stack(Api(local.api_url), local.aws_endpoint)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: apt-get install -y chromium fonts-wqy-microhei")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


# ---------------------------------------------------------------------- the console, driven


@dataclass
class Console:
    """One agent's browser tab on the console, with what its page logged."""

    page: Any
    base: str
    errors: list[str] = field(default_factory=list)
    refusals: Counter[int] = field(default_factory=Counter)

    def refused(self, status: int) -> None:
        """The test provokes an error answer: Chromium logs the failed request, expectedly."""
        self.refusals[status] += 1

    def unexpected_errors(self) -> list[str]:
        allowed = Counter(self.refusals)
        unexpected = []
        for error in self.errors:
            status = FAILED_REQUEST.search(error)
            if status and allowed[int(status.group(1))] > 0:
                allowed[int(status.group(1))] -= 1
            else:
                unexpected.append(error)
        return unexpected

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def audit(self) -> None:
        assert self.page.evaluate(AUDIT) == []

    def sign_in(self, who: Who, shot: str | None = None) -> None:
        self.page.goto(f"{self.base}/console")
        token = self.page.get_by_label("访问令牌（JWT）")
        expect(token).to_be_visible()
        self.audit()
        if shot:
            self.shot(shot)
        token.fill(mint_token(LOCAL_DEFAULT_SECRET, who.sub, who.groups, ttl_seconds=3600))
        self.page.get_by_role("button", name="登录", exact=True).click()
        expect(self.page.get_by_role("heading", name="退款队列")).to_be_visible()
        expect(self.page.get_by_text(f"{who.sub} ·")).to_be_visible()

    def show_status(self, label: str) -> None:
        self.page.get_by_label("状态", exact=True).select_option(label=label)

    def select_with_keys(self, refund_id: str) -> None:
        """Move the queue's selection to the refund with j and k, as an agent would."""
        row = self.page.locator(f"#row-{refund_id}")
        expect(row).to_be_visible()
        ids = self.page.locator(".rows .row").evaluate_all(
            "rows => rows.map(r => r.dataset.refund)"
        )
        current = self.page.locator(".rows .row[aria-current='true']")
        at = ids.index(current.get_attribute("data-refund")) if current.count() else -1
        target = ids.index(refund_id)
        self.page.locator("#queue-title").click()  # out of any field: keys go to the queue
        if target == at:
            keys = ["k"] if target == 0 else ["k", "j"]
        else:
            keys = ["j" if target > at else "k"] * abs(target - at)
        for key in keys:
            self.page.keyboard.press(key)
        expect(row).to_have_attribute("aria-current", "true")
        expect(row).to_be_focused()

    def open(self, refund_id: str) -> None:
        self.select_with_keys(refund_id)
        self.page.keyboard.press("Enter")
        expect(self.page.locator("#refund-title")).to_have_text(f"退款 {refund_id}")
        expect(self.page.locator("#refund-title")).to_be_focused()

    def status(self) -> Any:
        return self.page.locator(".refund-status .status")

    def confirm(self, button: str) -> None:
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog.get_by_role("button", name="取消")).to_be_focused()
        dialog.get_by_role("button", name=button).click()
        expect(dialog).to_have_count(0)

    def tab_order(self, first: str) -> list[str]:
        """The ids focus goes through with Tab from ``first``, while each comes below or to
        the right of the one before (the visual order)."""
        self.page.locator(f"#{first}").focus()
        order = [first]
        box = self.page.locator(f"#{first}").bounding_box()
        for _ in range(2):
            self.page.keyboard.press("Tab")
            focused = self.page.evaluate("document.activeElement.id")
            following = self.page.locator(f"#{focused}").bounding_box()
            assert (following["y"], following["x"]) >= (box["y"], box["x"]), (order, focused)
            order.append(focused)
            box = following
        return order


@pytest.fixture
def console(browser: Any, stack: Stack) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    tab = Console(page, stack.url)
    page.on("console", lambda message: message.type == "error" and tab.errors.append(message.text))
    page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
    try:
        yield tab
        assert tab.unexpected_errors() == []
    finally:
        context.close()


# ---------------------------------------------------------------------- helpers


def _user(stack: Stack) -> Api:
    return stack.api.as_user(Who(f"u-cs-{uuid.uuid4().hex[:10]}"))


def _in_review(api: Api, name: str) -> str:
    """A game card whose code does not work, with an order screenshot (PNG) and a problem
    screenshot (PDF), submitted and handed to a person by the automatic check."""
    order = api.order(name)
    api.put_order(order)
    refund = api.create_refund(order["order_id"], "invalid_code", SPECIFIC)
    refund_id: str = refund["refund_id"]
    api.upload(refund_id, "order_screenshot", SCREENSHOT, "image/png")
    api.upload(refund_id, "problem_screenshot", PDF, "application/pdf")
    submitted = api.submit(refund_id)
    assert submitted.status_code == 200, submitted.text
    api.wait_status(refund_id, "pending_review")
    return refund_id


def _pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# ---------------------------------------------------------------------- the page itself


def test_the_console_is_served_with_a_strict_policy_and_stays_out_of_the_api(
    stack: Stack,
) -> None:
    page = requests.get(f"{stack.url}/console", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == f"'self' {stack.aws_endpoint}"  # the evidence previews
    assert policy["frame-ancestors"] == "'none'"
    assert policy["require-trusted-types-for"] == "'script'"

    # The modules are served under their content's digest, kept for good, typed right.
    script = re.search(r'src="(/console/[0-9a-f]{16}/app\.js)"', page.text)
    assert script is not None
    module = requests.get(f"{stack.url}{script.group(1)}", timeout=10)
    assert module.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert module.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    style = requests.get(
        f"{stack.url}{script.group(1).replace('app.js', 'console.css')}", timeout=10
    )
    assert style.headers["Content-Type"] == "text/css; charset=utf-8"
    stale = requests.get(f"{stack.url}/console/0000000000000000/app.js", timeout=10)
    assert stale.status_code == 404
    assert stale.json()["error"]["code"] == "not_found"

    config = requests.get(f"{stack.url}/console/config.json", timeout=10).json()
    assert config["sign_in"] == "token"  # the local stage
    assert {"A1", "E2", "PH1", "X3"} <= set(config["rule_ids"])

    # Files, not API routes: the OpenAPI document describes the API only.
    paths = requests.get(f"{stack.url}/openapi.json", timeout=10).json()["paths"]
    assert not [path for path in paths if path.startswith("/console")]


def test_every_string_is_in_both_dictionaries() -> None:
    from chalicelib.domain import model
    from chalicelib.domain.rules import POLICY_RULE_IDS
    from chalicelib.domain.workflow import Step, StepStatus

    keys = {}
    for language in ("zh", "en"):
        text = (CONSOLE_FILES / f"{language}.js").read_text(encoding="utf-8")
        keys[language] = set(re.findall(r'^\s+"?([\w.-]+)"?: "', text, re.MULTILINE))
    assert keys["zh"] == keys["en"]
    # Every key the modules name, and a label for every value of the API's enumerations.
    used = set()
    for module in CONSOLE_FILES.glob("*.js"):
        used |= set(re.findall(r'\bt\(\s*"([\w.-]+)"', module.read_text(encoding="utf-8")))
    labelled = {
        "status": model.RefundStatus,
        "reason": model.Reason,
        "action": model.Action,
        "evidence": model.EvidenceKind,
        "channel": model.PaymentChannel,
        "payout": model.PayoutChannel,
        "kind": model.OrderKind,
        "order_status": model.OrderStatus,
        "step": Step,
        "step_status": StepStatus,
    }
    for group, values in labelled.items():
        used |= {f"{group}.{value.value}" for value in values}
    used |= {f"rule.{rule}" for rule in POLICY_RULE_IDS}
    assert used - keys["zh"] == set()


# ---------------------------------------------------------------------- an agent's day


def test_an_agents_day_from_sign_in_to_a_paid_refund(stack: Stack, console: Console) -> None:
    # GIVEN two refunds the automatic check handed to a person, with an image and a PDF
    # each: the one this agent works on comes second in the queue
    neighbour_id = _in_review(_user(stack), "neighbour")
    user = _user(stack)
    refund_id = _in_review(user, "day")
    page = console.page
    page.clock.install()

    # WHEN agent-1 signs in with a pasted token THEN the queue of pending reviews shows
    console.sign_in(AGENT_1, shot="01-sign-in")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    statuses = page.get_by_label("状态", exact=True).locator("option").all_inner_texts()
    assert "待审核" in statuses
    assert "申诉中" not in statuses  # appeals are for seniors

    # WHEN the agent moves down the queue with j and opens the refund with Enter
    console.open(refund_id)

    # THEN the order as it was, the evidence (the image inline, the PDF linked), the history
    # and the workflow's steps are there
    detail = page.locator(".refund")
    expect(detail.get_by_text("Steam 100 点卡 (steam-100)")).to_be_visible()
    picture = page.get_by_role("img", name="凭证：订单截图")
    expect(picture).to_be_visible()
    page.wait_for_function(
        "document.querySelector('.preview img').naturalWidth === 240", timeout=WAIT_MS
    )
    pdf = page.get_by_role("link", name="打开 PDF：问题截图（新窗口）")
    assert pdf.get_attribute("href").startswith(stack.aws_endpoint)
    assert requests.get(pdf.get_attribute("href"), timeout=10).content == PDF
    timeline = page.locator(".timeline .event")
    expect(timeline).to_have_count(3)
    expect(timeline.nth(2)).to_contain_text("自动检查")
    expect(page.locator("table.steps")).to_contain_text("自动检查")
    expect(console.status()).to_have_text("待审核")
    console.audit()
    console.shot("02-queue-and-refund")

    # WHEN the agent claims it with c THEN it is theirs
    page.keyboard.press("c")
    expect(page.get_by_text("你已认领这张退款。")).to_be_visible()
    assert stack.api.detail(refund_id)["assignee"] == "agent-1"

    # WHEN the agent presses i and asks for what is missing THEN the user is asked (R3)
    page.keyboard.press("i")
    expect(page.locator("#reply-body")).to_be_focused()
    page.keyboard.type("请补充点卡背面序列号的清晰照片")
    page.get_by_role("button", name="发送并请求补充").click()
    expect(console.status()).to_have_text("待补充")
    expect(page.locator(".message.from-agent")).to_contain_text("请补充点卡背面序列号的清晰照片")

    # WHEN the user answers over the API: a message, the photo, and a new submission
    answer = user.call(
        "POST", f"/refunds/{refund_id}/messages", user.user, {"body": "已上传序列号照片，请查看"}
    )
    assert answer.status_code == 201, answer.text
    user.upload(refund_id, "other", SCREENSHOT, "image/png")
    assert user.submit(refund_id).status_code == 200
    user.wait_status(refund_id, "pending_review")

    # THEN the console refreshes itself (every 15 s) and the agent's place is kept: the
    # refund stays open, the selection where it was (on the next refund, since this one
    # had left the queue)
    selected = page.locator(".rows .row[aria-current='true']")
    expect(selected).to_have_attribute("data-refund", neighbour_id)
    page.clock.fast_forward(15_000)
    expect(console.status()).to_have_text("待审核")
    expect(page.locator(".message.from-user")).to_contain_text("已上传序列号照片，请查看")
    expect(page.get_by_role("img", name="凭证：其他")).to_be_visible()
    expect(page.locator(f"#row-{refund_id}")).to_have_class(re.compile(r"\bopened\b"))
    expect(selected).to_have_attribute("data-refund", neighbour_id)

    # WHEN the agent presses a and asks for more than the computed amount THEN it is
    # refused beside the field, before anything is sent (A1)
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    amount = page.locator("#approve-amount")
    expect(amount).to_be_focused()
    assert console.tab_order("approve-amount") == [
        "approve-amount",
        "approve-note",
        "approve-submit",
    ]
    assert console.tab_order("reject-rule") == ["reject-rule", "reject-message", "reject-submit"]
    amount.fill("100")
    amount.press("Enter")
    expect(page.locator("#approve-amount-error")).to_have_text("不能高于计算金额 ¥88.00（A1）。")
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(amount).to_be_focused()
    # AND a lower amount needs a reason
    amount.fill("80")
    amount.press("Enter")
    expect(page.locator("#approve-note-error")).to_contain_text("必须写明理由")
    console.audit()

    # WHEN the agent approves the computed amount THEN a confirmation comes first
    amount.fill("88.00")
    page.get_by_role("button", name="批准", exact=True).click()
    expect(page.get_by_role("dialog")).to_contain_text("批准后会立即付款，无法撤回。")
    console.shot("03-approve-confirmation")
    console.confirm("确认批准 ¥88.00")

    # THEN the page follows the payout until the refund is paid
    expect(console.status()).to_have_text("已付款")
    expect(page.locator("table.steps")).to_contain_text("付款")
    console.audit()
    console.shot("04-paid")
    paid = stack.api.detail(refund_id)
    assert paid["status"] == "paid"
    assert paid["approved_amount"] == 8800
    assert [entry["amount"] for entry in stack.api.statement("alipay", refund_id)] == [8800]


# ---------------------------------------------------------------------- a refusal, explained


def test_a_decision_the_api_refuses_is_explained_in_words(stack: Stack, console: Console) -> None:
    # GIVEN agent-1 has a refund open, unclaimed
    refund_id = _in_review(_user(stack), "refused")
    page = console.page
    console.sign_in(AGENT_1)
    console.open(refund_id)
    expect(page.get_by_role("button", name="认领", exact=True)).to_be_visible()

    # WHEN agent-2 claims it first, and agent-1 then presses c
    assert stack.api.decide(refund_id, "claim", AGENT_2).status_code == 200
    console.refused(409)
    page.keyboard.press("c")

    # THEN the API's error envelope is shown in words: what failed, why, its own message
    error = page.get_by_role("alert")
    expect(error).to_contain_text(
        "认领失败：与当前状态冲突（状态已变化，或已被他人认领） (409 conflict)"
    )
    expect(error).to_contain_text("claimed by another agent (agent-2)")
    expect(error).to_contain_text("请求编号")
    # AND the refund is shown as it is now
    expect(page.get_by_text("agent-2 已认领这张退款；只有高级客服可以接管。")).to_be_visible()
    expect(page.locator("#approve-submit")).to_be_disabled()
    console.audit()
    console.shot("05-refused-claim")

    # WHEN the agent switches to English THEN the same explanation reads in English
    page.get_by_label("语言").select_option("en")
    expect(error).to_contain_text("Claim failed: It conflicts with the refund's state")
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.title() == "Refunds console"
    console.audit()
    console.shot("06-refused-claim-english")


# ---------------------------------------------------------------------- goods back, payout failed


def test_goods_back_and_a_failed_payout_are_settled_from_the_console(
    stack: Stack, console: Console
) -> None:
    # GIVEN a game card whose payout WeChat Pay keeps refusing (P2: payout_failed after the
    # retries) ...
    user = _user(stack)
    stack.api.configure_channel("wechat", fail_rate=1)
    try:
        failing = user.order("failing", payment_channel="wechat")
        user.put_order(failing)
        failed_id = user.create_refund(failing["order_id"], "duplicate_charge", SPECIFIC)[
            "refund_id"
        ]
        user.upload(failed_id, "order_screenshot", SCREENSHOT, "image/png")
        user.upload(failed_id, "problem_screenshot", SCREENSHOT, "image/png")
        assert user.submit(failed_id).status_code == 200
        user.wait_status(failed_id, "pending_review")
        assert stack.api.decide(failed_id, "claim").status_code == 200
        assert stack.api.decide(failed_id, "approve").status_code == 200
        # ... AND shipped goods that come back (PH1), approved by the same agent
        shipped = user.order(
            "shipped",
            kind="physical",
            sku="headset-x1",
            title="游戏耳机",
            category="peripheral",
            list_price=29900,
            paid_amount=30900,
            shipping_fee=1000,
            status="shipped",
        )
        user.put_order(shipped)
        returned_id = user.create_refund(
            shipped["order_id"], "changed_mind", "耳机收到后不想要了，包装未拆，申请退货退款"
        )["refund_id"]
        user.upload(returned_id, "order_screenshot", SCREENSHOT, "image/png")
        assert user.submit(returned_id).status_code == 200
        user.wait_status(returned_id, "pending_review")
        assert stack.api.decide(returned_id, "claim").status_code == 200
        assert stack.api.decide(returned_id, "approve").json()["status"] == "awaiting_return"
        user.wait_status(failed_id, "payout_failed", deadline=60)
    finally:
        stack.api.configure_channel("wechat", fail_rate=0)
    page = console.page
    console.sign_in(AGENT_1)

    # WHEN the agent opens the returned goods, presses e and confirms without saying how they
    # came back THEN the form asks first
    console.show_status("等待退货")
    console.open(returned_id)
    page.keyboard.press("e")
    expect(page.get_by_label("完好", exact=True)).to_be_focused()
    page.get_by_role("button", name="确认收货").click()
    expect(page.locator("#return-intact-yes-error")).to_have_text("请选择退货是否完好。")
    # AND goods opened, for a reason that is not a quality problem, would be rejected (PH1)
    page.get_by_label("已拆封或损坏").check()
    page.get_by_role("button", name="确认收货").click()
    expect(page.get_by_role("dialog")).to_contain_text("确认后将按 PH1 驳回这张退款。")
    page.get_by_role("dialog").get_by_role("button", name="取消").click()
    # WHEN they came back intact THEN the amount with shipping deducted is paid
    page.get_by_label("完好", exact=True).check()
    page.get_by_role("button", name="确认收货").click()
    console.confirm("确认收货")
    expect(console.status()).to_have_text("已付款")
    assert stack.api.detail(returned_id)["approved_amount"] == 29900

    # WHEN the agent opens the failed payout THEN its step shows the attempts and the error
    console.show_status("付款失败")
    console.open(failed_id)
    payout = page.locator("table.steps tr.step-failed")
    expect(payout).to_contain_text("付款")
    expect(payout).to_contain_text("SYSTEM_BUSY")
    console.audit()
    console.shot("11-payout-failed")
    # AND presses p and sends it to the balance instead THEN it is paid there
    page.keyboard.press("p")
    expect(page.get_by_label("原路退回（微信支付）")).to_be_focused()
    page.get_by_label("平台余额（即时到账）").check()
    page.get_by_role("button", name="重新付款").click()
    console.confirm("确认付款")
    expect(console.status()).to_have_text("已付款")
    assert [e["amount"] for e in stack.api.statement("balance", failed_id)] == [8800]


# ---------------------------------------------------------------------- X1


def test_an_agent_corrects_an_order_marked_completed(stack: Stack, console: Console) -> None:
    # GIVEN an order the system marked completed: its user cannot apply (X1)
    user = _user(stack)
    order = user.order("completed", status="completed")
    user.put_order(order)
    assert user.quote(order["order_id"]).json()["rule"] == "X1"
    page = console.page

    # WHEN an agent corrects its status, with the reason, and confirms
    console.sign_in(AGENT_1)
    page.keyboard.press("3")
    expect(page.get_by_role("heading", name="订单状态更正（X1）")).to_be_visible()
    page.get_by_role("button", name="更正", exact=True).click()
    expect(page.locator("#order-id-error")).to_have_text("请输入订单号。")
    page.get_by_label("订单号").fill(order["order_id"])
    page.get_by_label("新的状态").select_option(label="已发放")
    page.get_by_label("原因").fill("卡密未发放成功，系统误标为已完成")
    page.get_by_role("button", name="更正", exact=True).click()
    console.confirm("确认更正")

    # THEN the order is delivered again, and its user can apply
    expect(page.get_by_role("status").filter(has_text="现在是")).to_have_text(
        f"订单 {order['order_id']} 现在是“已发放”（版本 1）。"
    )
    console.audit()
    assert user.quote(order["order_id"]).json()["refundable"] is True


# ---------------------------------------------------------------------- a senior's work


def test_a_senior_decides_an_appeal_takes_over_and_reads_the_figures(
    stack: Stack, console: Console
) -> None:
    # GIVEN a refund agent-2 rejected and its user appealed (X3)
    user = _user(stack)
    appealed_id = _in_review(user, "appeal")
    assert stack.api.decide(appealed_id, "claim", AGENT_2).status_code == 200
    rejected = stack.api.decide(
        appealed_id, "reject", AGENT_2, {"rule": "E2", "message": "点卡已充值到账，视为已使用"}
    )
    assert rejected.status_code == 200, rejected.text
    appeal = user.call(
        "POST",
        f"/refunds/{appealed_id}/appeal",
        user.user,
        {"statement": "充值记录显示未到账，序列号无效，见截图", "evidence_ids": []},
    )
    assert appeal.status_code == 200, appeal.text
    # AND a refund agent-2 claimed and left
    held_id = _in_review(_user(stack), "held")
    assert stack.api.decide(held_id, "claim", AGENT_2).status_code == 200
    page = console.page

    # WHEN the senior opens the appeals
    console.sign_in(SENIOR)
    console.show_status("申诉中")
    console.open(appealed_id)
    expect(console.status()).to_have_text("申诉中")
    expect(page.locator(".timeline")).to_contain_text("E2")
    expect(page.locator(".message.from-agent")).to_contain_text("[E2] 点卡已充值到账，视为已使用")

    # AND claims it and approves less than computed, with the reason (A1)
    page.keyboard.press("c")
    expect(page.get_by_text("你已认领这张退款。")).to_be_visible()
    page.keyboard.press("a")
    page.locator("#approve-amount").fill("80.00")
    page.locator("#approve-note").fill("申诉成立，扣除已使用的 8 元")
    page.get_by_role("button", name="批准", exact=True).click()
    expect(page.get_by_role("dialog")).to_contain_text("低于计算金额 ¥88.00。")
    console.confirm("确认批准 ¥80.00")

    # THEN it is paid, with the lower amount and its rule on record
    expect(console.status()).to_have_text("已付款")
    expect(page.locator(".timeline")).to_contain_text("A1")
    assert stack.api.detail(appealed_id, SENIOR)["approved_amount"] == 8000

    # WHEN the senior takes over the claim agent-2 left THEN a confirmation comes first
    console.show_status("待审核")
    console.open(held_id)
    expect(page.get_by_role("button", name="接管（当前：agent-2）")).to_be_visible()
    page.keyboard.press("c")
    console.confirm("确认接管")
    expect(page.get_by_text("你已认领这张退款。")).to_be_visible()
    assert stack.api.detail(held_id, SENIOR)["assignee"] == "senior-1"

    # WHEN the senior reads the analytics THEN the period's refunds are charted
    page.keyboard.press("2")
    expect(page.get_by_role("heading", name="退款统计")).to_be_visible()
    reasons = page.get_by_role("img", name="按原因")
    expect(reasons).to_be_visible()
    period = {
        "from": page.locator("#stats-from").input_value(),
        "to": page.locator("#stats-to").input_value(),
    }
    figures = stack.api.ok("GET", "/admin/stats?" + urlencode(period), SENIOR)
    expect(reasons.locator("rect.bar")).to_have_count(len(figures["by_reason"]))
    expect(reasons).to_contain_text(f"卡密无效{figures['by_reason']['invalid_code']}")
    expect(page.get_by_role("img", name="按状态")).to_contain_text(
        f"已付款{figures['by_status']['paid']}"
    )
    console.audit()
    console.shot("07-stats")

    # WHEN the senior opens the reconciliation of a day no run covered THEN it says so
    page.keyboard.press("3")
    expect(page.get_by_role("heading", name="渠道对账")).to_be_visible()
    console.refused(404)  # the default day, yesterday, may have had no run either
    expect(page.locator("#recon-submit")).to_have_text("查看")
    console.refused(404)
    page.get_by_label("日期").fill("2020-01-01")
    page.get_by_role("button", name="查看").click()
    expect(
        page.get_by_text("2020-01-01 没有对账记录：没有任何对账运行覆盖这一天。")
    ).to_be_visible()
    console.audit()
    console.shot("08-reconciliation-no-run")

    # WHEN the day of today's payouts is reconciled (the business clock a day on, as the
    # daily run would be) THEN the senior sees each channel's figures
    stack.api.ok("POST", "/_local/clock", body={"advance_hours": 24})
    try:
        run = stack.api.ok("POST", "/_local/schedules/reconcile/run")
    finally:
        stack.api.ok("POST", "/_local/clock", body={"reset": True})
    today = run["result"]["day"]
    page.get_by_label("日期").fill(today)
    page.get_by_role("button", name="查看").click()
    alipay = page.get_by_role("region", name="支付宝")
    day = stack.api.ok("GET", f"/admin/reconciliation?day={today}", SENIOR)["channels"]["alipay"]
    assert day["entries"] >= 2  # the refunds paid today through Alipay, these tests' among them
    expect(alipay).to_contain_text(f"流水笔数{day['entries']}")
    expect(alipay).to_contain_text(f"¥{day['amount'] // 100:,}.{day['amount'] % 100:02d}")
    expect(alipay).to_contain_text("全部一致。")
    console.audit()
    console.shot("09-reconciliation")


# ---------------------------------------------------------------------- deployed sign-in


def test_deployed_stages_sign_in_through_the_cognito_hosted_ui(
    stack: Stack, console: Console
) -> None:
    from chalicelib.settings import get_settings

    # GIVEN a stage with the console's Cognito domain and app client
    os.environ["REFUNDS_COGNITO_DOMAIN"] = COGNITO
    os.environ["REFUNDS_COGNITO_CLIENT_ID"] = "console-client"
    get_settings.cache_clear()
    page = console.page
    console_url = f"{stack.url}/console"
    seen: dict[str, Any] = {}

    def authorize(route: Any) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(route.request.url).query).items()}
        seen["authorize"] = query
        back = f"{console_url}?code=the-code&state={query['state']}"
        route.fulfill(status=302, headers={"Location": back})

    def token(route: Any) -> None:
        form = {k: v[0] for k, v in parse_qs(route.request.post_data).items()}
        seen["token"] = form
        id_token = mint_token(LOCAL_DEFAULT_SECRET, "senior-1", ["cs-senior"], ttl_seconds=3600)
        route.fulfill(
            status=200,
            headers={"Access-Control-Allow-Origin": stack.url},
            content_type="application/json",
            body=json.dumps({"id_token": id_token, "token_type": "Bearer", "expires_in": 3600}),
        )

    page.route(lambda url: url.startswith(f"{COGNITO}/oauth2/authorize?"), authorize)
    page.route(f"{COGNITO}/oauth2/token", token)
    try:
        # WHEN an agent opens the console and goes to the hosted UI
        page.goto(console_url)
        policy = requests.get(console_url, timeout=10).headers["Content-Security-Policy"]
        assert f"connect-src 'self' {COGNITO}" in policy
        go = page.get_by_role("button", name="前往统一登录")
        expect(go).to_be_visible()
        console.audit()
        console.shot("10-hosted-sign-in")
        go.click()

        # THEN the console is signed in with the ID token the code was exchanged for
        expect(page.get_by_role("heading", name="退款队列")).to_be_visible()
        expect(page.get_by_text("senior-1 ·")).to_be_visible()
        asked = seen["authorize"]
        assert asked["response_type"] == "code"
        assert asked["client_id"] == "console-client"
        assert asked["redirect_uri"] == console_url
        assert asked["code_challenge_method"] == "S256"
        exchange = seen["token"]
        assert exchange["grant_type"] == "authorization_code"
        assert exchange["code"] == "the-code"
        assert exchange["redirect_uri"] == console_url
        assert _pkce_challenge(exchange["code_verifier"]) == asked["code_challenge"]
        assert "code=" not in page.url  # the code does not stay in the address bar
    finally:
        del os.environ["REFUNDS_COGNITO_DOMAIN"]
        del os.environ["REFUNDS_COGNITO_CLIENT_ID"]
        get_settings.cache_clear()
