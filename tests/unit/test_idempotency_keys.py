"""Idempotency keys: derivation, scopes, the options a message may carry, and what policies carry."""

from __future__ import annotations

import pytest

from config.policies import POLICIES
from service import intake
from service.actors import policy_options
from service.idempotency import message_key, scope_problem


def test_the_same_call_has_the_same_key_whatever_the_keyword_order() -> None:
    one = message_key("charge", [1], {"amount": 5, "currency": "EUR"}, {}, "global")
    two = message_key("charge", (1,), {"currency": "EUR", "amount": 5}, {}, None)
    assert one == two and len(one) == 64
    assert message_key("charge", [2], {"amount": 5, "currency": "EUR"}, {}, "global") != one
    assert message_key("refund", [1], {"amount": 5, "currency": "EUR"}, {}, "global") != one


def test_a_given_key_replaces_the_arguments_and_stays_per_actor() -> None:
    given = {"idempotency_key": "order-42"}
    assert message_key("charge", [1], {}, given, None) == message_key("charge", [2], {}, given, None)
    assert message_key("charge", [1], {}, given, None) != message_key("refund", [1], {}, given, None)
    # A key equal to the digest of some arguments never collides with them
    derived = message_key("charge", [1], {}, {}, None)
    assert message_key("charge", [1], {}, {"idempotency_key": derived}, None) != derived


def test_user_and_tenant_scopes_namespace_the_key_and_need_their_option() -> None:
    user_1 = message_key("charge", [1], {}, {"user_id": 1}, "user")
    assert user_1 != message_key("charge", [1], {}, {"user_id": 2}, "user")
    assert user_1 != message_key("charge", [1], {}, {"tenant_id": 1}, "tenant")
    assert user_1 != message_key("charge", [1], {}, {}, "global")
    assert (
        scope_problem("tenant", {"user_id": 1})
        == "idempotency scope 'tenant' needs the message option 'tenant_id'"
    )
    assert scope_problem("global", {}) is None and scope_problem(None, {}) is None
    with pytest.raises(ValueError, match="'user_id'"):
        message_key("charge", [1], {}, {}, "user")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"idempotency_key": ""}, "option 'idempotency_key' must be a string of 1 to 1024 characters"),
        ({"idempotency_key": 42}, "option 'idempotency_key' must be a string of 1 to 1024 characters"),
        ({"idempotency_scope": "team"}, "option 'idempotency_scope' must be 'global', 'user' or 'tenant'"),
        ({"idempotency_store": "disk"}, "option 'idempotency_store' must be 'redis' or 'database'"),
        ({"idempotency_ttl": 0}, "option 'idempotency_ttl' must be a number of milliseconds above 0"),
        ({"user_id": True}, "option 'user_id' must be a whole number or a string of 1 to 200 characters"),
        (
            {"tenant_id": ["a"]},
            "option 'tenant_id' must be a whole number or a string of 1 to 200 characters",
        ),
        ({"store_results": "yes"}, "option 'store_results' must be true or false"),
        ({"idempotency_key": "k", "user_id": 7, "tenant_id": "acme", "idempotency_ttl": 1000}, None),
    ],
)
def test_idempotency_and_result_options_are_checked(options: dict[str, object], problem: str | None) -> None:
    found = intake.option_problem(options)
    assert found == problem if problem is None else (found or "").startswith(problem + ", not ")


def test_policies_carry_idempotency_and_result_fields_in_milliseconds() -> None:
    options = policy_options(POLICIES["default"].override(idempotency_scope="user", result_ttl=60.0))
    assert options["idempotency_scope"] == "user"
    assert options["idempotency_ttl"] == 86_400_000
    assert options["idempotency_store"] == "redis"
    assert options["result_ttl"] == 60_000
    assert "idempotency_scope" not in policy_options(POLICIES["default"])
