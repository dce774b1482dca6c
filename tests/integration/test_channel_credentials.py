"""Deployed stages read the channels' keys from Secrets Manager, once, on a channel's first use:
never from the repository or the function's environment, and never at every cold start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.adapters.clock import SystemClock
from chalicelib.bootstrap import _channel_credentials, build_channel_gateways
from chalicelib.domain.model import PaymentChannel
from chalicelib.settings import Settings
from tests.fakes import FakeRefundRepository

SECRET = "refunds/prod/channels"


def _pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public(private_pem: str) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _keys() -> dict[str, Any]:
    app, alipay, merchant, platform = _pem(), _pem(), _pem(), _pem()
    return {
        "alipay": {
            "app_id": "2021000000000001",
            "app_private_key": app,
            "alipay_public_key": _public(alipay),
        },
        "wechat": {
            "mchid": "1900000001",
            "merchant_serial_no": "5157F09EFDC096DE15EBE81A47057A72",
            "merchant_private_key": merchant,
            "platform_serial_no": "PUB_KEY_ID_0000000001",
            "platform_public_key": _public(platform),
            "apiv3_key": "0123456789abcdef0123456789abcdef",
        },
    }


@pytest.fixture
def secrets() -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    with mock_aws():
        _channel_credentials.cache_clear()
        yield boto3.client("secretsmanager", region_name="us-east-1")
        _channel_credentials.cache_clear()


def _prod() -> Settings:
    return Settings.from_environ(
        {"REFUNDS_STAGE": "prod", "REFUNDS_CHANNEL_CREDENTIALS_SECRET": SECRET}
    )


def test_channels_are_built_from_the_secret_on_first_use(secrets: Any) -> None:
    # GIVEN the gateways of a deployed stage, built before the secret even exists
    gateways = build_channel_gateways(_prod(), SystemClock(), FakeRefundRepository())
    # WHEN the secret holds the keys and a channel is first used
    secrets.create_secret(Name=SECRET, SecretString=json.dumps(_keys()))
    alipay = gateways[PaymentChannel.ALIPAY]._get()  # type: ignore[attr-defined]
    wechat = gateways[PaymentChannel.WECHAT]._get()  # type: ignore[attr-defined]
    # THEN they are the real channels' adapters, and the secret was read once
    assert type(alipay).__name__ == "AlipayGateway"
    assert type(wechat).__name__ == "WeChatPayGateway"
    assert _channel_credentials.cache_info().misses == 1


def test_a_secret_missing_keys_names_them(secrets: Any) -> None:
    keys = _keys()
    del keys["wechat"]["apiv3_key"]
    secrets.create_secret(Name=SECRET, SecretString=json.dumps(keys))
    gateways = build_channel_gateways(_prod(), SystemClock(), FakeRefundRepository())
    with pytest.raises(RuntimeError, match=r"wechat\.apiv3_key"):
        gateways[PaymentChannel.ALIPAY]._get()  # type: ignore[attr-defined]
