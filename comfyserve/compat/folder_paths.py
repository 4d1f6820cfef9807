"""`folder_paths` for custom nodes: ComfyUI's folder API over the running server's folders.

Everything reads `comfyserve.runtime.folders()` at call time, so packs always see the server's
base, input/output/temp/user folders and model folders (extra_model_paths.yaml included).
`folder_names_and_paths` is a live view: reading it shows the current model folders, and
assigning to it, or appending to a folder's path list / extension set, changes the server's
folders (what `/models`, `/object_info` combos and the model loaders use).

Module attributes ComfyUI keeps as globals (`models_dir`, `base_path`, `output_directory`,
`input_directory`, `temp_directory`, `user_directory`) are computed on access.

Differences from ComfyUI, all toward safety: `get_full_path` and the annotated-path helpers go
through `paths.safe_join`, so a name that leads out of its folder finds nothing (ComfyUI
strips leading `..` or joins blindly); `get_save_image_path` is comfyserve's (see save_path).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Collection, Iterable, Iterator, MutableMapping, MutableSequence, MutableSet
from pathlib import Path
from typing import Any

from comfyserve import runtime
from comfyserve.files.annotated import split_annotation
from comfyserve.paths import (
    LEGACY_FOLDER_NAMES,
    MODEL_EXTENSIONS,
    Folders,
    ModelFolder,
    PathEscape,
    safe_join,
)
from comfyserve.save_path import get_save_image_path

__all__ = [
    "add_model_folder_path",
    "annotated_filepath",
    "exists_annotated_filepath",
    "filter_files_content_types",
    "filter_files_extensions",
    "folder_names_and_paths",
    "get_annotated_filepath",
    "get_directory_by_type",
    "get_filename_list",
    "get_folder_paths",
    "get_full_path",
    "get_full_path_or_raise",
    "get_input_directory",
    "get_output_directory",
    "get_save_image_path",
    "get_temp_directory",
    "get_user_directory",
    "map_legacy",
    "supported_pt_extensions",
]

supported_pt_extensions: set[str] = set(MODEL_EXTENSIONS)

# Extension → content type ("image", "video", …), as ComfyUI seeds it (webp is not in every mimetypes db).
_content_types: dict[str, str] = {"webp": "image"}


def _folders() -> Folders:
    return runtime.folders()


def __getattr__(name: str) -> Any:
    # ComfyUI's module globals, read from the running server.
    folders = _folders()
    values = {
        "base_path": folders.base,
        "models_dir": folders.models_dir,
        "output_directory": folders.output,
        "input_directory": folders.input,
        "temp_directory": folders.temp,
        "user_directory": folders.user,
    }
    if name in values:
        return str(values[name])
    raise AttributeError(f"module 'folder_paths' has no attribute {name!r}")


# -- the live folder table ---------------------------------------------------------------------


class FolderPathList(MutableSequence[str]):
    """The directories of one model folder, as strings; changes go to the server's folder."""

    def __init__(self, folders: Folders, folder: ModelFolder) -> None:
        self._folders = folders
        self._folder = folder

    def _changed(self) -> None:
        self._folders.forget_listing(self._folder.name)

    def __getitem__(self, index):  # noqa: ANN001, ANN204 - int or slice, like list
        if isinstance(index, slice):
            return [str(p) for p in self._folder.paths[index]]
        return str(self._folder.paths[index])

    def __setitem__(self, index, value) -> None:  # noqa: ANN001
        if isinstance(index, slice):
            self._folder.paths[index] = [Path(v) for v in value]
        else:
            self._folder.paths[index] = Path(value)
        self._changed()

    def __delitem__(self, index) -> None:  # noqa: ANN001
        del self._folder.paths[index]
        self._changed()

    def __len__(self) -> int:
        return len(self._folder.paths)

    def insert(self, index: int, value: str) -> None:
        self._folder.paths.insert(index, Path(value))
        self._changed()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, FolderPathList)):
            return list(self) == list(other)
        return NotImplemented

    def __add__(self, other: Iterable[str]) -> list[str]:
        return list(self) + list(other)

    def __radd__(self, other: Iterable[str]) -> list[str]:
        return list(other) + list(self)

    def __repr__(self) -> str:
        return repr(list(self))


class FolderExtensions(MutableSet[str]):
    """The file extensions of one model folder; changes go to the server's folder."""

    def __init__(self, folders: Folders, folder: ModelFolder) -> None:
        self._folders = folders
        self._folder = folder

    def __contains__(self, value: object) -> bool:
        return value in self._folder.extensions

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._folder.extensions))

    def __len__(self) -> int:
        return len(self._folder.extensions)

    def add(self, value: str) -> None:
        self._folder.extensions = self._folder.extensions | {value}
        self._folders.forget_listing(self._folder.name)

    def discard(self, value: str) -> None:
        self._folder.extensions = self._folder.extensions - {value}
        self._folders.forget_listing(self._folder.name)

    def update(self, *others: Iterable[str]) -> None:
        for other in others:
            self |= set(other)

    def __repr__(self) -> str:
        return repr(set(self._folder.extensions))


class FolderNamesAndPaths(MutableMapping[str, tuple[list[str], set[str]]]):
    """ComfyUI's `folder_names_and_paths`: folder name → (directories, extensions), live."""

    def __getitem__(self, name: str) -> tuple[FolderPathList, FolderExtensions]:
        folders = _folders()
        folder = folders.model_folders[name]
        return FolderPathList(folders, folder), FolderExtensions(folders, folder)

    def __setitem__(self, name: str, value: tuple[Iterable[str], Collection[str]]) -> None:
        paths, extensions = value
        folders = _folders()
        folders.model_folders[name] = ModelFolder(name, [Path(p) for p in paths], frozenset(extensions))
        folders.forget_listing(name)

    def __delitem__(self, name: str) -> None:
        folders = _folders()
        del folders.model_folders[name]
        folders.forget_listing(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(_folders().model_folders))

    def __len__(self) -> int:
        return len(_folders().model_folders)

    def __repr__(self) -> str:
        return repr({name: (list(paths), set(exts)) for name, (paths, exts) in self.items()})


folder_names_and_paths = FolderNamesAndPaths()


def map_legacy(folder_name: str) -> str:
    """Old folder names (`unet`, `clip`) → today's."""
    return LEGACY_FOLDER_NAMES.get(folder_name, folder_name)


def _model_folder(folder_name: str) -> ModelFolder:
    folder = _folders().model_folder(folder_name)
    if folder is None:
        raise KeyError(folder_name)
    return folder


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a directory to a model folder (first when `is_default`); a new name lists every file."""
    folders = _folders()
    name = map_legacy(folder_name)
    if name not in folders.model_folders:
        folders.model_folders[name] = ModelFolder(name, [], frozenset())
    folders.add_model_path(name, Path(full_folder_path), first=is_default)


def get_folder_paths(folder_name: str) -> list[str]:
    """A copy of a model folder's directories; KeyError for an unknown folder, as in ComfyUI."""
    return [str(p) for p in _model_folder(folder_name).paths]


def get_filename_list(folder_name: str) -> list[str]:
    """Sorted file names (relative, `/`-separated) in a model folder; KeyError for an unknown folder."""
    folder = _model_folder(folder_name)
    return _folders().filename_list(folder.name)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The file `filename` of a model folder, or None (also for a name that leaves the folder)."""
    path = _folders().full_path(folder_name, filename)
    return str(path) if path is not None else None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


def filter_files_extensions(files: Collection[str], extensions: Collection[str]) -> list[str]:
    """Sorted `files` whose extension is in `extensions` (all of them when `extensions` is empty)."""
    return sorted(f for f in files if not extensions or os.path.splitext(f)[1].lower() in extensions)


def filter_files_content_types(files: list[str], content_types: Collection[str]) -> list[str]:
    """The files whose guessed MIME type is of one of `content_types` ("image", "video", "audio", …)."""
    result = []
    for name in files:
        extension = name.rsplit(".", 1)[-1]
        kind = _content_types.get(extension)
        if kind is None:
            mime, _ = mimetypes.guess_type(name, strict=False)
            if not mime:
                continue
            kind = _content_types[extension] = mime.split("/")[0]
        if kind in content_types:
            result.append(name)
    return result


# -- input / output / temp / user -------------------------------------------------------------


def get_input_directory() -> str:
    return str(_folders().input)


def get_output_directory() -> str:
    return str(_folders().output)


def get_temp_directory() -> str:
    return str(_folders().temp)


def get_user_directory() -> str:
    return str(_folders().user)


def get_directory_by_type(type_name: str) -> str | None:
    """`input`, `output` or `temp` → its folder; anything else → None."""
    path = _folders().directory_by_type(type_name)
    return str(path) if path is not None else None


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """`"a.png [output]"` → `("a.png", <output folder>)`; no annotation → `(name, None)`."""
    bare, kind = split_annotation(name)
    return bare, (get_directory_by_type(kind) if kind else None)


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """The path of an annotated name: in its annotated folder, else `default_dir`, else input.

    Raises ValueError when the name leads out of that folder.
    """
    bare, base = annotated_filepath(name)
    base = base or default_dir or get_input_directory()
    try:
        return str(safe_join(base, bare))
    except PathEscape as exc:
        raise ValueError(f"{name!r} leads outside its folder") from exc


def exists_annotated_filepath(name: str) -> bool:
    bare, base = annotated_filepath(name)
    try:
        return safe_join(base or get_input_directory(), bare).exists()
    except PathEscape:
        return False
