"""Synthetic radiograph-like phantoms with known findings: the data behind phantom-vqa/-report/-caption.

`generate_cases(n, seed)` draws `n` cases. Each case is one body region (= organ: chest, head, abdomen, knee)
imaged with one modality (x-ray projection, or CT/MRI cross-sections) in two views (frontal, lateral; for CT
and MRI these are the axial and sagittal planes), with 0-3 lesions that all share one side (the patient's
left/right), one size (small/large) and one brightness (bright/dark). Frontal views follow the radiological
convention: the patient's right is on the image's left. Lesions are large, high-contrast blobs on mid-gray
tissue, so the findings survive downscaling to 32x32 pixels and a small model can learn them.

Everything is drawn with numpy from a seeded Generator using only +, -, *, /, sqrt, comparisons and
rounding (no fonts, no antialiasing libraries, no transcendental functions), so the same seed gives the same
pixels on every machine. Each case uses its own generator seeded by (seed, index): the first k cases of
`generate_cases(n, seed)` do not depend on n.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from harness.phantom_text import MODALITIES, ORGANS, PhantomQA, caption_text, question_list, report_text

__all__ = ["PhantomCase", "PhantomQA", "generate_cases"]

GENERATOR_VERSION = "1"
SIZE = 128
BRIGHT, DARK = 255.0, 4.0
# Tissue intensities per modality. Lesion fields (lung, brain, soft, bone2) stay mid-gray in every modality
# so that bright and dark lesions both stand out.
PALETTE: dict[str, dict[str, float]] = {
    "x-ray": {"bg": 12, "soft": 122, "fat": 108, "bone": 192, "bone2": 158, "lung": 92, "brain": 118, "marrow": 150,
              "table": 0},
    "ct": {"bg": 4, "soft": 124, "fat": 96, "bone": 200, "bone2": 162, "lung": 90, "brain": 112, "marrow": 150,
           "table": 170},
    "mri": {"bg": 2, "soft": 118, "fat": 190, "bone": 36, "bone2": 140, "lung": 84, "brain": 132, "marrow": 170,
            "table": 0},
}
NOISE = {"x-ray": 7.0, "ct": 5.0, "mri": 4.0}

Shape = tuple  # ("E", cx, cy, rx, ry, tissue) ellipse | ("R", x0, y0, x1, y1, tissue) box
Field = tuple[float, float, float, float]  # ellipse (cx, cy, rx, ry) where lesions are placed

# Anatomy as drawing lists: (projection: x-ray?, view) -> organ -> (shapes, fields). Frontal fields are
# keyed by the patient's side (right = image left); lateral views have one field ("any").
_XR_FRONTAL: dict[str, tuple[list[Shape], dict[str, Field]]] = {
    "chest": ([("E", 64, 82, 62, 82, "soft"), ("R", 18, 16, 58, 21, "bone"), ("R", 70, 16, 110, 21, "bone"),
               ("R", 59, 0, 69, 128, "bone"), ("E", 38, 60, 22, 40, "lung"), ("E", 90, 60, 22, 40, "lung"),
               ("E", 72, 88, 15, 19, "soft")],
              {"right": (38, 60, 22, 40), "left": (90, 60, 22, 40)}),
    "head": ([("E", 64, 60, 50, 56, "bone"), ("E", 64, 62, 44, 50, "brain"), ("R", 48, 112, 80, 128, "soft")],
             {"right": (44, 60, 17, 36), "left": (84, 60, 17, 36)}),
    "abdomen": ([("E", 64, 64, 62, 92, "soft"), ("R", 58, 0, 70, 128, "bone"), ("E", 64, 126, 48, 20, "bone"),
                 ("E", 64, 128, 38, 13, "soft")],
                {"right": (34, 56, 21, 38), "left": (94, 56, 21, 38)}),
    "knee": ([("R", 6, 0, 58, 128, "soft"), ("R", 70, 0, 122, 128, "soft"),
              ("R", 27, 0, 37, 54, "bone2"), ("E", 32, 56, 13, 6, "bone2"), ("E", 32, 70, 12, 5, "bone2"),
              ("R", 27, 70, 37, 128, "bone2"), ("R", 91, 0, 101, 54, "bone2"), ("E", 96, 56, 13, 6, "bone2"),
              ("E", 96, 70, 12, 5, "bone2"), ("R", 91, 70, 101, 128, "bone2")],
             {"right": (32, 64, 21, 52), "left": (96, 64, 21, 52)}),
}
_XR_LATERAL: dict[str, tuple[list[Shape], dict[str, Field]]] = {
    "chest": ([("E", 64, 82, 46, 84, "soft"), ("R", 92, 0, 102, 128, "bone"), ("E", 60, 60, 30, 42, "lung"),
               ("E", 50, 88, 16, 18, "soft")], {"any": (60, 60, 30, 42)}),
    "head": ([("E", 66, 62, 54, 50, "bone"), ("E", 66, 62, 48, 44, "brain"), ("E", 14, 84, 10, 22, "soft")],
             {"any": (66, 60, 40, 32)}),
    "abdomen": ([("E", 62, 64, 46, 92, "soft"), ("R", 88, 0, 100, 128, "bone")], {"any": (56, 60, 28, 44)}),
    "knee": ([("R", 38, 0, 90, 128, "soft"), ("R", 59, 0, 71, 54, "bone2"), ("E", 65, 56, 14, 7, "bone2"),
              ("E", 42, 58, 5, 9, "bone2"), ("E", 65, 70, 12, 5, "bone2"), ("R", 59, 70, 71, 128, "bone2")],
             {"any": (64, 64, 22, 52)}),
}
_XS_FRONTAL: dict[str, tuple[list[Shape], dict[str, Field]]] = {
    "chest": ([("E", 64, 62, 61, 47, "fat"), ("E", 64, 62, 57, 43, "soft"), ("E", 38, 58, 22, 32, "lung"),
               ("E", 90, 58, 22, 32, "lung"), ("E", 70, 62, 12, 16, "soft"), ("R", 62, 96, 66, 110, "bone"),
               ("E", 64, 94, 11, 7, "bone"), ("E", 64, 94, 8, 4.5, "marrow")],
              {"right": (38, 58, 22, 32), "left": (90, 58, 22, 32)}),
    "head": ([("E", 64, 64, 54, 60, "fat"), ("E", 64, 64, 51, 57, "bone"), ("E", 64, 64, 46, 52, "brain"),
              ("R", 63, 16, 65, 112, "soft")],
             {"right": (42, 64, 18, 38), "left": (86, 64, 18, 38)}),
    "abdomen": ([("E", 64, 62, 62, 47, "fat"), ("E", 64, 62, 58, 43, "soft"), ("R", 62, 92, 66, 104, "bone"),
                 ("E", 64, 90, 12, 7, "bone"), ("E", 64, 90, 9, 4.5, "marrow")],
                {"right": (36, 56, 22, 27), "left": (92, 56, 22, 27)}),
    "knee": ([("E", 34, 64, 29, 29, "fat"), ("E", 34, 64, 26, 26, "soft"), ("E", 34, 64, 10, 10, "bone2"),
              ("E", 94, 64, 29, 29, "fat"), ("E", 94, 64, 26, 26, "soft"), ("E", 94, 64, 10, 10, "bone2")],
             {"right": (34, 64, 23, 23), "left": (94, 64, 23, 23)}),
}
_XS_LATERAL: dict[str, tuple[list[Shape], dict[str, Field]]] = {
    "chest": ([("E", 64, 64, 41, 62, "fat"), ("E", 64, 64, 38, 59, "soft"), ("E", 58, 56, 26, 40, "lung"),
               ("R", 89, 6, 99, 122, "bone"), ("R", 91, 8, 97, 120, "marrow")], {"any": (58, 56, 26, 40)}),
    "head": ([("E", 64, 64, 55, 58, "fat"), ("E", 64, 64, 52, 55, "bone"), ("E", 64, 64, 47, 50, "brain")],
             {"any": (64, 60, 36, 36)}),
    "abdomen": ([("E", 64, 64, 41, 62, "fat"), ("E", 64, 64, 38, 59, "soft"), ("R", 87, 6, 97, 122, "bone"),
                 ("R", 89, 8, 95, 120, "marrow")],
                {"any": (58, 62, 24, 44)}),
    "knee": ([("E", 64, 64, 31, 62, "fat"), ("E", 64, 64, 28, 59, "soft"), ("R", 58, 0, 70, 56, "bone2"),
              ("E", 64, 58, 13, 6, "bone2"), ("R", 58, 68, 70, 128, "bone2")], {"any": (64, 64, 22, 52)}),
}


@dataclass
class PhantomCase:
    """One synthetic study: two views, its findings, 3-4 questions, a findings-style report and a caption."""

    case_id: str
    views: list[Image.Image]  # [frontal, lateral], RGB
    findings: dict[str, Any]
    qa: list[PhantomQA] = field(default_factory=list)
    report: str = ""
    caption: str = ""
    modality: str = ""
    organ: str = ""

    VIEW_NAMES = ("frontal", "lateral")


def generate_cases(n: int, seed: int) -> list[PhantomCase]:
    """Draw `n` cases deterministically from `seed` (case i depends only on (seed, i))."""
    cases = []
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        findings = _draw_findings(rng)
        views = [_to_image(_render(rng, findings, view)) for view in PhantomCase.VIEW_NAMES]
        case = PhantomCase(
            case_id=f"ph{seed}-{i:04d}",
            views=views,
            findings=findings,
            modality=findings["modality"],
            organ=findings["organ"],
        )
        case.qa = question_list(findings, rng)
        case.report = report_text(findings, rng)
        case.caption = caption_text(findings, rng)
        cases.append(case)
    return cases


def _draw_findings(rng: np.random.Generator) -> dict[str, Any]:
    organ = ORGANS[int(rng.integers(len(ORGANS)))]
    modality = MODALITIES[int(rng.integers(len(MODALITIES)))]
    present = bool(rng.integers(2))
    count = int(rng.integers(1, 4)) if present else 0
    return {
        "organ": organ,
        "modality": modality,
        "lesion": present,
        "count": count,
        "side": ("left", "right")[int(rng.integers(2))] if present else None,
        "size": ("small", "large")[int(rng.integers(2))] if present else None,
        "brightness": ("bright", "dark")[int(rng.integers(2))] if present else None,
        "lesions": {},  # view -> [[x, y, r], ...] in image pixels, filled by _render
    }


def _anatomy(modality: str, view: str, organ: str) -> tuple[list[Shape], dict[str, Field]]:
    if modality == "x-ray":
        table = _XR_FRONTAL if view == "frontal" else _XR_LATERAL
    else:
        table = _XS_FRONTAL if view == "frontal" else _XS_LATERAL
    return table[organ]


_YY, _XX = (a.astype(np.float64) + 0.5 for a in np.mgrid[0:SIZE, 0:SIZE])


def _window(lo: float, hi: float) -> slice:
    return slice(max(int(np.floor(lo)) - 1, 0), min(int(np.ceil(hi)) + 2, SIZE))


def _paint_ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, value: float) -> None:
    """Blend a soft-edged ellipse into img, computed only in its bounding box (alpha is 0 outside)."""
    soft = 1.2
    grow = 1.0 + 0.5 * soft / min(rx, ry)
    ys, xs = _window(cy - ry * grow, cy + ry * grow), _window(cx - rx * grow, cx + rx * grow)
    dx = (_XX[ys, xs] - cx) / rx
    dy = (_YY[ys, xs] - cy) / ry
    alpha = np.clip((1.0 - np.sqrt(dx * dx + dy * dy)) * min(rx, ry) / soft + 0.5, 0.0, 1.0)
    img[ys, xs] = img[ys, xs] * (1.0 - alpha) + value * alpha


def _paint_box(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, value: float) -> None:
    soft = 1.2
    ys, xs = _window(y0 - soft, y1 + soft), _window(x0 - soft, x1 + soft)
    xx, yy = _XX[ys, xs], _YY[ys, xs]
    inside = np.minimum(np.minimum(xx - x0, x1 - xx), np.minimum(yy - y0, y1 - yy))
    alpha = np.clip(inside / soft + 0.5, 0.0, 1.0)
    img[ys, xs] = img[ys, xs] * (1.0 - alpha) + value * alpha


def _render(rng: np.random.Generator, findings: dict[str, Any], view: str) -> np.ndarray:
    """Draw one view as a float image in 0..255, and record where its lesions were put."""
    modality, organ = findings["modality"], findings["organ"]
    palette = PALETTE[modality]
    scale = 0.97 + 0.06 * rng.random()
    dx, dy = rng.integers(-2, 3, size=2)

    def tx(x: float) -> float:
        return 64.0 + (x - 64.0) * scale + float(dx)

    def ty(y: float) -> float:
        return 64.0 + (y - 64.0) * scale + float(dy)

    img = np.full((SIZE, SIZE), float(palette["bg"]))
    shapes, fields = _anatomy(modality, view, organ)
    for kind, a, b, c, d, tissue in shapes:
        if kind == "E":
            _paint_ellipse(img, tx(a), ty(b), c * scale, d * scale, float(palette[tissue]))
        else:
            _paint_box(img, tx(a), ty(b), tx(c), ty(d), float(palette[tissue]))
    if modality == "ct":  # the scanner table under (axial) or behind (sagittal) the patient
        bar = (14, 116, 114, 120) if view == "frontal" else (114, 8, 118, 120)
        _paint_box(img, tx(bar[0]), ty(bar[1]), tx(bar[2]), ty(bar[3]), float(palette["table"]))

    placed = []
    if findings["count"]:
        key = findings["side"] if view == "frontal" else "any"
        cx, cy, rx, ry = fields[key]
        region = (tx(cx), ty(cy), rx * scale, ry * scale)
        midline = tx(64.0) if view == "frontal" else None
        placed = _place_lesions(rng, findings, region, midline)
        value = BRIGHT if findings["brightness"] == "bright" else DARK
        for x, y, r in placed:
            _paint_ellipse(img, x, y, r, r, value)
    findings["lesions"][view] = [[round(x, 2), round(y, 2), round(r, 2)] for x, y, r in placed]

    gain = 0.92 + 0.16 * rng.random()
    offset = float(rng.integers(-8, 9))
    if modality == "mri":  # coil sensitivity: brighter towards one corner
        gx, gy = rng.random(2) - 0.5
        img = img * (1.0 + 0.15 * (gx * (_XX - 64.0) + gy * (_YY - 64.0)) / 64.0)
    # Approximately Gaussian noise from a sum of three uniform integers (integer draws are platform-exact).
    k = 64
    noise = rng.integers(-k, k + 1, size=(3, SIZE, SIZE)).astype(np.float64)
    noise = (noise[0] + noise[1] + noise[2]) * (NOISE[modality] / (k * 1.0))
    return img * gain + offset + noise


def _place_lesions(
    rng: np.random.Generator, findings: dict[str, Any], region: tuple[float, float, float, float],
    midline: float | None,
) -> list[tuple[float, float, float]]:
    """Put `count` non-overlapping disks inside the field ellipse, never across the midline."""
    cx, cy, rx, ry = region
    lo, hi = (7.0, 9.0) if findings["size"] == "small" else (13.0, 15.5)
    radii = [lo + (hi - lo) * rng.random() for _ in range(findings["count"])]
    placed: list[tuple[float, float, float]] = []
    for r in radii:
        best, best_gap = None, -1e9
        for _ in range(60):
            ux, uy = rng.random(2) * 2.0 - 1.0
            if ux * ux + uy * uy > 1.0:
                continue
            x = cx + ux * max(rx - 0.5 * r, 1.0)
            y = cy + uy * max(ry - 0.5 * r, 1.0)
            if midline is not None and abs(x - midline) < r + 4.0:
                continue
            gap = min((_distance(x, y, px, py) - r - pr for px, py, pr in placed), default=99.0)
            if gap > best_gap:
                best, best_gap = (x, y, r), gap
            if gap >= 3.0:
                break
        if best is None:  # the field is too narrow for rejection sampling: use its centre line
            best = (cx, cy + (len(placed) - 1) * ry * 0.6, r)
        placed.append(best)
    return placed


def _distance(x0: float, y0: float, x1: float, y1: float) -> float:
    return float(np.sqrt((x0 - x1) * (x0 - x1) + (y0 - y1) * (y0 - y1)))


def _to_image(img: np.ndarray) -> Image.Image:
    pixels = np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([pixels] * 3, axis=-1), "RGB")
