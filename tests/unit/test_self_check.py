"""The selfCheck trigger's prompt and the reading of the checking lane's reply."""

from __future__ import annotations

import pytest

from router_sidecar.config import SelfCheck
from router_sidecar.self_check import (
    MAX_SHOWN_CHARS,
    answer_text,
    check_body,
    last_user_text,
    read_verdict,
)


def test_the_check_asks_about_the_last_user_message_and_the_answer() -> None:
    body = {"messages": [
        {"role": "system", "content": "You are a support bot."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Refund order 1182?"},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
    ]}
    answer = {"choices": [{"message": {"role": "assistant", "content": "Done, refunded."}}]}
    check = SelfCheck(lane="strong", instructions="name the order number", max_tokens=64)

    sent = check_body(check, last_user_text(body), answer_text(answer))
    system, ask = sent["messages"]
    assert system["role"] == "system" and "Start your reply with PASS or FAIL" in system["content"]
    assert "Refund order 1182?" in ask["content"] and "Done, refunded." in ask["content"]
    assert "You are a support bot" not in ask["content"] and "Hello!" not in ask["content"]
    assert ask["content"].endswith("A good answer must also: name the order number")
    assert (sent["max_tokens"], sent["temperature"]) == (64, 0)


def test_a_long_request_is_cut_short_for_the_check() -> None:
    sent = check_body(SelfCheck("s", "", 64), "x" * (MAX_SHOWN_CHARS * 3), "ok")
    assert len(sent["messages"][1]["content"]) < MAX_SHOWN_CHARS + 200
    assert "[cut short]" in sent["messages"][1]["content"]


def test_an_answer_without_text_has_nothing_to_check() -> None:
    calls = {"choices": [{"message": {"content": None, "tool_calls": [{"id": "c"}]}}]}
    assert answer_text(calls) == ""
    assert answer_text({}) == ""


@pytest.mark.parametrize(
    ("reply", "verdict", "reason"),
    [
        ("PASS", True, ""),
        ("PASS: complete.", True, "complete."),
        ("**FAIL** - misses the refund window", False, "misses the refund window"),
        ("fail\nno evidence given", False, "no evidence given"),
        ("Passing grade", None, "Passing grade"),
        ("It looks fine.", None, "It looks fine."),
    ],
)
def test_the_reply_must_start_with_pass_or_fail(reply: str, verdict: bool | None,
                                                reason: str) -> None:
    assert read_verdict(reply) == (verdict, reason)
