import json
from tests.support import bearer, order_payload, as_json

def show(r):
    print(r.status_code, dict(r.headers), r.body[:600])

def test_probe(client, aws):
    os_h = {**bearer("svc", "order-service"), "Content-Type": "application/json"}
    r = client.http.put("/internal/orders/o-1001", headers=os_h, body=as_json(order_payload(paid_at="2026-11-20T16:00:00+08:00")))
    show(r)
    u = {**bearer("u-1"), "Content-Type": "application/json"}
    r = client.http.get("/orders/o-1001/refund-quote", headers=u); show(r)
    r = client.http.post("/refunds", headers={**u, "Idempotency-Key": "k1"}, body=as_json({"order_id": "o-1001", "reason": "invalid_code", "description": "点卡无效"})); show(r)
    rid = json.loads(r.body)["refund_id"]
    r = client.http.request("DELETE", f"/refunds/{rid}", headers=u); show(r) if hasattr(client.http, "request") else None
    r = client.http.get("/nope", headers=u); show(r)
    r = client.http.get("/nope"); show(r)
    r = client.http.post(f"/refunds/{rid}/evidence", headers=u, body=as_json({"kind": "order_screenshot", "content_type": "image/png", "size": 100})); show(r)
    r = client.http.post(f"/refunds/{rid}/submit", headers={**bearer("u-1"), "Content-Type": "text/plain"}, body=b""); show(r)
    r = client.http.post(f"/refunds/{rid}/cancel", headers={**bearer("u-1")}, body=b""); show(r)
    r = client.http.get(f"/refunds?limit=abc", headers={**bearer("u-1")}); show(r)
    r = client.http.put("/internal/orders/o-1001", headers=os_h, body=b"{bad"); show(r)
