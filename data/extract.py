"""Safe, once-only zip extraction into the data cache."""
from __future__ import annotations

import pathlib
import posixpath
import zipfile
import zlib

from data.cache import atomic_directory


def check_members(archive: zipfile.ZipFile, zip_path: pathlib.Path) -> list[zipfile.ZipInfo]:
    """Every member of ``archive``, after refusing any whose path would land outside the target.

    zipfile.extractall silently rewrites such names ("../x" -> "x"); a crafted or broken archive
    should be reported instead, before anything is written.
    """
    members = archive.infolist()
    for member in members:
        name = member.filename
        normalized = posixpath.normpath(name.replace("\\", "/"))
        escapes = (
            name.startswith(("/", "\\"))
            or (len(name) > 1 and name[1] == ":")  # a Windows drive letter
            or normalized == ".."
            or normalized.startswith("../")
        )
        if escapes:
            raise ValueError(f"zip member {name!r} in {zip_path} escapes the extraction folder; refusing to extract")
    return members


def extract_once(zip_path: pathlib.Path, destination: pathlib.Path) -> pathlib.Path:
    """Extract ``zip_path`` into the folder ``destination`` unless it is already there.

    Extraction goes to a temporary sibling that is renamed at the end, so an interrupted run
    leaves no half-extracted ``destination`` that a later run would trust. A corrupt member (bad
    CRC, truncated data) raises ValueError naming the zip and the member.
    """
    if destination.is_dir():
        return destination
    if not zip_path.is_file():
        raise FileNotFoundError(f"zip file not found: {zip_path}")
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"not a valid zip file: {zip_path} ({error})") from None
    with archive, atomic_directory(destination) as temporary:
        members = check_members(archive, zip_path)
        print(f"Extracting {zip_path.name} ({len(members)} files) into {destination}", flush=True)
        for member in members:
            # One member at a time, so that a corrupt one can be named.
            try:
                archive.extract(member, temporary)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
                raise ValueError(
                    f"corrupt zip {zip_path}: member {member.filename!r} cannot be read ({error}); "
                    "download or copy the zip again"
                ) from None
    return destination
