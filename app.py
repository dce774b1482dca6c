"""The refund API on Chalice: only wiring. Routes live in blueprints, one per caller."""

from __future__ import annotations

from chalice.app import Chalice

from chalicelib.api.http import answer_other_methods, request_context
from chalicelib.api.routes import (
    console,
    console_page,
    local_stage,
    mobile,
    order_system,
    public,
    webhooks,
    workers,
)

# Powertools writes the logs (JSON, request id on every line); Chalice adds no plain copy.
app = Chalice(app_name="refunds", configure_logs=False)
app.register_middleware(request_context, "http")
for routes in (public, order_system, mobile, console, console_page, webhooks, local_stage, workers):
    app.register_blueprint(routes.blueprint)
answer_other_methods(app)
