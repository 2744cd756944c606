"""The parts on their own: signatures, backoff, Retry-After, target checks at delivery."""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import time

import pytest
from modelreg_webhooks import delivery, targets
from modelreg_webhooks.config import WebhookSettings

from modelreg.api import Event
from modelreg.testing import make_plugin_manager


def test_the_signature_is_hmac_sha256_over_id_timestamp_and_body():
    body = b'{"id":"e1"}'
    expected = hmac.new(b"s3cret", b"e1.1700000000." + body, hashlib.sha256).hexdigest()
    assert delivery.sign("s3cret", "e1", 1700000000, body) == f"v1={expected}"
    assert delivery.sign("other", "e1", 1700000000, body) != f"v1={expected}"


def test_the_body_is_stable_json():
    event = Event("e1", "alias.set", "churn", {"target": "churn@prod"},
                  dt.datetime(2026, 1, 2, 3, 4, 5))
    body = delivery.event_body(event)
    assert body == delivery.event_body(event)
    assert body == ('{"data":{"target":"churn@prod"},"id":"e1","model":"churn",'
                    '"occurred_at":"2026-01-02T03:04:05.000000Z","type":"alias.set"}')


@pytest.mark.parametrize("patterns, kind, expected", [
    (["*"], "model.created", True), (["version.*"], "version.finalized", True),
    (["version.*"], "model.created", False), (["alias.set", "tag.*"], "alias.set", True),
])
def test_event_filters_are_globs(patterns, kind, expected):
    assert delivery.matches(patterns, kind) is expected


def test_backoff_doubles_with_jitter_and_honours_retry_after():
    config = WebhookSettings(backoff_base=1.0, max_backoff=100.0)
    for failures, base in ((1, 1), (2, 2), (3, 4), (5, 16)):
        for _ in range(20):
            assert base / 2 <= delivery.backoff(config, failures, None) <= base
    assert delivery.backoff(config, 1, 30.0) == 30.0
    assert delivery.backoff(config, 1, 1000.0) == 100.0
    assert delivery.backoff(config, 20, None) == 100.0


def test_retry_after_as_seconds_or_date():
    assert delivery.parse_retry_after("7") == 7.0
    assert delivery.parse_retry_after(None) is None
    assert delivery.parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= delivery.parse_retry_after(later) <= 61


def test_a_private_address_is_refused_again_at_delivery():
    # a subscription written while allowed (or a name that now resolves elsewhere)
    outcome = delivery.send("http://127.0.0.1:9/hook", {}, b"{}",
                            WebhookSettings(allow_private=False))
    assert outcome.status_code is None and outcome.error.startswith("refused:")
    assert not outcome.ok


@pytest.mark.parametrize(("address", "refused"), [
    ("2002:7f00:1::1", True),  # 6to4 of 127.0.0.1
    ("2002:c0a8:101::1", True),  # 6to4 of 192.168.1.1
    ("2002:a9fe:a9fe::", True),  # 6to4 of the cloud metadata address
    ("2002:808:808::1", False),  # 6to4 of a public address
    ("::ffff:127.0.0.1", True),  # IPv4-mapped
    ("::ffff:8.8.8.8", False),
    ("::ffff:0:a00:1", True),  # IPv4-translated (RFC 2765)
    ("::ffff:0:808:808", False),
    ("::127.0.0.1", True),  # IPv4-compatible
    ("::8.8.8.8", True),  # IPv4-compatible, deprecated: refused whatever it carries
    ("64:ff9b::7f00:1", True),  # NAT64 of 127.0.0.1
    ("64:ff9b::808:808", False),  # NAT64 of a public address (DNS64 answers so)
    ("64:ff9b:1::808:808", True),  # local-use NAT64 (RFC 8215)
    ("2001:0:7f00:1::1", True),  # Teredo through a loopback server
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True),  # Teredo
    ("fec0::1", True),  # site-local
    ("feff:ffff::1", True),
    ("2606:4700:4700::1111", False),
])
def test_ipv6_forms_of_private_ipv4_and_site_local_are_refused(address, refused):
    url = f"http://[{address}]:8080/hook"
    if refused:
        with pytest.raises(targets.TargetRefused, match="allow_private"):
            targets.resolve(url, allow_private=False)
    else:
        assert targets.resolve(url, allow_private=False).address == address
    assert targets.resolve(url, allow_private=True).address == address


def test_the_connection_goes_to_the_checked_address():
    target = targets.resolve("http://localhost:8080/a?b=1", allow_private=True)
    assert target.address in ("127.0.0.1", "::1")
    assert (target.host, target.port, target.path) == ("localhost", 8080, "/a?b=1")


def test_wrong_settings_name_the_setting():
    with pytest.raises(ValueError, match=r"modelreg\.webhooks\.timeout"):
        WebhookSettings.from_settings({"modelreg.webhooks.timeout": "soon"})
    with pytest.raises(ValueError, match=r"modelreg\.webhooks\.allow_private"):
        WebhookSettings.from_settings({"modelreg.webhooks.allow_private": "maybe"})


def test_the_hooks_register_against_the_specifications():
    pm = make_plugin_manager(["modelreg_webhooks.plugin"])
    (location,) = pm.hook.modelreg_migration_locations()
    assert location == "modelreg_webhooks:migrations"
