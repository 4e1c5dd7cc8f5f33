"""Data files: cheap checks before a run, and the error a trial gives for a file it cannot decode.

The built-in trainables' ``check_data`` (``TrainableSpec.check_data``, called by ``expgrid
validate`` and ``expgrid run`` before anything starts) use:

* :func:`npz_arrays`: the arrays of an .npz (name → shape, dtype) read from each member's
  header, without reading the data (an .npy header is its first few hundred bytes; a compressed
  member is inflated only that far).
* :func:`check_image_headers`: every file's header decoded (PIL ``Image.open`` + ``verify``).
  That finds empty files, files that are not images and files whose header is cut or damaged.
  Every file rather than a sample, since it is cheap: the whole VeRi-layout check (listing,
  names, headers) took 0.34-0.46 s for 10,500 generated 128×128 JPEGs on the 2-core development
  machine, page cache warm (32-44 µs per image; VeRi-776's 50,000 would be about 2 s). An image whose
  header is intact but whose pixel data is cut or damaged passes (only decoding all of it
  would tell, about 5 times as long); the trial that decodes it fails naming it (:func:`unreadable_image`).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from expgrid.errors import ConfigError


def npz_arrays(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Name → (shape, dtype) of every array in the .npz at ``path``, from the headers alone.

    Raises ValueError saying why when the file is not an .npz (not a zip archive, a member
    that is not an .npy array)."""
    arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read(member)
                arrays[name] = (tuple(int(n) for n in shape), dtype)
    except zipfile.BadZipFile as e:
        raise ValueError(f"not an .npz (zip) archive: {e}") from None
    except (ValueError, OSError, EOFError, KeyError) as e:
        raise ValueError(f"not a readable .npz: {e}") from None
    return arrays


def check_image_headers(paths: Iterable[str | Path], field: str, expected: str) -> int:
    """Decode the header of every file in ``paths`` (see the module docstring); return how many.

    Raises ConfigError(``field``, ``expected`` + why, the first unreadable file) otherwise."""
    from PIL import Image

    count = 0
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as e:  # noqa: BLE001 - whatever PIL raises, the file is not a readable image
            raise ConfigError(
                field, f"{expected}: a readable image in every file", f"{path} ({_header_problem(path, e)})"
            ) from None
        count += 1
    return count


def _header_problem(path: str | Path, error: Exception) -> str:
    try:
        if Path(path).stat().st_size == 0:
            return "an empty file"
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "not an image file PIL can identify"
    return f"a damaged image header: {error}"


# torchvision's decoders prefix their errors with the C++ function and source line.
_TORCHVISION_PREFIX = re.compile(r"^\w+, \S+\.cpp:\d+, ")


def unreadable_image(path: str | Path, error: Exception) -> OSError:
    """The error a loader raises for an image file it cannot decode: it names the file, so the
    trial's error (its record, the progress line's failures, the MLflow tag) does too."""
    reason = _TORCHVISION_PREFIX.sub(
        "", str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    )
    return OSError(f"cannot decode image {path}: {reason}")
