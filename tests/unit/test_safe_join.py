"""safe_join: every client path is joined through it, so its refusals are the security boundary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfyserve.paths import PathEscape, model_join, safe_join


@pytest.fixture
def base(tmp_path: Path) -> Path:
    root = tmp_path / "input"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"a")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    return root


def test_joins_inside(base: Path) -> None:
    assert safe_join(base, "sub", "a.png") == (base / "sub" / "a.png").resolve()
    assert safe_join(base, "sub/a.png") == (base / "sub" / "a.png").resolve()


def test_no_parts_or_empty_part_is_the_base(base: Path) -> None:
    assert safe_join(base) == base.resolve()
    assert safe_join(base, "", "") == base.resolve()


def test_dotdot_that_stays_inside_is_allowed(base: Path) -> None:
    assert safe_join(base, "sub/../sub/a.png") == (base / "sub" / "a.png").resolve()


@pytest.mark.parametrize("part", ["..", "../outside/secret.txt", "sub/../../outside", "sub/../.."])
def test_dotdot_escape_is_refused(base: Path, part: str) -> None:
    with pytest.raises(PathEscape):
        safe_join(base, part)


def test_dotdot_split_over_parts_is_refused(base: Path) -> None:
    with pytest.raises(PathEscape):
        safe_join(base, "sub", "..", "..", "outside")


@pytest.mark.parametrize("part", ["/etc/passwd", "/", "//server/share"])
def test_absolute_is_refused(base: Path, part: str) -> None:
    with pytest.raises(PathEscape, match="absolute"):
        safe_join(base, "sub", part)


@pytest.mark.parametrize("part", ["..\\outside", "sub\\a.png", "C:\\Windows"])
def test_backslash_is_refused(base: Path, part: str) -> None:
    with pytest.raises(PathEscape, match="backslash"):
        safe_join(base, part)


def test_nul_byte_is_refused(base: Path) -> None:
    with pytest.raises(PathEscape, match="NUL"):
        safe_join(base, "a.png\x00.txt")


def test_symlink_pointing_out_is_refused(base: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "outside" / "secret.txt", base / "link.png")
    os.symlink(tmp_path / "outside", base / "linkdir")
    with pytest.raises(PathEscape):
        safe_join(base, "link.png")
    with pytest.raises(PathEscape):
        safe_join(base, "linkdir", "secret.txt")


def test_symlink_staying_inside_is_allowed_and_resolved(base: Path) -> None:
    os.symlink(base / "sub" / "a.png", base / "alias.png")
    os.symlink(base / "sub", base / "subalias")
    assert safe_join(base, "alias.png") == (base / "sub" / "a.png").resolve()
    assert safe_join(base, "subalias", "a.png") == (base / "sub" / "a.png").resolve()


def test_base_reached_through_a_symlink_still_works(base: Path, tmp_path: Path) -> None:
    os.symlink(base, tmp_path / "input-link")
    assert safe_join(tmp_path / "input-link", "sub", "a.png") == (base / "sub" / "a.png").resolve()
    with pytest.raises(PathEscape):
        safe_join(tmp_path / "input-link", "..", "outside")


# -- model folders: the administrator's links are followed, client names still cannot escape ----
def test_model_join_follows_links_placed_in_the_folder(tmp_path: Path) -> None:
    models = tmp_path / "models" / "checkpoints"
    other_disk = tmp_path / "disk2"
    (other_disk / "sd").mkdir(parents=True)
    models.mkdir(parents=True)
    (other_disk / "big.safetensors").write_bytes(b"x")
    (other_disk / "sd" / "deep.safetensors").write_bytes(b"y")
    os.symlink(other_disk / "big.safetensors", models / "big.safetensors")
    os.symlink(other_disk / "sd", models / "linked")
    assert model_join(models, "big.safetensors").read_bytes() == b"x"
    assert model_join(models, "linked/deep.safetensors").read_bytes() == b"y"
    for bad in ["../x.safetensors", "linked/../../x", "/etc/passwd", "a\\b", "a\x00b"]:
        with pytest.raises(PathEscape):
            model_join(models, bad)
    # `..` is taken lexically: it never walks up from a link's target.
    assert model_join(models, "linked/../big.safetensors") == models / "big.safetensors"


def test_linked_model_files_are_listed_and_found(tmp_path: Path) -> None:
    from comfyserve.config import Settings
    from comfyserve.paths import Folders

    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"{}")
    folders = Folders.from_settings(Settings(base_directory=tmp_path / "base"))
    folders.ensure()
    os.symlink(outside, folders.models_dir / "checkpoints" / "linked.safetensors")
    assert "linked.safetensors" in folders.filename_list("checkpoints")
    assert folders.full_path("checkpoints", "linked.safetensors") == folders.models_dir / "checkpoints" / "linked.safetensors"
    assert folders.full_path("checkpoints", "../../elsewhere.safetensors") is None
