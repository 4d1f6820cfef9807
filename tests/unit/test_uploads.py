"""Upload naming (ComfyUI's `name (n).ext` collision rule), atomic storing, and target checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfyserve.config import Settings
from comfyserve.files import uploads
from comfyserve.files.errors import FileRequestError
from comfyserve.files.target import upload_target
from comfyserve.files.uploads import Blob, choose_name, holds_same_bytes, numbered_name, store_upload
from comfyserve.paths import Folders


@pytest.mark.parametrize(
    ("filename", "number", "expected"),
    [
        ("red.png", 1, "red (1).png"),
        ("red.png", 12, "red (12).png"),
        ("archive.tar.gz", 1, "archive.tar (1).gz"),
        ("noext", 2, "noext (2)"),
        (".hidden", 1, ".hidden (1)"),
        ("a b.final.jpeg", 3, "a b.final (3).jpeg"),
    ],
)
def test_numbered_name(filename: str, number: int, expected: str) -> None:
    assert numbered_name(filename, number) == expected


def _never_same(path: Path) -> bool:
    return False


def test_choose_name_free_name_is_kept(tmp_path: Path) -> None:
    assert choose_name(tmp_path, "red.png", _never_same) == ("red.png", False)


def test_choose_name_counts_past_taken_names(tmp_path: Path) -> None:
    for name in ("red.png", "red (1).png", "red (2).png"):
        (tmp_path / name).write_bytes(name.encode())
    assert choose_name(tmp_path, "red.png", _never_same) == ("red (3).png", False)


def test_choose_name_stops_at_first_file_with_same_bytes(tmp_path: Path) -> None:
    for name in ("red.png", "red (1).png", "red (2).png"):
        (tmp_path / name).write_bytes(name.encode())
    blob = Blob.from_bytes(b"red (1).png")
    assert choose_name(tmp_path, "red.png", lambda p: holds_same_bytes(p, blob)) == ("red (1).png", True)


def test_choose_name_skips_a_folder_with_that_name(tmp_path: Path) -> None:
    (tmp_path / "red.png").mkdir()
    blob = Blob.from_bytes(b"x")
    assert choose_name(tmp_path, "red.png", lambda p: holds_same_bytes(p, blob)) == ("red (1).png", False)


def test_holds_same_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    assert holds_same_bytes(tmp_path / "a", Blob.from_bytes(b"abc"))
    assert not holds_same_bytes(tmp_path / "a", Blob.from_bytes(b"abd"))
    assert not holds_same_bytes(tmp_path / "a", Blob.from_bytes(b"abcd"))
    assert not holds_same_bytes(tmp_path / "missing", Blob.from_bytes(b"abc"))


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_store_sequence_matches_comfyui(tmp_path: Path) -> None:
    first, second, third = (Blob.from_bytes(b) for b in (b"one", b"two", b"three"))
    assert store_upload(tmp_path, "red.png", first, False) == "red.png"
    inode = (tmp_path / "red.png").stat().st_ino
    assert store_upload(tmp_path, "red.png", Blob.from_bytes(b"one"), False) == "red.png"
    assert (tmp_path / "red.png").stat().st_ino == inode  # a duplicate is not rewritten
    assert store_upload(tmp_path, "red.png", second, False) == "red (1).png"
    assert store_upload(tmp_path, "red.png", third, False) == "red (2).png"
    assert store_upload(tmp_path, "red.png", Blob.from_bytes(b"two"), False) == "red (1).png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["red (1).png", "red (2).png", "red.png"]
    assert (tmp_path / "red (2).png").read_bytes() == b"three"
    assert _no_temp_files(tmp_path)


def test_store_overwrite_replaces(tmp_path: Path) -> None:
    store_upload(tmp_path, "red.png", Blob.from_bytes(b"old"), False)
    assert store_upload(tmp_path, "red.png", Blob.from_bytes(b"new"), True) == "red.png"
    assert (tmp_path / "red.png").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["red.png"]


def test_store_creates_subfolders(tmp_path: Path) -> None:
    assert store_upload(tmp_path / "a" / "b", "s.png", Blob.from_bytes(b"s"), False) == "s.png"
    assert (tmp_path / "a" / "b" / "s.png").read_bytes() == b"s"


def test_store_overwrite_onto_folder_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "red.png").mkdir()
    with pytest.raises(IsADirectoryError):
        store_upload(tmp_path, "red.png", Blob.from_bytes(b"x"), True)
    assert _no_temp_files(tmp_path)


def test_store_under_a_file_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "sub").write_bytes(b"file")
    with pytest.raises(NotADirectoryError):
        store_upload(tmp_path / "sub", "x.png", Blob.from_bytes(b"x"), False)


def test_store_never_clobbers_a_name_taken_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer creates the chosen name between the check and the rename: pick again."""
    real_choose = uploads.choose_name
    calls = []

    def racing_choose(directory, filename, is_same):
        result = real_choose(directory, filename, is_same)
        if not calls:
            (directory / result[0]).write_bytes(b"someone else")
        calls.append(result)
        return result

    monkeypatch.setattr(uploads, "choose_name", racing_choose)
    assert store_upload(tmp_path, "red.png", Blob.from_bytes(b"mine"), False) == "red (1).png"
    assert (tmp_path / "red.png").read_bytes() == b"someone else"
    assert (tmp_path / "red (1).png").read_bytes() == b"mine"
    assert _no_temp_files(tmp_path)


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    found = Folders.from_settings(Settings(base_directory=tmp_path))
    found.ensure()
    return found


def test_target_defaults_to_input(folders: Folders) -> None:
    target = upload_target(folders, {}, "a.png")
    assert (target.directory, target.kind, target.subfolder, target.overwrite) == (folders.input, "input", "", False)


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("false", False), ("True", False), ("yes", False)])
def test_target_overwrite_only_true_or_1(folders: Folders, value: str, expected: bool) -> None:
    assert upload_target(folders, {"overwrite": value}, "a.png").overwrite is expected


def test_target_type_and_subfolder(folders: Folders) -> None:
    target = upload_target(folders, {"type": "output", "subfolder": "up/x"}, "o.png")
    assert target.directory == folders.output / "up" / "x"
    assert (target.kind, target.subfolder) == ("output", "up/x")


def test_target_unknown_type_is_a_clear_400(folders: Folders) -> None:
    with pytest.raises(FileRequestError) as err:
        upload_target(folders, {"type": "bogus"}, "a.png")
    assert (err.value.status, err.value.bare, err.value.kind) == (400, False, "invalid_upload_type")
    assert "bogus" in err.value.message


@pytest.mark.parametrize(
    ("fields", "filename"),
    [({"subfolder": "../.."}, "x.png"), ({"subfolder": "/tmp"}, "x.png"), ({}, "../evil.png"), ({}, ".."),
     ({}, "/etc/x.png"), ({}, "a\\b.png"), ({}, "a\x00.png")],
)
def test_target_traversal_is_a_bare_400(folders: Folders, fields: dict, filename: str) -> None:
    with pytest.raises(FileRequestError) as err:
        upload_target(folders, fields, filename)
    assert (err.value.status, err.value.bare) == (400, True)


def test_target_symlinked_subfolder_out_is_refused(folders: Folders, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", folders.input / "out")
    with pytest.raises(FileRequestError) as err:
        upload_target(folders, {"subfolder": "out"}, "x.png")
    assert (err.value.status, err.value.bare) == (400, True)


@pytest.mark.parametrize("filename", ["a/b.png", "sub/../x.png", ".", ""])
def test_target_folder_in_filename_is_a_clear_400(folders: Folders, filename: str) -> None:
    with pytest.raises(FileRequestError) as err:
        upload_target(folders, {}, filename)
    assert (err.value.status, err.value.bare, err.value.kind) == (400, False, "invalid_filename")
