"""Redaction removes keys, and only keys: ordinary provider error texts come through it unchanged.

The counterpart of tests/test_provider_secrets.py (every echo shape of a key is removed): with realistic keys in
the environment, and with the local placeholder keys people put in OPENAI_COMPATIBLE_API_KEY, the words around
Bearer / x-api-key, the harness's own '(check ...)' hint, 'localhost' and normal provider errors stay intact.
"""

from __future__ import annotations

import pytest

from harness.providers.base import CallError
from harness.providers.wire import status_error
from harness.secrets import LONG_KEY, redact, redact_env

OPENAI_KEY = "sk-proj-Q7vX2mLp9RtWz4NcK8bYh3JdF6gSa1EuT5oVi0MxPnCl"
ANTHROPIC_KEY = "sk-ant-api03-Hk4Wq9Zr2Lm7Xv1Nb6Ty3Pc8Gf5Js0Ud-AbCdEfGhIjKlMnOpQrStUvWx-Yz12AA"
PLACEHOLDERS = [None, "local", "token", "dummy", "test", "secret"]

MESSAGES = [
    "HTTP 401 from anthropic: invalid x-api-key (check ANTHROPIC_API_KEY)",
    "HTTP 401 from openai: Missing bearer or basic authentication in header (check OPENAI_API_KEY)",
    "HTTP 401 from anthropic: x-api-key header is required (check ANTHROPIC_API_KEY)",
    "openai-compatible: connection error (Connection refused: http://localhost:8000/v1/chat/completions)",
    "HTTP 404 from openai: The model `gpt-4o-2024-08-06` does not exist or you do not have access to it.",
    "model not found: gpt-4o-2024-08-06",
    "HTTP 429 from openai: Rate limit reached for requests",
    "HTTP 400 from openai: context_length_exceeded: 8192 tokens",
    "HTTP 404 from openai: Invalid URL (POST /v1/chat/completions)",
    "HTTP 502 from openai: <html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx/1.25.3</center></body></html>",
    "HTTP 529 from anthropic: Overloaded",
    "HTTP 400 from anthropic: messages.0.content.1.image.source.base64: image exceeds 5 MB maximum",
    "Authorization header is missing; expected 'Authorization: Bearer YOUR_API_KEY'",
    "x-api-key: header missing",
]


@pytest.fixture(autouse=True)
def _keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.delenv("OPENAI_COMPATIBLE_API_KEY", raising=False)


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
@pytest.mark.parametrize("message", MESSAGES)
def test_ordinary_provider_errors_come_through_unchanged(message, placeholder, monkeypatch):
    if placeholder:
        monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", placeholder)
    assert redact(message) == message
    assert redact(message, placeholder, OPENAI_KEY) == message
    assert str(CallError("fatal", message)) == message
    assert redact_env(message) == message


@pytest.mark.parametrize("placeholder", PLACEHOLDERS)
def test_the_check_hint_of_a_401_survives(placeholder, monkeypatch):
    if placeholder:
        monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", placeholder)
    body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    error = status_error("anthropic", 401, body, None, ANTHROPIC_KEY, "ANTHROPIC_API_KEY")
    assert str(error) == "HTTP 401 from anthropic: invalid x-api-key (check ANTHROPIC_API_KEY)"
    body = {"error": {"message": "Missing bearer or basic authentication in header", "type": "invalid_request_error"}}
    error = status_error("openai", 401, body, None, OPENAI_KEY, "OPENAI_API_KEY")
    assert str(error) == "HTTP 401 from openai: Missing bearer or basic authentication in header (check OPENAI_API_KEY)"


@pytest.mark.parametrize("placeholder", ["local", "token", "dummy", "test", "secret", "tok42xy"])
def test_a_placeholder_key_goes_only_where_it_stands_alone(placeholder, monkeypatch):
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", placeholder)
    # inside longer words, host names and identifiers it stays
    for text in (f"http://{placeholder}host:8000/v1", f"my-{placeholder}-server", f"{placeholder}s and x{placeholder}",
                 f"http://{placeholder}.example.org/v1", f"{placeholder}_count"):
        assert redact(text) == text and redact_env(text) == text
    # as a whole token (after Bearer, in a header echo, between punctuation) it goes
    assert redact(f"Bearer {placeholder}") == "Bearer ***"
    assert redact(f'{{"x-api-key": "{placeholder}"}}') == '{"x-api-key": "***"}'
    assert redact(f"key ({placeholder}) refused.") == "key (***) refused."
    assert redact(f"api_key={placeholder}&x=1") == "api_key=***&x=1"
    assert redact_env(f"http://127.0.0.1:1/v1?key={placeholder}") == "http://127.0.0.1:1/v1?key=***"


def test_localhost_survives_the_key_local():
    for key in ("local", "localhost", "local-key"):
        text = "connection refused: http://localhost:8000/v1 (is the local server up?)"
        assert redact(text, key).count("localhost") == (0 if key == "localhost" else 1)
    assert redact("localhost:8000 local", "local") == "localhost:8000 ***"


@pytest.mark.parametrize("label", ["Bearer ", "bearer: ", "x-api-key: ", "X-Api-Key ", '"x-api-key": "', "api_key=",
                                   "Authorization: "])
def test_a_value_after_a_label_goes_only_when_it_looks_like_a_credential(label):
    credentials = ("abcd1234efgh", "prox-Ab3xYz9k", "Zq7****vT5r", "Zq7W...vT5r", "Zq7W\u2026vT5r",
                   "aGVsbG8.d29ybGQ.c2ln")
    for value in credentials:
        assert redact(f"invalid {label}{value} here") == f"invalid {label}*** here", value
    for value in ("header", "or", "(check", "required", "authentication", "abc123", "missing_or_invalid_value"):
        assert redact(f"invalid {label}{value} here") == f"invalid {label}{value} here", value


def test_leading_punctuation_is_never_swallowed():
    assert redact("invalid x-api-key (check ANTHROPIC_API_KEY)") == "invalid x-api-key (check ANTHROPIC_API_KEY)"
    assert redact("upstream: Bearer (abcd1234efgh)") == "upstream: Bearer (abcd1234efgh)"
    assert redact("upstream: Bearer abcd1234efgh)") == "upstream: Bearer ***)"


def test_key_shaped_tokens_and_long_keys_still_go_whatever_the_label():
    assert redact("got sk-abcdEFGH1234 and sk-ant-xyz9****k2Lm") == "got *** and ***"
    assert OPENAI_KEY[:12] not in redact(f"prefix {OPENAI_KEY[:12]} / {OPENAI_KEY[:9]}... / {ANTHROPIC_KEY}")
    other = "proxy-token-ABCDEFGH"  # LONG_KEY characters or more: fragments go too
    assert len(other) >= LONG_KEY
    assert redact(f"prefix {other[:9]}... suffix {other[-6:]}", other) == "prefix ***... suffix ***"
    short = "abcdefghij12345"  # shorter: only whole, or masked at a token's edge
    assert len(short) < LONG_KEY
    text = f"{short} / {short[:9]}*** / {short[:9]} / {short}x"
    assert redact(text, short) == f"*** / ****** / {short[:9]} / {short}x"


def test_an_html_error_page_is_reduced_to_its_words():
    """A server without batch endpoints answered 501 with Python's HTML error page, put whole in the error line."""
    page = ('<!DOCTYPE HTML>\n<html lang="en">\n<head><meta charset="utf-8"><title>Error response</title>'
            '<style type="text/css">body {color: red}</style></head>\n<body><h1>Error response</h1>\n'
            "<p>Error code: 501</p>\n<p>Message: Unsupported method (&#x27;POST&#x27;).</p>\n</body>\n</html>\n")
    error = status_error("openai", 501, page, None, OPENAI_KEY, "OPENAI_API_KEY")
    assert str(error) == ("HTTP 501 from openai: Error response Error response Error code: 501 Message: Unsupported "
                          "method ('POST').")


def test_a_reply_loses_key_fragments_but_keeps_its_words(monkeypatch):
    """A reply echoing the first 20 and last 12 characters of the key was recorded and cached as is (only a whole
    key was masked in replies); ordinary answers must come through unchanged."""
    from harness.secrets import redact_reply

    key = "sk-FAKEKEY-compat-1234567890abcdef"
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", key)
    echoed = redact_reply(f"frag {key[:20]} and tail {key[-12:]}; masked {key[:9]}****{key[-8:]}")
    assert echoed == "frag *** and tail ***; masked " + "*" * 10, echoed
    for answer in ("yes", "left lower lobe", "There is a 3 cm mass in the right kidney.", "sk", "abcdef",
                   "No acute cardiopulmonary abnormality. Risk-benefit discussed; task-specific findings."):
        assert redact_reply(answer) == answer
    monkeypatch.setenv("OPENAI_COMPATIBLE_API_KEY", "sk-no-key-required")  # llama.cpp's documented placeholder
    assert redact_reply("a follow-up CT is required") == "a follow-up CT is required"  # was "... is ***"
