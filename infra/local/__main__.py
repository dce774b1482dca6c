"""`make run`: start the local stack, print a ready line with demo tokens, stop on a signal."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

from .demo import DEMO_USERS, seed_demo_orders
from .stack import LocalStack
from .tokens import LOCAL_DEFAULT_SECRET, mint_token

TOKEN_HOURS = 12


def main() -> int:
    stack = LocalStack(
        port=int(os.environ.get("PORT", "8000")),
        moto_port=int(os.environ.get("MOTO_PORT", "0")),
        seed=seed_demo_orders,
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
    except OSError as error:
        print(f"cannot start the local stack: {error} (set PORT to another port)", flush=True)
        return 1
    secret = os.environ.get("REFUNDS_JWT_SECRET", LOCAL_DEFAULT_SECRET)
    ttl = TOKEN_HOURS * 3600
    tokens = {f"user {user}": mint_token(secret, user, ttl_seconds=ttl) for user in DEMO_USERS}
    tokens["cs-agent agent-1"] = mint_token(secret, "agent-1", ["cs-agent"], ttl_seconds=ttl)
    tokens["cs-senior senior-1"] = mint_token(secret, "senior-1", ["cs-senior"], ttl_seconds=ttl)
    tokens["order-service"] = mint_token(secret, "order-system", ["order-service"], ttl_seconds=ttl)
    lines = [f"  {who}: {token}" for who, token in tokens.items()]
    print(
        f"refunds local stack ready: API {stack.api_url}, AWS emulator {stack.aws_endpoint}\n"
        f"CS console: {stack.api_url}/console (paste the cs-agent or cs-senior token)\n"
        f"demo orders: o-1-card o-1-topup o-1-headset o-1-mug o-1-boost o-1-promo o-1-dup "
        f"(and o-2-* for u-2)\n"
        f"demo tokens ({TOKEN_HOURS} h):\n" + "\n".join(lines),
        flush=True,
    )
    stopping.wait()
    print("stopping", flush=True)
    stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
