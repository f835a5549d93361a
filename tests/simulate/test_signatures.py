"""A simulated provider computes a signature again, with its own account, over the request that
came: Shopee's, checked against an HMAC computed here by hand from its guide's recipe."""

from __future__ import annotations

import hashlib
import hmac

import yaml
from aiohttp.test_utils import make_mocked_request

from gateway.definition import ProviderDefinition
from gateway.providers import builtin_files
from gateway.simulate.signatures import Account, verifier

KEY = "partner-key-not-real"
PATH = "/shopee/api/v2/order/cancel_order"
TOKEN = "access-token-not-real"


def shopee() -> ProviderDefinition:
    [file] = [f for f in builtin_files() if f.name == "shopee.yaml"]
    return ProviderDefinition.model_validate(yaml.safe_load(file.read_text("utf-8")))


def by_hand(key: str, timestamp: str, token: str) -> str:
    """Partner id, path, timestamp, access token, shop id; HMAC-SHA256, lowercase hex."""
    base = f"1{PATH}{timestamp}{token}2"
    return hmac.new(key.encode(), base.encode(), hashlib.sha256).hexdigest()


def check(sign: str, token: str = TOKEN, timestamp: str = "1655714431") -> bool:
    definition = shopee()
    cancel = definition.resources["order"]
    verify = verifier(
        definition.signature,
        Account({"partner_key": KEY}, {"partner_id": 1, "shop_id": 2}),
        cancel.query,
        cancel.headers,
    )
    assert verify is not None
    query = f"partner_id=1&timestamp={timestamp}&shop_id=2&access_token={token}&sign={sign}"
    request = make_mocked_request("POST", f"{PATH}?{query}", headers={"Host": "127.0.0.1"})
    return verify(request, b"{}", token)


def test_the_signature_the_account_would_make_passes() -> None:
    assert check(by_hand(KEY, "1655714431", TOKEN))


def test_a_signature_made_otherwise_is_refused() -> None:
    assert not check(by_hand("another-key", "1655714431", TOKEN))  # another partner key
    assert not check(by_hand(KEY, "1655714432", TOKEN))  # over another timestamp
    assert not check(by_hand(KEY, "1655714431", TOKEN), token="another-token")
    assert not check("")  # none at all


def test_nothing_is_checked_without_an_account_or_a_signature() -> None:
    definition = shopee()
    cancel = definition.resources["order"]
    assert verifier(definition.signature, None, cancel.query, cancel.headers) is None
    assert verifier(None, Account(), cancel.query, cancel.headers) is None
