"""Stored medical images reach the model as the picture a viewer shows: 16-bit and float images keep their
contrast (Pillow alone turns them white or black), the EXIF orientation is applied, transparency shows the page
behind it, stacks are refused, and an image too large to decode fails its own sample with a line naming it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from format_writers import cases, write_vqa_rad_official
from PIL import Image

from harness.cli import main
from harness.image_decoding import IMAGE_DECODING, decode_rgb
from harness.types import ImageRef


def stored(img: Image.Image, fmt: str = "PNG", **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def gray(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image)
    assert image.mode == "RGB" and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    return rgb[..., 0].astype(int)


def test_a_16_bit_xray_keeps_its_contrast_instead_of_turning_white():
    values = np.linspace(9830, 54374, 64 * 64).reshape(64, 64).astype(np.uint16)  # a bright 16-bit gradient
    data = stored(Image.fromarray(values))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = gray(decode_rgb(data))
    assert out.min() == 0 and out.max() == 255  # its own range, stretched onto 8 bits
    assert (np.diff(out.ravel()) >= 0).all() and len(np.unique(out)) > 200  # order kept, detail kept
    twelve_bit = gray(decode_rgb(stored(Image.fromarray((values // 16).astype(np.uint16)))))  # a DICOM export
    assert np.abs(twelve_bit - out).max() <= 1


def test_float_images_in_0_1_and_in_hounsfield_units_keep_their_range():
    unit = np.linspace(0.15, 0.83, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = gray(decode_rgb(stored(Image.fromarray(unit), "TIFF")))
    assert out.min() == 0 and out.max() == 255  # Pillow alone gives an all-black picture
    hounsfield = np.linspace(-700, 659, 32 * 32, dtype=np.float32).reshape(32, 32)
    hounsfield[0, 0] = np.nan
    out = gray(decode_rgb(stored(Image.fromarray(hounsfield), "TIFF")))
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[-1, -1] == 255
    assert len(np.unique(out[np.linspace(-700, 659, 32 * 32).reshape(32, 32) < 0])) > 100  # lung and fat kept


def test_the_exif_orientation_is_applied():
    img = Image.new("RGB", (128, 64), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, 16, 16))  # a blue corner at the stored top left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_rgb(stored(img, "JPEG", exif=exif, quality=95))
    assert out.size == (64, 128)
    assert out.getpixel((56, 4))[2] > 150  # the blue corner is now at the top right, as a viewer shows it


def test_transparent_pixels_show_white_not_what_they_store():
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, :8] = (10, 20, 30, 255)  # opaque left half; the right half is transparent black
    out = np.asarray(decode_rgb(stored(Image.fromarray(rgba, "RGBA"))))
    assert (out[:, :8] == (10, 20, 30)).all() and (out[:, 8:] == 255).all()
    la = np.zeros((16, 16, 2), dtype=np.uint8)
    la[..., 0], la[:, :8, 1] = 90, 255
    assert (gray(decode_rgb(stored(Image.fromarray(la, "LA"))))[:, 8:] == 255).all()


def test_a_stack_is_refused_and_an_mpo_uses_its_primary_image():
    frames = [Image.new("L", (8, 8), v) for v in (0, 120, 240)]
    data = stored(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match="TIFF file with 3 frames"):
        decode_rgb(data)
    mpo = stored(Image.new("RGB", (8, 8), (250, 250, 250)), "MPO", save_all=True,
                 append_images=[Image.new("RGB", (8, 8), (0, 0, 0))])
    assert np.asarray(decode_rgb(mpo)).min() > 240


def test_plain_images_are_unchanged():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert (np.asarray(ImageRef("x", data=stored(Image.fromarray(rgb))).open()) == rgb).all()
    levels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    assert (gray(decode_rgb(stored(Image.fromarray(levels, "L")))) == levels).all()


def test_an_image_too_large_to_decode_fails_only_its_sample(tmp_path, monkeypatch, capsys):
    written = write_vqa_rad_official(tmp_path / "data", cases(12, seed=3))
    test_images = sorted({rec["image_name"] for rec in written.records["test"]})
    assert len(test_images) > 1
    big = tmp_path / "data" / "VQA_RAD Image Folder" / test_images[0]
    with Image.open(big) as img:
        width, height = img.size
        img.resize((3 * width, 3 * height)).save(big, format="JPEG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", width * height)  # errors above twice this: only `big`
    code = main(["run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(tmp_path / "data"),
                 "--judge", "exact", "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0 and "Traceback" not in out.err, out.err
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert 0 < results["errors"]["count"] < results["task"]["n"]
    assert results["task"]["image_decoding"] == IMAGE_DECODING
    rows = [json.loads(line) for line in next((tmp_path / "runs").glob("*/predictions.jsonl")).open()]
    failed = [row["error"] for row in rows if row["error"]]
    reason = f"too large to decode: Image size ({9 * width * height} pixels) exceeds limit"
    assert failed and all(big.name in e and reason in e for e in failed), failed


def test_fine_tuning_names_the_training_image_it_skips(tmp_path, capsys):
    from harness.plugins.finetune_data import load_stage_data, open_requests

    written = write_vqa_rad_official(tmp_path / "data", cases(4, seed=3))
    broken = sorted({rec["image_name"] for rec in written.records["train"]})[0]
    (tmp_path / "data" / "VQA_RAD Image Folder" / broken).write_bytes(b"not an image")
    data = load_stage_data("vqa-rad", data_dir=tmp_path / "data")
    skipped: list[str] = []
    kept = open_requests(data, data.samples, skipped)
    assert skipped and len(kept) == len(data.samples) - len(skipped)
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipping training sample" in line]
    assert len(lines) == len(skipped) and all(broken in line and "not an image file Pillow can read" in line
                                              and "BytesIO" not in line for line in lines), lines


def test_the_decoding_rules_are_part_of_the_run_and_fine_tune_identities(tmp_path, monkeypatch):
    import harness.plugins.finetune_data as finetune_data
    import harness.runner as runner

    spec = runner.RunSpec(model="prior", task="phantom-vqa", runs_dir=tmp_path)
    first = runner.prepare(spec)[2]
    stage = finetune_data.load_stage_data("phantom-vqa", limit=4).describe()
    monkeypatch.setattr(runner, "IMAGE_DECODING", IMAGE_DECODING + "-changed")
    monkeypatch.setattr(finetune_data, "IMAGE_DECODING", IMAGE_DECODING + "-changed")
    assert runner.prepare(spec)[2]["run_id"] != first["run_id"]  # other pixels: another run, never a resumed one
    assert finetune_data.load_stage_data("phantom-vqa", limit=4).describe() != stage


def test_the_prior_fails_the_samples_whose_images_no_model_could_decode(tmp_path, capsys):
    """The prior never looks at pixels, but a file damaged after its header fails its sample as it does for a model
    that decodes it (the prior read only headers and scored n=451 where a VLM scored 450 under one fingerprint),
    and so does a file that is not an image."""
    written = write_vqa_rad_official(tmp_path / "data", cases(12, seed=3))
    names = sorted({rec["image_name"] for rec in written.records["test"]})
    folder = tmp_path / "data" / "VQA_RAD Image Folder"
    damaged, garbage = folder / names[0], folder / names[1]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    garbage.write_bytes(b"not an image")
    with pytest.raises(OSError):
        ImageRef("x", path=damaged).open()
    code = main(["run", "--model", "prior", "--task", "vqa-rad", "--data-dir", str(tmp_path / "data"),
                 "--judge", "exact", "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in next((tmp_path / "runs").glob("*/predictions.jsonl")).open()]
    by_image = {row["images"][0]: row for row in rows}
    assert "image file is truncated" in by_image[damaged.name]["error"]
    bad = {damaged.name, garbage.name}
    assert all((row["error"] is None) == (row["images"][0] not in bad) for row in rows)
    assert "not an image file Pillow can read" in by_image[garbage.name]["error"]


def test_rescaling_in_bands_gives_the_same_pixels(monkeypatch):
    """A large 16-bit image was rescaled through whole-image float64 copies (3 GB for 13000 x 13000); bands of rows
    give the same bytes, non-finite pixels and a band without any finite one included."""
    import numpy as np
    from PIL import Image

    from harness import image_decoding

    values = np.random.default_rng(0).normal(0, 1000, (64, 50)).astype(np.float32)
    values[3, 4], values[10, 10], values[20:30] = np.nan, np.inf, np.nan
    image = Image.fromarray(values)
    whole = np.asarray(image_decoding._rescaled(image))
    monkeypatch.setattr(image_decoding, "BAND_PIXELS", 200)  # 4 rows a band
    assert np.array_equal(np.asarray(image_decoding._rescaled(image)), whole)
    assert whole[3, 4] == 0 and whole.max() == 255
