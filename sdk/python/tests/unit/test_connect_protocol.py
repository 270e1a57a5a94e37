"""The Connect client on its own: envelopes, unary replies, streams, and the one translation of
errors (Connect codes, Fast Sandbox's error headers, plain HTTP statuses, transport failures)."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterator, List, Type, Union

import httpx
import pytest

from fast_sandbox import (
    AlreadyExistsError,
    ConflictError,
    FailedPreconditionError,
    FsbError,
    NoCapacityError,
    NotFoundError,
    TimeoutError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from fast_sandbox._connect import AsyncConnectClient, ConnectClient, EnvelopeReader, encode_envelope
from fast_sandbox.errors import error_from_connect, error_from_http, is_sandbox_gone

from fake_fast_sandbox import envelope


def client_answering(handler: Union[httpx.MockTransport, Callable[[httpx.Request], httpx.Response]]) -> ConnectClient:
    transport = handler if isinstance(handler, httpx.MockTransport) else httpx.MockTransport(handler)
    return ConnectClient(httpx.Client(transport=transport), "http://server.test/", server="the test server")


def test_envelopes_are_cut_out_of_a_byte_stream_however_it_is_split() -> None:
    stream = encode_envelope({"a": 1}) + encode_envelope({"b": "x" * 300}) + encode_envelope({}, flags=2)
    for size in (1, 2, 5, 7, 64, len(stream)):
        reader = EnvelopeReader()
        found = []
        for start in range(0, len(stream), size):
            found.extend(reader.feed(stream[start : start + size]))
        assert [(flags, json.loads(data)) for flags, data in found] == [(0, {"a": 1}), (0, {"b": "x" * 300}), (2, {})]
        assert reader.pending == 0


def test_a_unary_call_posts_json_with_the_connect_headers_and_returns_reply_and_headers() -> None:
    seen: List[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True, "count": "12"}, headers={"fsb-access-token": "t"})

    reply, headers = client_answering(handler).unary("pkg.Service/Method", {"name": "x"}, request_timeout=2.5, headers={"X-Extra": "1"})
    assert reply == {"ok": True, "count": "12"}
    assert headers["fsb-access-token"] == "t"
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == "http://server.test/pkg.Service/Method"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["connect-protocol-version"] == "1"
    assert request.headers["connect-timeout-ms"] == "2500"
    assert request.headers["x-extra"] == "1"
    assert json.loads(request.content) == {"name": "x"}


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected", "code"),
    [
        (404, {"code": "not_found", "message": "sandbox default/x not found"}, {}, NotFoundError, "not_found"),
        (409, {"code": "already_exists", "message": "exists"}, {}, AlreadyExistsError, "already_exists"),
        # Aborted without Fast Sandbox's code is the transport's (a connection reset mid-call), as in TypeScript.
        (409, {"code": "aborted", "message": "stream reset"}, {}, UnavailableError, "unavailable"),
        (429, {"code": "resource_exhausted", "message": "full"}, {}, NoCapacityError, "no_capacity"),
        (401, {"code": "unauthenticated", "message": "token"}, {}, UnauthenticatedError, "unauthenticated"),
        (504, {"code": "deadline_exceeded", "message": "slow"}, {}, TimeoutError, "deadline_exceeded"),
        (503, {"code": "unavailable", "message": "down"}, {}, UnavailableError, "unavailable"),
        # Given up on by the other end: cut short, not a deadline of the caller's (nor "internal").
        (499, {"code": "canceled", "message": "context canceled"}, {}, UnavailableError, "unavailable"),
        (500, {"code": "internal", "message": "boom"}, {}, FsbError, "internal"),
        (500, {"code": "unknown", "message": "?"}, {}, FsbError, "internal"),
        # Fast Sandbox's own code wins over Connect's (no_capacity travels as resource_exhausted too).
        (409, {"code": "aborted", "message": "x"}, {"fsb-error-code": "conflict"}, ConflictError, "conflict"),
        (400, {"code": "failed_precondition", "message": "x"}, {"fsb-error-code": "no_capacity"}, NoCapacityError, "no_capacity"),
    ],
)
def test_connect_errors_become_the_sdk_error_of_their_code(
    status: int, body: Dict[str, str], headers: Dict[str, str], expected: Type[FsbError], code: str
) -> None:
    client = client_answering(lambda request: httpx.Response(status, json=body, headers=headers))
    with pytest.raises(FsbError) as raised:
        client.unary("pkg.Service/Method", {}, request_timeout=1)
    assert type(raised.value) is expected
    assert raised.value.code == code
    assert raised.value.message == body["message"] or raised.value.message == f"the connection was lost: {body['message']}"


def test_a_validation_error_names_its_field_once() -> None:
    response = httpx.Response(
        400,
        json={"code": "invalid_argument", "message": "spec.exposedPorts[0]: 0 is out of range"},
        headers={"fsb-error-code": "invalid_argument", "fsb-error-field": "spec.exposedPorts%5B0%5D"},
    )
    with pytest.raises(ValidationError) as raised:
        client_answering(lambda request: response).unary("pkg.Service/Method", {}, request_timeout=1)
    assert raised.value.field == "spec.exposedPorts[0]"
    assert str(raised.value) == "spec.exposedPorts[0]: 0 is out of range"


def test_the_timeout_error_is_also_the_builtin_one() -> None:
    assert issubclass(TimeoutError, FsbError)
    import builtins

    assert issubclass(TimeoutError, builtins.TimeoutError)


@pytest.mark.parametrize(
    ("status", "body", "expected", "fragment"),
    [
        (502, {"sandboxId": "abc", "message": "The sandbox was not found", "code": 502}, NotFoundError, "gone"),
        (502, {"message": "port 49983 is not open", "code": 502}, UnavailableError, "not open"),
        (503, {"message": "The sandbox is not running", "code": 503}, UnavailableError, "not running"),
        (401, {"message": "missing or wrong access token", "code": 401}, UnauthenticatedError, "access token"),
        (404, {"message": "open /x: no such file", "code": 404}, NotFoundError, "/x"),
        (400, {"message": "/tmp is a directory", "code": 400}, ValidationError, "directory"),
        (507, {"message": "no space left", "code": 507}, NoCapacityError, "space"),
        (409, {"sandboxId": "abc", "message": "The sandbox is paused", "code": 409}, FailedPreconditionError, "resume it first"),
    ],
)
def test_plain_http_answers_of_the_proxy_and_the_daemon_map_by_status(
    status: int, body: Dict[str, Any], expected: type, fragment: str
) -> None:
    error = error_from_http(httpx.Response(status, json=body), "reading /x")
    assert type(error) is expected
    assert fragment in str(error)
    assert str(error).startswith("reading /x")


def test_a_paused_sandbox_ends_a_stream_with_the_proxys_code_and_says_to_resume_it() -> None:
    # The sandbox proxy's end message for a Connect stream to a paused sandbox.
    paused = error_from_connect(
        {"code": "failed_precondition", "message": "The sandbox is paused"}, {"fsb-error-code": ["failed_precondition"]}
    )
    assert type(paused) is FailedPreconditionError
    assert "resume it first" in str(paused)
    # The daemon's own failed_precondition (no proxy code) keeps its words.
    own = error_from_connect({"code": "failed_precondition", "message": "The sandbox is paused"})
    assert "resume it first" not in str(own)


def test_a_body_that_is_not_json_still_gives_a_useful_message() -> None:
    error = error_from_http(httpx.Response(502, text="<html>Bad Gateway</html>"), "GetSandbox")
    assert isinstance(error, UnavailableError)
    assert "Bad Gateway" in str(error)


def stream_answer(chunks: List[bytes], content_type: str = "application/connect+json") -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/connect+json"
        assert json.loads(request.content[5:]) == {"name": "x"}
        return httpx.Response(200, headers={"content-type": content_type}, content=iter(chunks))

    return httpx.MockTransport(handler)


def test_a_server_stream_yields_each_message_and_stops_at_the_end_envelope() -> None:
    body = envelope({"n": 1}) + envelope({"n": 2}) + envelope({}, 2)
    chunks = [body[i : i + 3] for i in range(0, len(body), 3)]
    stream = client_answering(stream_answer(chunks)).stream("pkg.Service/Watch", {"name": "x"}, request_timeout=1, timeout=30)
    assert list(stream) == [{"n": 1}, {"n": 2}]


def test_an_error_in_the_end_envelope_is_raised_after_the_messages_before_it() -> None:
    body = envelope({"n": 1}) + envelope(
        {"error": {"code": "not_found", "message": "gone"}, "metadata": {"fsb-error-code": ["not_found"]}}, 2
    )
    received = []
    with pytest.raises(NotFoundError, match="gone"):
        for message in client_answering(stream_answer([body])).stream("pkg.Service/Watch", {"name": "x"}, request_timeout=1):
            received.append(message)
    assert received == [{"n": 1}]


def test_a_stream_cut_before_its_end_envelope_is_unavailable() -> None:
    stream = client_answering(stream_answer([envelope({"n": 1})])).stream("pkg.Service/Watch", {"name": "x"}, request_timeout=1)
    with pytest.raises(UnavailableError, match="before its end"):
        list(stream)


def test_a_stream_answered_with_an_http_error_raises_when_opened() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(401, json={"code": 401, "message": "missing or wrong access token"}))
    with pytest.raises(UnauthenticatedError, match="access token"):
        client_answering(transport).stream("pkg.Service/Watch", {"name": "x"}, request_timeout=1)


def test_a_stream_of_another_content_type_is_refused() -> None:
    with pytest.raises(FsbError, match="expected a application/connect\\+json stream"):
        client_answering(stream_answer([b"{}"], content_type="application/json")).stream(
            "pkg.Service/Watch", {"name": "x"}, request_timeout=1
        )


def test_a_compressed_envelope_is_refused() -> None:
    stream = client_answering(stream_answer([envelope({"n": 1}, 1)])).stream("pkg.Service/Watch", {"name": "x"}, request_timeout=1)
    with pytest.raises(FsbError, match="compressed"):
        list(stream)


def test_no_answer_at_all_is_unavailable_and_names_the_server() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(UnavailableError) as raised:
        client_answering(refuse).unary("pkg.Service/Method", {}, request_timeout=1)
    assert "the test server at http://server.test" in str(raised.value)
    assert "Connection refused" in str(raised.value)


def test_a_proxys_gateway_timeout_is_unavailable_not_a_timeout_of_the_caller() -> None:
    answer = httpx.Response(504, text="upstream timed out")
    with pytest.raises(UnavailableError, match="HTTP 504"):
        client_answering(lambda request: answer).unary("pkg.Service/Method", {}, request_timeout=1)


def test_a_read_timeout_is_a_timeout_error_that_says_what_to_change() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(TimeoutError, match="request_timeout"):
        client_answering(slow).unary("pkg.Service/Method", {}, request_timeout=1)


def test_a_stream_failing_midway_is_translated_too() -> None:
    def chunks() -> Iterator[bytes]:
        yield envelope({"n": 1})
        raise httpx.ReadError("connection reset")

    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "application/connect+json"}, content=chunks())
    )
    stream = client_answering(transport).stream("pkg.Service/Watch", {"name": "x"}, request_timeout=1)
    received = []
    with pytest.raises(UnavailableError, match="connection reset"):
        for message in stream:
            received.append(message)
    assert received == [{"n": 1}]


@pytest.mark.anyio
async def test_the_async_client_speaks_the_same_protocol() -> None:
    body = envelope({"n": 1}) + envelope({"error": {"code": "deadline_exceeded", "message": "too slow"}}, 2)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Unary"):
            return httpx.Response(404, json={"code": "not_found", "message": "no such thing"})
        return httpx.Response(200, headers={"content-type": "application/connect+json"}, content=body)

    client = AsyncConnectClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)), "http://server.test")
    with pytest.raises(NotFoundError, match="no such thing"):
        await client.unary("pkg.Service/Unary", {}, request_timeout=1)
    stream = await client.stream("pkg.Service/Stream", {}, request_timeout=1)
    received = []
    with pytest.raises(TimeoutError, match="too slow"):
        async for message in stream:
            received.append(message)
    assert received == [{"n": 1}]


def test_the_proxys_not_found_code_header_means_gone_whatever_the_body_says() -> None:
    answer = httpx.Response(502, json={"message": "sandbox gone", "code": 502}, headers={"fsb-error-code": "not_found"})
    error = error_from_http(answer, "listing /")
    assert isinstance(error, NotFoundError)
    assert "gone (deleted or expired)" in str(error)
    assert is_sandbox_gone(error)


def test_only_the_proxys_answer_says_the_sandbox_is_gone_not_the_daemons_own_not_found() -> None:
    older_proxy = httpx.Response(502, json={"sandboxId": "abc", "message": "The sandbox was not found", "code": 502})
    assert is_sandbox_gone(error_from_http(older_proxy, "killing process 7"))
    daemon = httpx.Response(404, json={"code": "not_found", "message": "process 7 not found"})
    assert not is_sandbox_gone(error_from_http(daemon, "killing process 7"))
    assert not is_sandbox_gone(error_from_http(httpx.Response(404, json={"message": "open /x: no such file", "code": 404}), "reading /x"))


def test_a_deadline_too_long_for_connect_timeout_ms_is_sent_as_the_longest_it_takes() -> None:
    seen: List[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = client_answering(answer)
    for seconds in (9_999_999, 10_000_000, 10**9):
        client.unary("pkg.Service/Method", {}, request_timeout=seconds)
    # Servers refuse more than 10 digits (connect-go: "has >10 digits"; connect-node: invalid_argument).
    assert [request.headers["connect-timeout-ms"] for request in seen] == ["9999999000", "9999999999", "9999999999"]


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:7070", True),
        ("http://127.1.2.3:7070", True),
        ("http://localhost:7070", True),
        ("http://LOCALHOST", True),
        ("http://[::1]:7072", True),
        ("https://fsb.example.com", False),
        ("http://10.0.0.5:7070", False),
        ("http://localhost.example.com", False),
    ],
)
def test_loopback_urls_are_told_apart(url: str, loopback: bool) -> None:
    from fast_sandbox._connect import is_loopback

    assert is_loopback(url) is loopback
