"""plait.clients._errors and the wire parsers: no sockets."""

import json

import aiohttp
import pytest

from plait.clients._errors import (
    body_too_large,
    error_from_exception,
    error_from_status,
    parse_retry_after,
)
from plait.clients._redact import Redactor
from plait.clients.anthropic_wire import anthropic_payload, parse_anthropic_reply
from plait.clients.base import LLMRequest, Usage
from plait.clients.openai_wire import openai_payload, parse_openai_reply
from plait.errors import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)


def test_retry_after_ms_is_preferred_then_seconds_then_http_date():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after({"retry-after": date}, now=1445412480.0) == pytest.approx(10.0)
    assert parse_retry_after({"retry-after": "garbage"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(("status", "cls", "retryable"), [
    (429, RateLimitError, True), (500, ServerError, True), (529, ServerError, True),
    (408, APITimeoutError, True), (400, BadRequestError, False), (401, BadRequestError, False),
    (404, BadRequestError, False),
])
def test_status_mapping(status, cls, retryable):
    body = json.dumps({"error": {"message": "provider says no"}}).encode()
    err = error_from_status(status, {"retry-after": "2"}, body, "fast")
    assert type(err) is cls and err.retryable is retryable
    assert err.status == status and err.alias == "fast" and err.retry_after == 2.0
    assert "provider says no" in str(err)


def test_body_excerpt_is_bounded_and_headers_never_kept():
    err = error_from_status(500, {"authorization": "Bearer sk-secret"}, b"x" * 5000, "fast")
    assert err.body is not None and len(err.body) <= 503
    assert "sk-secret" not in str(err) and "sk-secret" not in (err.body or "")


def test_transport_exception_mapping():
    assert isinstance(error_from_exception(TimeoutError(), "a", 5), APITimeoutError)
    assert isinstance(error_from_exception(aiohttp.ServerDisconnectedError(), "a", 5),
                      APIConnectionError)
    payload = error_from_exception(aiohttp.ClientPayloadError("cut"), "a", 5)
    assert isinstance(payload, ResponseFormatError) and payload.retryable


def test_openai_payload_shapes():
    body = openai_payload("m", LLMRequest("hi", temperature=0.0))
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert "max_tokens" not in body and "response_format" not in body
    body = openai_payload("m", LLMRequest("hi", "sys", max_tokens=5, json_schema={"type": "object"},
                                          schema_name="v"))
    assert body["messages"][0] == {"role": "system", "content": "sys"}
    assert body["max_tokens"] == 5
    assert body["response_format"]["json_schema"] == {"name": "v", "schema": {"type": "object"},
                                                      "strict": False}


def test_anthropic_payload_shapes():
    body = anthropic_payload("m", LLMRequest("hi"))
    assert body["max_tokens"] == 1024 and "system" not in body and "tools" not in body
    body = anthropic_payload("m", LLMRequest("hi", "sys", json_schema={"type": "object"},
                                             schema_name="v"))
    assert body["system"] == "sys"
    assert body["tools"][0]["input_schema"] == {"type": "object"}
    assert body["tool_choice"] == {"type": "tool", "name": "v"}


def test_openai_reply_parsing_and_malformed_replies():
    reply = {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "model": "m"}
    parsed = parse_openai_reply(reply, "a")
    assert (parsed.text, parsed.usage.input_tokens, parsed.finish_reason) == ("x", 3, "stop")
    for bad in ({"choices": []}, {}, {"choices": [{"message": {"content": None}}]}, [1]):
        with pytest.raises(ResponseFormatError):
            parse_openai_reply(bad, "a")


def test_anthropic_reply_parsing():
    reply = {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
             "usage": {"input_tokens": 4, "output_tokens": 2}, "stop_reason": "end_turn"}
    parsed = parse_anthropic_reply(reply, "a")
    assert (parsed.text, parsed.usage.output_tokens) == ("ab", 2)
    tool = {"content": [{"type": "tool_use", "name": "v", "input": {"k": 1}}]}
    assert json.loads(parse_anthropic_reply(tool, "a").text) == {"k": 1}
    with pytest.raises(ResponseFormatError):
        parse_anthropic_reply({"content": []}, "a")


@pytest.mark.parametrize("bad", ["n/a", None, -1, 2.5, True, [3], {"n": 1}, "12"])
def test_malformed_usage_is_unknown_not_an_error(bad):
    openai_reply = {"choices": [{"message": {"content": "ok"}}],
                    "usage": {"prompt_tokens": bad, "completion_tokens": 3}}
    response = parse_openai_reply(openai_reply, "fast")
    assert response.text == "ok" and not response.usage.known
    assert response.usage.input_tokens == 0 and response.usage.output_tokens == 3
    anthropic_reply = {"content": [{"type": "text", "text": "ok"}],
                       "usage": {"input_tokens": 4, "output_tokens": bad}}
    response = parse_anthropic_reply(anthropic_reply, "fast")
    assert response.text == "ok" and not response.usage.known


def test_usage_without_a_usage_object_is_unknown():
    assert not Usage.from_reply(None, "prompt_tokens", "completion_tokens").known
    assert not Usage.from_reply("n/a", "prompt_tokens", "completion_tokens").known
    good = Usage.from_reply({"prompt_tokens": 7, "completion_tokens": 2.0}, "prompt_tokens",
                            "completion_tokens")
    assert good == Usage(7, 2) and good.known


def test_redactor_masks_the_key_and_credential_headers():
    redact = Redactor("sk-this-endpoint-key")
    assert redact.text("bad key sk-this-endpoint-key!") == "bad key ***!"
    assert redact.text('{"Authorization": "Bearer sk-another-key-99"}') == (
        '{"Authorization": "Bearer ***"}')
    assert redact.text("x-api-key: abc123secret\r\nother: 1") == "x-api-key: ***\r\nother: 1"
    assert redact.text("{'authorization': 'Bearer tok_123456'}") == (
        "{'authorization': 'Bearer ***'}")
    assert redact.text("nothing secret, bearer of news") == "nothing secret, bearer of news"
    assert Redactor("k").text("k is too short to be a key") == "k is too short to be a key"


def test_redacted_error_keeps_type_and_fields_and_drops_its_chain():
    err = error_from_status(429, {"retry-after": "2"},
                            b'{"error": {"message": "key sk-this-endpoint-key is limited"}}',
                            "fast")
    err.__cause__ = ValueError("sk-this-endpoint-key")
    masked = Redactor("sk-this-endpoint-key").error(err)
    assert type(masked) is RateLimitError and masked.retryable and masked.retry_after == 2.0
    assert masked.status == 429 and masked.alias == "fast"
    assert "sk-this-endpoint-key" not in str(masked) + (masked.body or "")
    assert masked.__cause__ is None
    clean = error_from_status(500, None, b"plain failure", "fast")
    assert Redactor("sk-this-endpoint-key").error(clean) is clean


def test_body_too_large_is_a_retryable_format_error():
    err = body_too_large(1024, "fast", 200, declared=5000)
    assert isinstance(err, ResponseFormatError) and err.retryable
    assert "declares 5000 bytes" in str(err) and "max_response_bytes=1024" in str(err)
