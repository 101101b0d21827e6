"""What API models send of an image: downscaled to the long side the provider keeps, grayscale as grayscale."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from fake_llm_servers import FakeLLMServer

from harness.errors import UserError
from harness.model_api import ModelContext
from harness.types import GenerationRequest, GenerationSettings

SECRET = "sk-test-images-2f9c"


def sent_images(body: dict[str, Any]) -> list[Any]:
    """The images of a chat request in either wire format, decoded."""
    from PIL import Image

    out = []
    for block in body["messages"][0]["content"]:
        if block["type"] == "image_url":
            out.append(base64.b64decode(block["image_url"]["url"].partition(",")[2]))
        elif block["type"] == "image":
            out.append(base64.b64decode(block["source"]["data"]))
    return [Image.open(io.BytesIO(data)) for data in out]


def test_images_larger_than_the_provider_scales_to_are_downscaled_before_sending(monkeypatch, tmp_path):
    """A 4000 x 3000 X-ray went to Claude as a multi-megabyte PNG (over Anthropic's 5 MB per image) although the
    API keeps a 1568-pixel long side at most; a server of your own gets the image as it is."""
    from PIL import Image

    from harness.plugins.api_vlm import ClaudeModel, OpenAICompatibleModel

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    big = Image.radial_gradient("L").resize((4000, 3000)).convert("RGB")
    request = GenerationRequest(id="a", images=[big], prompt="Findings?", messages=[],
                                generation=GenerationSettings(max_new_tokens=8), task_kind="report")
    sizes = {}
    with FakeLLMServer(reply=lambda body: "ok") as server:
        for name, cls, args in [("claude", ClaudeModel, {"base_url": server.anthropic_base_url}),
                                ("claude-800", ClaudeModel, {"base_url": server.anthropic_base_url,
                                                             "max_image_side": "800"}),
                                ("local", OpenAICompatibleModel, {"base_url": server.openai_base_url, "model": "m"})]:
            model = cls(args, ModelContext())
            assert model.generate([request])[0].text == "ok"
            model.close()
            sizes[name] = sent_images(server.requests[-1])[0].size
        assert "max_image_side" not in OpenAICompatibleModel.run_identity({"base_url": server.openai_base_url,
                                                                            "model": "m"}, ModelContext())
    assert sizes == {"claude": (1568, 1176), "claude-800": (800, 600), "local": (4000, 3000)}
    assert ClaudeModel.run_identity({}, ModelContext())["max_image_side"] == 1568
    with pytest.raises(UserError, match="max_image_side='-1': expected an integer from 0 to 65535"):
        ClaudeModel({"max_image_side": "-1"}, ModelContext())


def test_a_large_grayscale_image_stored_as_rgb_is_sent_as_the_same_pixels_in_grayscale():
    """Downscaled, or above GRAY_ABOVE_PIXELS: grayscale (a third of the bytes, below Anthropic's 5 MB per image).
    A small image keeps the bytes earlier versions sent (their cached replies still serve)."""
    from PIL import Image

    from harness.plugins.api_vlm import GRAY_ABOVE_PIXELS, png_bytes

    small = Image.effect_noise((300, 200), 64).convert("RGB")  # a radiograph-like texture: it does not compress
    assert png_bytes(small) == _rgb_png(small)
    gray = Image.effect_noise((1400, 1100), 64)
    big = gray.convert("RGB")
    assert big.width * big.height > GRAY_ABOVE_PIXELS and len(png_bytes(big)) < len(_rgb_png(big)) / 2
    sent = Image.open(io.BytesIO(png_bytes(big)))
    assert sent.mode == "L" and sent.tobytes() == gray.tobytes()
    assert Image.open(io.BytesIO(png_bytes(big, max_side=700))).mode == "L"
    colour = big.copy()
    colour.putpixel((5, 5), (255, 0, 0))  # one coloured pixel: kept in colour, lossless
    back = Image.open(io.BytesIO(png_bytes(colour)))
    assert back.mode == "RGB" and back.tobytes() == colour.tobytes()


def _rgb_png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
