"""Unit tests for comfyserve.userdata: user registry, path checks, listings, atomic writes, headers."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from comfyserve.paths import PathEscape
from comfyserve.userdata.atomic import AtomicFile, place, write_bytes_atomic
from comfyserve.userdata.delivery import delivery_headers
from comfyserve.userdata.files import file_info, listed_files, listing_entry, tree, user_path
from comfyserve.userdata.settings_file import SETTINGS_FILE, load_settings, save_settings
from comfyserve.userdata.users import (
    DEFAULT_USER,
    InvalidUsername,
    UnknownUser,
    UserManager,
    user_id_for,
)

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


# --- users -------------------------------------------------------------------------------


def test_user_id_keeps_safe_characters_and_appends_a_uuid() -> None:
    assert re.fullmatch(rf"alice_{UUID}", user_id_for("alice"))
    assert re.fullmatch(rf"Bob-Smith_{UUID}", user_id_for("Bob Smith"))
    assert re.fullmatch(rf"a-b_c_{UUID}", user_id_for("a/../b_c"))
    assert re.fullmatch(rf"caf-_{UUID}", user_id_for("café"))


def test_single_user_mode_ignores_the_header(tmp_path: Path) -> None:
    users = UserManager(tmp_path, multi_user=False)
    assert users.users == {DEFAULT_USER: DEFAULT_USER}
    assert users.request_user({"Comfy-User": "someone"}) == DEFAULT_USER
    assert users.user_dir(DEFAULT_USER) == (tmp_path / DEFAULT_USER).resolve()


def test_multi_user_mode_selects_by_header_and_rejects_unknown(tmp_path: Path) -> None:
    users = UserManager(tmp_path, multi_user=True)
    assert users.users == {}
    with pytest.raises(UnknownUser, match="Comfy-User"):
        users.request_user({})
    alice = users.add_user("alice")
    assert users.request_user({"Comfy-User": alice}) == alice
    with pytest.raises(UnknownUser, match="'nobody'"):
        users.request_user({"Comfy-User": "nobody"})


def test_add_user_persists_and_reloads(tmp_path: Path) -> None:
    users = UserManager(tmp_path, multi_user=True)
    alice = users.add_user("  alice ")
    assert json.loads((tmp_path / "users.json").read_text()) == {alice: "alice"}
    assert UserManager(tmp_path, multi_user=True).users == {alice: "alice"}


def test_add_user_rejects_empty_duplicate_and_system_names(tmp_path: Path) -> None:
    users = UserManager(tmp_path, multi_user=True)
    users.add_user("alice")
    with pytest.raises(InvalidUsername, match="not provided"):
        users.add_user("   ")
    with pytest.raises(InvalidUsername, match="Duplicate"):
        users.add_user("alice")
    with pytest.raises(InvalidUsername, match="System User"):
        users.add_user("__system")
    assert len(users.users) == 1


def test_system_users_are_never_reachable(tmp_path: Path) -> None:
    (tmp_path / "users.json").write_text(json.dumps({"__internal": "x"}))
    users = UserManager(tmp_path, multi_user=True)
    with pytest.raises(UnknownUser):
        users.request_user({"Comfy-User": "__internal"})


def test_user_ids_that_escape_the_user_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "users.json").write_text(json.dumps({"../evil": "evil", ".": "dot"}))
    users = UserManager(tmp_path / "users", multi_user=True)
    for user_id in ("../evil", "."):
        with pytest.raises(UnknownUser, match="not a valid folder name"):
            users.user_dir(users.request_user({"Comfy-User": user_id}))


def test_unreadable_users_file_means_no_users(tmp_path: Path) -> None:
    (tmp_path / "users.json").write_text("{not json")
    assert UserManager(tmp_path, multi_user=True).users == {}
    (tmp_path / "users.json").write_text("[1, 2]")
    assert UserManager(tmp_path, multi_user=True).users == {}


# --- path checks ---------------------------------------------------------------------------


def test_user_path_decodes_once_more_and_stays_lexical(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert user_path(root, "workflows/a.json") == root / "workflows" / "a.json"
    assert user_path(root, "workflows%2Fa.json") == root / "workflows" / "a.json"
    assert user_path(root, "a/./b/../c.json") == root / "a" / "c.json"
    assert user_path(root, ".", allow_root=True) == root


@pytest.mark.parametrize(
    "raw",
    ["../x", "..%2Fx", "a/../../x", "/etc/passwd", "%2Fetc%2Fpasswd", "a\x00b", "..", ".", "", "a\\..\\x"],
)
def test_user_path_refuses_escapes(tmp_path: Path, raw: str) -> None:
    with pytest.raises(PathEscape):
        user_path(tmp_path, raw)


def test_user_path_refuses_symlinks_leading_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "link.txt").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)
    (root / "inner.txt").write_text("ok")
    (root / "ok-link.txt").symlink_to(root / "inner.txt")
    for raw in ("link.txt", "dirlink/secret.txt", "dirlink"):
        with pytest.raises(PathEscape):
            user_path(root, raw)
    # A link that stays inside is fine, and is returned as the link, not its target.
    assert user_path(root, "ok-link.txt") == root.resolve() / "ok-link.txt"


# --- listings ------------------------------------------------------------------------------


def _make_tree(root: Path) -> None:
    (root / "workflows" / "sub").mkdir(parents=True)
    (root / "workflows" / "a.json").write_text('{"nodes":[1]}')
    (root / "workflows" / "c.bin").write_bytes(b"\x00\x01\x02")
    (root / "workflows" / "sub" / "b.json").write_text('{"b":2}')
    (root / "workflows" / ".hidden.json").write_text("{}")
    (root / "workflows" / ".git").mkdir()
    (root / "workflows" / ".git" / "x.json").write_text("{}")


def test_listing_plain_recursive_and_split(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    wf = tmp_path / "workflows"
    flat = listed_files(wf, recurse=False, user_root=tmp_path)
    assert [listing_entry(p, wf, False, False) for p in flat] == ["a.json", "c.bin"]
    deep = listed_files(wf, recurse=True, user_root=tmp_path)
    assert [listing_entry(p, wf, False, False) for p in deep] == ["a.json", "c.bin", "sub/b.json"]
    assert [listing_entry(p, wf, False, True) for p in deep] == [
        ["a.json", "a.json"],
        ["c.bin", "c.bin"],
        ["sub/b.json", "sub", "b.json"],
    ]


def test_listing_full_info_wins_over_split(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    wf = tmp_path / "workflows"
    entry = listing_entry(wf / "sub" / "b.json", wf, True, True)
    assert entry["path"] == "sub/b.json"
    assert entry["size"] == 7
    assert isinstance(entry["modified"], float) and isinstance(entry["created"], float)


def test_listing_leaves_out_links_leading_out(tmp_path: Path) -> None:
    root = tmp_path / "u"
    (root / "workflows").mkdir(parents=True)
    (tmp_path / "secret.json").write_text("{}")
    (root / "workflows" / "leak.json").symlink_to(tmp_path / "secret.json")
    (root / "workflows" / "outdir").symlink_to(tmp_path)
    (root / "workflows" / "real.json").write_text("{}")
    names = [p.name for p in listed_files(root / "workflows", recurse=True, user_root=root)]
    assert names == ["real.json"]
    assert [e["name"] for e in tree(root, root)] == ["workflows", "real.json"]


def test_file_info_is_relative_to_the_given_root(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    info = file_info(tmp_path / "workflows" / "sub" / "b.json", tmp_path)
    assert info["path"] == "workflows/sub/b.json"
    assert set(info) == {"path", "size", "modified", "created"}


def test_tree_lists_everything_folders_first_then_by_name(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    (tmp_path / "Zeta.json").write_text("{}")
    entries = tree(tmp_path, tmp_path)
    kinds = [e["type"] for e in entries]
    assert kinds == sorted(kinds, key=lambda k: k != "directory")
    files = [e["name"] for e in entries if e["type"] == "file"]
    assert files == sorted(files, key=str.lower)
    assert {e["path"] for e in entries} >= {"workflows", "workflows/sub", "workflows/sub/b.json", "Zeta.json"}
    b = next(e for e in entries if e["name"] == "b.json")
    assert b == {
        "name": "b.json",
        "path": "workflows/sub/b.json",
        "type": "file",
        "size": 7,
        "modified": b["modified"],
    }
    assert "size" not in next(e for e in entries if e["name"] == "sub")
    sub = tree(tmp_path / "workflows" / "sub", tmp_path)
    assert [e["path"] for e in sub] == ["workflows/sub/b.json"]


# --- atomic writes -------------------------------------------------------------------------


def test_atomic_write_creates_folders_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.json"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["c.json"]


def test_atomic_write_without_overwrite_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "c.json"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        write_bytes_atomic(target, b"new", overwrite=False)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["c.json"]


def test_discarded_upload_leaves_nothing(tmp_path: Path) -> None:
    upload = AtomicFile(tmp_path / "x.bin")
    upload.write(b"partial")
    upload.discard()
    assert os.listdir(tmp_path) == []


def test_atomic_file_under_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(NotADirectoryError):
        AtomicFile(tmp_path / "a.json" / "b.json")


def test_place_moves_and_respects_overwrite(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.write_text("s")
    dest.write_text("d")
    with pytest.raises(FileExistsError):
        place(src, dest, overwrite=False)
    assert src.read_text() == "s" and dest.read_text() == "d"
    place(src, dest, overwrite=True)
    assert not src.exists() and dest.read_text() == "s"
    place(dest, tmp_path / "new", overwrite=False)
    assert (tmp_path / "new").read_text() == "s" and not dest.exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(FileExistsError):
        place(folder, tmp_path / "new", overwrite=False)
    place(folder, tmp_path / "folder2", overwrite=False)
    assert (tmp_path / "folder2").is_dir()


# --- settings file -------------------------------------------------------------------------


def test_settings_round_trip_and_format(tmp_path: Path) -> None:
    assert load_settings(tmp_path) == {}
    settings = {"Test.Setting": {"a": 1}, "Test.Other": "x", "Comfy.Locale": "en"}
    save_settings(tmp_path, settings)
    assert load_settings(tmp_path) == settings
    # ComfyUI indents with 4 spaces; its captured file for these settings is 95 bytes.
    assert len((tmp_path / SETTINGS_FILE).read_bytes()) == 95


@pytest.mark.parametrize("content", ["{broken", "[1, 2]", "\xff"])
def test_unreadable_settings_mean_no_settings(tmp_path: Path, content: str) -> None:
    (tmp_path / SETTINGS_FILE).write_bytes(content.encode("latin-1"))
    assert load_settings(tmp_path) == {}


# --- delivery headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.json", "application/json"),
        ("user.css", "text/css"),
        ("a.png", "image/png"),
        ("a.txt", "text/plain"),
    ],
)
def test_safe_types_are_served_inline(name: str, content_type: str) -> None:
    headers = delivery_headers(name)
    assert headers["Content-Type"] == content_type
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Disposition" not in headers


@pytest.mark.parametrize(
    "name", ["a.html", "a.htm", "a.svg", "a.js", "a.mjs", "a.xml", "a.xhtml", "a.bin", "noext"]
)
def test_renderable_or_unknown_types_are_downloads(name: str) -> None:
    headers = delivery_headers(name)
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"] == "attachment"
    assert headers["X-Content-Type-Options"] == "nosniff"
