"""`folder_paths` for custom nodes: ComfyUI's API over the server's folders, live."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyserve.compat import folder_paths
from comfyserve.paths import Folders
from tests.unit.compat_fixtures import folders  # noqa: F401 - fixture


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_directories_follow_the_running_server(folders: Folders):  # noqa: F811
    assert folder_paths.get_input_directory() == str(folders.input)
    assert folder_paths.get_output_directory() == str(folders.output)
    assert folder_paths.get_temp_directory() == str(folders.temp)
    assert folder_paths.get_user_directory() == str(folders.user)
    assert folder_paths.get_directory_by_type("output") == str(folders.output)
    assert folder_paths.get_directory_by_type("models") is None
    # ComfyUI's module globals, computed on access.
    assert folder_paths.models_dir == str(folders.models_dir)
    assert folder_paths.base_path == str(folders.base)
    assert folder_paths.output_directory == str(folders.output)
    from comfyserve.compat.folder_paths import models_dir

    assert models_dir == str(folders.models_dir)
    with pytest.raises(AttributeError):
        folder_paths.no_such_global  # noqa: B018


def test_model_files_are_listed_and_found(folders: Folders):  # noqa: F811
    touch(folders.models_dir / "checkpoints" / "b.safetensors")
    touch(folders.models_dir / "checkpoints" / "sub" / "a.ckpt")
    touch(folders.models_dir / "checkpoints" / "readme.txt")
    assert folder_paths.get_filename_list("checkpoints") == ["b.safetensors", "sub/a.ckpt"]
    full = folder_paths.get_full_path("checkpoints", "sub/a.ckpt")
    assert full == str(folders.models_dir / "checkpoints" / "sub" / "a.ckpt")
    assert folder_paths.get_full_path_or_raise("checkpoints", "b.safetensors").endswith("b.safetensors")
    assert folder_paths.get_full_path("checkpoints", "missing.ckpt") is None
    assert folder_paths.get_full_path("checkpoints", "../../etc/passwd") is None
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        folder_paths.get_full_path_or_raise("checkpoints", "missing.ckpt")
    # Legacy names, and unknown folders as ComfyUI treats them.
    assert folder_paths.get_folder_paths("unet") == folder_paths.get_folder_paths("diffusion_models")
    with pytest.raises(KeyError):
        folder_paths.get_filename_list("no_such_folder")
    with pytest.raises(KeyError):
        folder_paths.get_folder_paths("no_such_folder")
    assert folder_paths.get_full_path("no_such_folder", "x") is None


def test_add_model_folder_path_changes_the_servers_folders(folders: Folders, tmp_path: Path):  # noqa: F811
    extra = tmp_path / "elsewhere"
    touch(extra / "c.safetensors")
    folder_paths.get_filename_list("checkpoints")  # fill the listing cache first
    folder_paths.add_model_folder_path("checkpoints", str(extra))
    assert folder_paths.get_folder_paths("checkpoints")[-1] == str(extra)
    assert "c.safetensors" in folder_paths.get_filename_list("checkpoints")
    assert folders.filename_list("checkpoints") == folder_paths.get_filename_list("checkpoints")
    folder_paths.add_model_folder_path("checkpoints", str(tmp_path / "first"), is_default=True)
    assert folder_paths.get_folder_paths("checkpoints")[0] == str(tmp_path / "first")
    # A new folder name lists every file, as in ComfyUI.
    ipadapter = tmp_path / "ipadapter"
    touch(ipadapter / "model.bin")
    touch(ipadapter / "notes.md")
    folder_paths.add_model_folder_path("ipadapter", str(ipadapter))
    assert folder_paths.get_filename_list("ipadapter") == ["model.bin", "notes.md"]
    assert "ipadapter" in folders.model_folders


def test_folder_names_and_paths_is_a_live_view(folders: Folders, tmp_path: Path):  # noqa: F811
    table = folder_paths.folder_names_and_paths
    assert "checkpoints" in table and "unet" not in table
    paths, extensions = table["checkpoints"]
    assert paths[0] == str(folders.models_dir / "checkpoints")
    assert ".safetensors" in extensions
    assert list(table) == list(folders.model_folders)

    # Appending to the list / adding an extension changes the server's folder.
    gguf_dir = tmp_path / "gguf"
    touch(gguf_dir / "m.gguf")
    folder_paths.get_filename_list("checkpoints")
    paths.append(str(gguf_dir))
    extensions.add(".gguf")
    assert folders.model_folders["checkpoints"].paths[-1] == gguf_dir
    assert "m.gguf" in folder_paths.get_filename_list("checkpoints")
    extensions.discard(".gguf")
    assert "m.gguf" not in folder_paths.get_filename_list("checkpoints")

    # Assigning a whole entry, the way packs register their own folders.
    table["unet_gguf"] = ([str(gguf_dir)], {".gguf"})
    assert folder_paths.get_filename_list("unet_gguf") == ["m.gguf"]
    assert folders.model_folder("unet_gguf").extensions == frozenset({".gguf"})
    current = table["unet_gguf"]
    table["unet_gguf"] = (current[0], set(current[1]) | {".sft"})
    assert table["unet_gguf"][1] == {".gguf", ".sft"}
    assert list(table["unet_gguf"][0]) == [str(gguf_dir)]
    assert table["unet_gguf"][0] == [str(gguf_dir)]
    assert table["unet_gguf"][0][:] == [str(gguf_dir)]
    del table["unet_gguf"]
    assert "unet_gguf" not in folders.model_folders


def test_annotated_paths(folders: Folders):  # noqa: F811
    touch(folders.input / "in.png")
    touch(folders.output / "out.png")
    assert folder_paths.get_annotated_filepath("in.png") == str(folders.input / "in.png")
    assert folder_paths.get_annotated_filepath("out.png [output]") == str(folders.output / "out.png")
    assert folder_paths.get_annotated_filepath("t.png [temp]") == str(folders.temp / "t.png")
    assert folder_paths.get_annotated_filepath("x.png", str(folders.output)) == str(folders.output / "x.png")
    assert folder_paths.exists_annotated_filepath("in.png")
    assert folder_paths.exists_annotated_filepath("out.png [output]")
    assert not folder_paths.exists_annotated_filepath("out.png [input]")
    assert not folder_paths.exists_annotated_filepath("../../etc/passwd")
    with pytest.raises(ValueError, match="outside"):
        folder_paths.get_annotated_filepath("../secret.png")
    assert folder_paths.annotated_filepath("a.png [output]") == ("a.png", str(folders.output))
    assert folder_paths.annotated_filepath("a.png") == ("a.png", None)


def test_save_image_path_is_comfyserves(folders: Folders):  # noqa: F811
    touch(folders.output / "shots" / "cat_00004_.png")
    full, stem, counter, subfolder, prefix = folder_paths.get_save_image_path("shots/cat", str(folders.output), 8, 8)
    assert (full, stem, counter, subfolder, prefix) == (str(folders.output / "shots"), "cat", 5, "shots", "shots/cat")
    with pytest.raises(Exception, match="outside the output folder"):
        folder_paths.get_save_image_path("../escape", str(folders.output))


def test_file_filters():
    files = ["a.png", "b.mp4", "c.wav", "d.txt", "e.webp", "noext"]
    assert folder_paths.filter_files_content_types(files, ["image"]) == ["a.png", "e.webp"]
    assert folder_paths.filter_files_content_types(files, ["video", "audio"]) == ["b.mp4", "c.wav"]
    assert folder_paths.filter_files_extensions(["b.CKPT", "a.pt", "c.txt"], {".ckpt", ".pt"}) == ["a.pt", "b.CKPT"]
    assert folder_paths.filter_files_extensions(["b", "a"], []) == ["a", "b"]
    assert ".safetensors" in folder_paths.supported_pt_extensions
    assert isinstance(folder_paths.supported_pt_extensions, set)
