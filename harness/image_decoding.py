"""Decoding one stored image into the 8-bit RGB picture every model, API payload and classifier receives.

Medical images are not all 8-bit RGB photographs, and `Image.open(...).convert("RGB")` alone gets several of them
silently wrong. The rules, applied in this order (IMAGE_DECODING names them; it enters each run's identity):

1. A file with several frames (a TIFF stack, an animation) is refused: which frame is the picture is not known.
   MPO files (a JPEG with previews) are the exception: their first frame is the primary image.
2. The EXIF orientation tag is applied, so the model sees what a viewer shows (phone photos of skin or slides).
3. 16-bit, 32-bit integer and floating-point images (X-rays, DICOM exports, CT in Hounsfield units) are mapped
   linearly from their own minimum..maximum to 0..255 (non-finite values become 0). Pillow would clip every value
   above 255 to white, and every float below 1 to black. A constant image keeps its value (clipped to 0..255).
4. Transparent pixels are composited over white, as a figure shows on a page (ROCOv2's PubMed Central figures),
   instead of showing whatever colour the hidden pixels store.
5. Anything else (L, 1, P, CMYK, ...) converts to RGB as Pillow does.

An image above Pillow's decompression-bomb limit is a per-sample error naming its size, never a crash.
"""

from __future__ import annotations

import io
import warnings
from functools import cache
from typing import Any

ORIENTATION = 0x0112  # the EXIF orientation tag
IMAGE_DECODING = "rgb8-v3: one frame (MPO: primary), EXIF orientation, >8-bit min-max to 0..255, alpha over white"


def decode_rgb(data: bytes) -> Any:
    """The 8-bit RGB PIL image of one stored image's bytes. Raises OSError or ValueError (with a reason a user
    can act on) for files that cannot be decoded by the rules above."""
    from PIL import Image, ImageOps

    with _identified(data) as img:
        img.load()
        if img.getexif().get(ORIENTATION, 1) != 1:  # exif_transpose copies even an upright image: only when needed
            img = ImageOps.exif_transpose(img) or img
        if img.mode.startswith(("I", "F")):
            return _rescaled(img).convert("RGB")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or img.has_transparency_data:
            rgba = img.convert("RGBA")
            page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(page, rgba).convert("RGB")
        return img.convert("RGB")


def check_decodable(data: bytes) -> None:
    """Raise as `decode_rgb` would for a file that is not an image, is too large, holds several frames or is
    damaged (truncated, corrupt), decoding its pixels without converting or keeping them (for models that ignore the
    pixels, see `ModelPlugin.reads_images`: they fail the same samples as a model that reads them, so n agrees)."""
    with _identified(data) as img:
        img.load()


def _identified(data: bytes) -> Any:
    """The opened (not yet decoded) PIL image of the bytes, after rule 1 and the size limit."""
    from PIL import Image

    _quiet_large_images()
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ValueError(f"too large to decode: {str(exc).split(', could be')[0]}") from None
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":
        img.close()
        raise ValueError(f"{img.format or 'image'} file with {frames} frames (a stack or an animation); "
                         "expected a single picture")
    return img


@cache
def _quiet_large_images() -> None:
    """Pillow's warning for an image between its two size limits, once for the process (an image that decodes
    is fine; one above the upper limit is a per-sample error). Set once, not per call: warnings.catch_warnings is
    not thread-safe, and images are decoded on a prefetch thread while the model runs."""
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _rescaled(img: Any) -> Any:
    """An 8-bit grayscale image of a high-bit-depth one: its finite min..max mapped linearly onto 0..255 (a constant
    image keeps its value, clipped to 0..255). Done in bands of rows, so a large 16-bit image needs a few bytes per
    pixel, not the 30 its whole float64 copies took (13000 x 13000 pixels: 3 GB)."""
    import numpy as np
    from PIL import Image

    values = np.asarray(img)
    rows = max(1, BAND_PIXELS // max(1, values.shape[1] if values.ndim > 1 else 1))
    bands = [slice(start, start + rows) for start in range(0, values.shape[0], rows)]
    low, high = np.inf, -np.inf
    for band in bands:
        part = values[band].astype(np.float64)
        part = part[np.isfinite(part)]
        if part.size:
            low, high = min(low, float(part.min())), max(high, float(part.max()))
    out = np.zeros(values.shape, dtype=np.uint8)
    if low <= high:
        for band in bands:
            part = values[band].astype(np.float64)
            finite = np.isfinite(part)
            if high > low:
                out[band][finite] = np.clip(np.rint((part[finite] - low) * (255.0 / (high - low))), 0, 255)
            else:
                out[band][finite] = int(np.clip(np.rint(low), 0, 255))
    return Image.fromarray(out, mode="L")


BAND_PIXELS = 1 << 22  # pixels rescaled at a time


def open_images(sample: Any, decode: bool = True,
                checked: dict[Any, str | None] | None = None) -> tuple[list[Any], str | None]:
    """The decoded images of a sample, or ([], the one-line reason the first undecodable one failed). With
    `decode=False` each image is decoded only to check it and none is returned (a model that ignores pixels fails
    the same samples as one that reads them); `checked` then keeps each image file's outcome by path (None, or the
    reason it failed), so a file that several questions ask about is read and decoded once, not once per question."""
    images = []
    for ref in sample.images:
        path = ref.path if checked is not None and not decode and ref.data is None and ref.reader is None else None
        if path is not None and checked is not None and path in checked:
            if checked[path] is not None:
                return [], checked[path]
            continue
        try:
            if decode:
                images.append(ref.open())
            else:
                check_decodable(ref.read_bytes())
        except (OSError, ValueError) as exc:
            error = image_error(ref.name, ref.path, exc)
            if path is not None and checked is not None:
                checked[path] = error
            return [], error
        if path is not None and checked is not None:
            checked[path] = None
    return images, None


def image_error(name: str, path: Any, exc: BaseException) -> str:
    """One line naming an image that could not be decoded, where it lives, and why."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if type(exc).__name__ == "UnidentifiedImageError":  # PIL's message names a BytesIO object
        reason = "not an image file Pillow can read"
    where = f" ({path})" if path is not None and str(path) != name else ""
    return f"image {name}{where}: {reason}"
