"""Stage settings: the idempotency lease must outlive the function (DESIGN.md, "Lost answers").

A booking older than the lease with no refund item is taken for a create that died; if a
create could still be running then, its late writes would meet a fence, and its first answer
could race its retry's. So settings where the lease does not outlive the function's timeout
are refused when they are read, before any request is served.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.settings import Settings

CONFIG = json.loads((Path(__file__).parents[2] / ".chalice" / "config.json").read_text())


def test_a_lease_not_longer_than_the_function_timeout_is_refused_at_start_up() -> None:
    env = {"REFUNDS_STAGE": "local", "REFUNDS_IDEMPOTENCY_LEASE_SECONDS": "25"}
    with pytest.raises(RuntimeError, match="longer than the function's timeout"):
        Settings.from_environ({**env, "REFUNDS_FUNCTION_TIMEOUT_SECONDS": "25"})
    settings = Settings.from_environ({**env, "REFUNDS_FUNCTION_TIMEOUT_SECONDS": "20"})
    assert (settings.idempotency_lease_seconds, settings.function_timeout_seconds) == (25, 20)


@pytest.mark.parametrize("stage", sorted(CONFIG["stages"]))
def test_every_stage_tells_the_app_its_real_timeout_and_outlives_it(stage: str) -> None:
    stage_config = CONFIG["stages"][stage]
    env = {
        **CONFIG.get("environment_variables", {}),
        **stage_config.get("environment_variables", {}),
    }
    timeout = stage_config.get("lambda_timeout", CONFIG["lambda_timeout"])
    assert env["REFUNDS_FUNCTION_TIMEOUT_SECONDS"] == str(timeout)
    settings = Settings.from_environ(env)
    assert settings.idempotency_lease_seconds > settings.function_timeout_seconds == timeout
