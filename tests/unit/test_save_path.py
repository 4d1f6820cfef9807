"""Save-node file naming: placeholders, subfolders, numbering, and refusing to leave the output folder."""

import os
import time
from pathlib import Path

import pytest

from comfyserve.save_path import (
    OUTSIDE_OUTPUT,
    CounterIndex,
    SavePath,
    expand_placeholders,
    get_save_image_path,
    next_counter,
    numbered_filename,
    split_prefix,
)

NOW = time.struct_time((2026, 3, 4, 5, 6, 7, 2, 63, 0))


@pytest.fixture
def output(tmp_path: Path) -> Path:
    folder = tmp_path / "output"
    folder.mkdir()
    return folder


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def test_placeholders_width_height_and_date_are_filled_in():
    prefix = "%width%x%height%_%year%-%month%-%day%_%hour%%minute%%second%"
    assert expand_placeholders(prefix, 8, 16, NOW) == "8x16_2026-03-04_050607"


def test_batch_num_and_unknown_placeholders_are_left_alone():
    assert expand_placeholders("bn_%batch_num%_%date:yyyy%", 1, 1, NOW) == "bn_%batch_num%_%date:yyyy%"
    assert expand_placeholders("plain", 1, 1, NOW) == "plain"


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("ComfyUI", ("", "ComfyUI")),
        ("a/b", ("a", "b")),
        ("a/b/c", ("a/b", "c")),
        ("trailing/", ("", "trailing")),
        ("a//b/./c", ("a/b", "c")),
        ("a/../b", ("", "b")),
        ("", ("", "ComfyUI")),
        (".", ("", "ComfyUI")),
    ],
)
def test_prefix_splits_into_subfolder_and_stem(prefix, expected):
    assert split_prefix(prefix) == expected


def test_counter_is_one_in_an_empty_or_missing_folder(output):
    assert next_counter(output, "num") == 1
    assert next_counter(output / "missing", "num") == 1


def test_counter_is_one_past_the_highest_number_of_that_stem(output):
    touch(output, "num_00001_.png", "num_00003_.png", "num_00010_.webp", "other_00050_.png",
          "numx_00070_.png", "num_abc_.png", "num_7.png", "num_00020")
    # num_00020 (no extension) counts like ComfyUI's int() of the part before the next "_";
    # num_7.png does not ("7.png" is not a number).
    assert next_counter(output, "num") == 21


def test_stem_with_regex_characters_is_matched_literally(output):
    touch(output, "a+b_00004_.png", "aab_00009_.png")
    assert next_counter(output, "a+b") == 5


def test_batch_num_files_count_towards_the_counter(output):
    touch(output, "bn_0_00001_.png", "bn_1_00002_.png", "bn_2_00003_.png")
    # ComfyUI restarts at 1 here and overwrites bn_0_00001_.png.
    assert next_counter(output, "bn_%batch_num%") == 4


def test_save_path_in_the_output_folder(output):
    touch(output, "meta_00002_.png")
    path = get_save_image_path("meta", output, 8, 8)
    assert path == SavePath(str(output.resolve()), "meta", 3, "", "meta")


def test_subfolder_is_created_and_numbered_separately(output):
    touch(output, "b_00005_.png")
    path = get_save_image_path("a/b", str(output))
    assert (path.full_output_folder, path.filename, path.counter, path.subfolder) == (
        str(output.resolve() / "a"), "b", 1, "a")
    assert (output / "a").is_dir()


def test_trailing_slash_prefix_keeps_counting(output):
    touch(output, "trailing_00001_.png")
    path = get_save_image_path("trailing/", output)
    assert (path.filename, path.counter, path.subfolder) == ("trailing", 2, "")


def test_placeholders_are_expanded_in_the_returned_prefix(output):
    path = get_save_image_path("sizes/%width%x%height%", output, 640, 480)
    assert (path.subfolder, path.filename, path.filename_prefix) == ("sizes", "640x480", "sizes/640x480")


@pytest.mark.parametrize("prefix", ["../escape", "a/../../x", "..", "/tmp/abs/x", "sub/../../.."])
def test_prefix_leaving_the_output_folder_is_refused(output, prefix):
    with pytest.raises(Exception, match=OUTSIDE_OUTPUT.replace(".", r"\.")) as caught:
        get_save_image_path(prefix, output)
    assert type(caught.value) is Exception  # ComfyUI's exception_type "Exception"
    assert not (output.parent / "escape").exists()


def test_symlink_out_of_the_output_folder_is_refused(output, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, output / "link")
    with pytest.raises(Exception, match="outside the output folder"):
        get_save_image_path("link/x", output)


def test_nul_character_is_refused(output):
    with pytest.raises(ValueError, match="NUL"):
        get_save_image_path("bad\x00name", output)


def test_numbered_filename_fills_batch_number_and_pads_counter():
    assert numbered_filename("bn_%batch_num%", 2, 3) == "bn_2_00003_.png"
    assert numbered_filename("ComfyUI", 0, 123456, "webp") == "ComfyUI_123456_.webp"


# -- the counter index: no listing per save, yet every outside change is seen -----------------
def test_own_saves_do_not_relist_the_folder(tmp_path, monkeypatch):
    index = CounterIndex()
    listings = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listings.append(p) or real_listdir(p))
    for expected in range(1, 6):
        counter = index.next_counter(tmp_path, "img")
        assert counter == expected
        name = f"img_{counter:05}_.png"
        (tmp_path / name).write_bytes(b"x")
        index.saved(tmp_path, "img", [name], counter)
    assert len(listings) == 1


def test_files_added_or_removed_by_others_are_seen(tmp_path):
    index = CounterIndex()
    assert index.next_counter(tmp_path, "img") == 1
    (tmp_path / "img_00001_.png").write_bytes(b"x")
    index.saved(tmp_path, "img", ["img_00001_.png"], 1)
    (tmp_path / "img_00041_.png").write_bytes(b"x")  # someone copies a file in
    assert index.next_counter(tmp_path, "img") == 42
    for path in tmp_path.iterdir():
        path.unlink()
    assert index.next_counter(tmp_path, "img") == 1


def test_other_stems_are_recounted_after_a_save(tmp_path):
    index = CounterIndex()
    assert index.next_counter(tmp_path, "a") == 1
    assert index.next_counter(tmp_path, "a_b") == 1
    (tmp_path / "a_00003_.png").write_bytes(b"x")
    index.saved(tmp_path, "a", ["a_00003_.png"], 3)
    assert index.next_counter(tmp_path, "a") == 4
    assert index.next_counter(tmp_path, "a_b") == 1
