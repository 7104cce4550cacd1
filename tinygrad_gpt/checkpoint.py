"""Save and load checkpoints: named NumPy arrays plus JSON metadata, safely.

A checkpoint is one ordinary ``.npz`` archive (a zip of ``.npy`` files, readable
by ``np.load``). Beside the arrays it holds one extra entry, ``__metadata__``: a
``uint8`` array whose bytes are this UTF-8 JSON document (the *envelope*)::

    {"format": "tinygrad_gpt-checkpoint",   # what kind of file this is
     "version": 1,                          # which layout of that kind
     "sha256": "9f86d08...",                # over the metadata and every array
     "metadata": {...}}                     # the caller's own JSON, returned as given

This module knows nothing about models: it stores a flat ``dict[str, ndarray]``
(for a model, its ``state_dict``) and a JSON-serializable ``dict``.

Three promises, and how each is kept:

* **A stranger's checkpoint cannot run code.** Loading goes through
  ``np.load(path, allow_pickle=False)`` only, and every entry's ``.npy`` header is
  read before its data, so an object array (pickled Python objects) is refused by
  name before NumPy is even asked to read it. A raw pickle file is recognised by
  its first byte and refused too.
* **A crash never destroys the previous checkpoint.** ``save_checkpoint`` writes
  a temporary file in the *same* directory, flushes it to disk with ``fsync``,
  then renames it over the target with ``os.replace``, which is atomic: a reader
  sees the old file or the new one, never half of one.
* **A damaged file is never loaded silently.** The zip format's CRC-32 catches
  most damage; the SHA-256 in the envelope catches the rest (and a file edited
  with valid zip checksums). Every failure to load is a ``CheckpointError`` with
  one sentence naming the file and what is wrong with it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import zipfile
import zlib

import numpy as np

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "METADATA_KEY",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "tinygrad_gpt-checkpoint"
CHECKPOINT_VERSION = 1  # bump when the layout changes; load refuses any other version
METADATA_KEY = "__metadata__"  # reserved entry name: no array may use it

# Array dtypes a checkpoint stores, by dtype.kind: bool, signed and unsigned
# integers, floats, complex, bytes and str. Object arrays ("O") would need pickle;
# structured dtypes are left out so every header is a plain, version 1.0 ``.npy``.
_STORABLE_KINDS = "biufcSU"

# The ``.npy`` header versions the loader parses (3.0 only arises for structured
# dtypes with non-Latin-1 field names, which a checkpoint never holds).
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}

# What reading damaged bytes can raise: zipfile's BadZipFile (bad CRC-32, bad
# headers), RuntimeError (a damaged local header that claims encryption or
# "patched data"), EOFError and OSError (offsets past the end); zlib.error from
# the decompressor of a deflated entry; ValueError from NumPy's .npy header
# parser. All of them mean "this file is not an intact checkpoint".
_DAMAGE_ERRORS = (zipfile.BadZipFile, zlib.error, RuntimeError, EOFError, OSError, ValueError)

# Why a temporary file could not be created in the output directory, by errno.
_DIRECTORY_PROBLEMS = {
    errno.ENOENT: "does not exist",
    errno.ENOTDIR: "is not a directory",
    errno.EACCES: "is not writable",
    errno.EPERM: "is not writable",
    errno.EROFS: "is on a read-only file system",
}


class CheckpointError(ValueError):
    """A file cannot be loaded as a checkpoint.

    Raised for a missing, unreadable, truncated, corrupted or unsafe file, and
    for a file that is not a tinygrad_gpt checkpoint of a version this build
    reads. The message names the file and says what is wrong.
    """


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (both a CheckpointError and a FileNotFoundError)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; any previous file at the path is untouched.

    An ``OSError`` so that ``except OSError`` catches it; ``errno`` is that of
    the underlying failure (e.g. ``errno.ENOSPC`` for a full disk).
    """


# --------------------------------------------------------------------------- save


def save_checkpoint(path, arrays: dict[str, np.ndarray], metadata: dict) -> None:
    """Write ``arrays`` and ``metadata`` to the checkpoint file ``path``, atomically.

    Args:
        path: the file to write (``str`` or path-like), used exactly as given
            (no ``.npz`` is appended). An existing file there is replaced only
            once the new one is completely on disk.
        arrays: array names to ``np.ndarray``. Names are non-empty strings
            without NUL characters or backslashes (a backslash would turn into a
            path separator when the zip is read on Windows), and not
            ``METADATA_KEY``. Dtypes: bool, integer, float, complex, bytes or str.
        metadata: a JSON-serializable dict, returned by ``load_checkpoint`` as
            JSON gives it back (tuples come back as lists, non-string keys as
            strings; NaN and infinities survive, as Python's ``json`` allows).

    A process killed in the middle of a save (SIGKILL, power cut) cannot clean
    up: it leaves a hidden ``.<name>.<random>.tmp`` file beside ``path``, which
    is safe to delete. The checkpoint at ``path`` itself is the old one, whole.

    Raises:
        TypeError: ``arrays`` or ``metadata`` is of the wrong type.
        ValueError: an array name or dtype is not allowed.
        CheckpointWriteError: the output directory is missing or not writable,
            or writing failed (e.g. a full disk); nothing at ``path`` changed.
    """
    path = os.fspath(path)
    _check_arrays(arrays)
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    envelope = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "sha256": _checksum(arrays, metadata),
        "metadata": metadata,
    }
    envelope_bytes = _encode_envelope(envelope)  # (N,) uint8
    entries = {METADATA_KEY: envelope_bytes, **arrays}

    directory = os.path.dirname(os.path.abspath(path))
    temp_path, temp_fd = _create_temp_file(path, directory)
    try:
        with os.fdopen(temp_fd, "wb") as temp_file:
            _write_npz(temp_file, entries)
            # Push the bytes from the OS cache to the disk *before* the rename:
            # otherwise a power cut could leave the new name pointing at a file
            # whose contents never reached the disk.
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_path, path)  # atomic: readers see the old file or the new one
    except BaseException as exc:
        # Whatever went wrong (a full disk, Ctrl-C), the half-written temporary
        # file goes and the file at `path` was never touched.
        _remove_if_present(temp_path)
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise _write_error(
                f"could not write checkpoint {path!r} ({reason}); "
                "any previous file there is unchanged",
                exc.errno,
            ) from exc
        raise
    _fsync_directory(directory)


def _check_arrays(arrays) -> None:
    """Raise TypeError/ValueError unless ``arrays`` is a valid name -> ndarray dict."""
    if not isinstance(arrays, dict):
        raise TypeError(
            f"arrays must be a dict of name -> numpy.ndarray, got {type(arrays).__name__}"
        )
    for name, array in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"array names must be str, got {name!r} of type {type(name).__name__}")
        if name == METADATA_KEY:
            raise ValueError(
                f"array name {METADATA_KEY!r} is reserved for the checkpoint's metadata; "
                "rename that array"
            )
        if not name or "\0" in name or "\\" in name or not _is_utf8_encodable(name):
            raise ValueError(
                f"array name {name!r} must be a non-empty, UTF-8 encodable string "
                "without NUL characters or backslashes"
            )
        if not isinstance(array, np.ndarray):
            raise TypeError(
                f"arrays[{name!r}] must be a numpy.ndarray, got {type(array).__name__}"
            )
        if array.dtype.kind not in _STORABLE_KINDS or array.dtype.names is not None:
            raise ValueError(
                f"arrays[{name!r}] has dtype {array.dtype}, but a checkpoint stores only "
                "bool, integer, float, complex, bytes or str arrays (object arrays "
                "would need pickle, which is unsafe to load)"
            )


def _is_utf8_encodable(text: str) -> bool:
    """True unless ``text`` holds lone surrogates, which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode_envelope(envelope: dict) -> np.ndarray:
    """The envelope as UTF-8 JSON bytes in a ``(N,) uint8`` array."""
    try:
        text = json.dumps(envelope, ensure_ascii=False)
    except (TypeError, ValueError) as exc:  # an unsupported type; a circular reference
        raise type(exc)(f"metadata must be JSON-serializable ({exc})") from exc
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)  # (N,)


def _create_temp_file(path: str, directory: str) -> tuple[str, int]:
    """Create an empty temporary file next to ``path``; return its name and descriptor.

    Not ``tempfile.mkstemp``: that creates the file with mode 0600, so every
    checkpoint would be private to its owner. ``os.open`` with mode 0666 lets the
    umask decide, exactly as for ``np.save``. ``O_EXCL`` makes creation fail
    rather than reuse an existing file; 64 random bits make a clash implausible.
    The name keeps at most 100 characters of the target's, to stay within the
    file system's limit on name length.
    """
    temp_name = f".{os.path.basename(path)[:100]}.{os.urandom(8).hex()}.tmp"
    temp_path = os.path.join(directory, temp_name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(temp_path, flags, 0o666)
    except OSError as exc:
        problem = _DIRECTORY_PROBLEMS.get(exc.errno)
        if problem is None:
            problem = f"cannot hold a new file ({exc.strerror or exc})"
        raise _write_error(
            f"cannot save checkpoint {path!r}: the output directory {directory!r} {problem}",
            exc.errno,
        ) from exc
    return temp_path, fd


def _write_npz(file, entries: dict[str, np.ndarray]) -> None:
    """Write ``entries`` to the open binary ``file`` as an uncompressed ``.npz``.

    This is what ``np.savez`` does, written out: ``np.savez(file, **entries)``
    would break on an array named like one of its own parameters ("file",
    "allow_pickle"). ``allow_pickle=False`` is a second guard behind the dtype
    check in ``_check_arrays``.
    """
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in entries.items():
            # force_zip64: the entry's size is unknown when it is opened, and an
            # array may pass the 4 GiB limit of plain zip headers.
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _write_error(message: str, error_number: int | None) -> CheckpointWriteError:
    """A CheckpointWriteError with ``message`` that keeps the cause's errno."""
    error = CheckpointWriteError(message)
    error.errno = error_number
    return error


def _remove_if_present(file_path: str) -> None:
    try:
        os.remove(file_path)
    except FileNotFoundError:
        pass


def _fsync_directory(directory: str) -> None:
    """Flush the directory entry of the rename to disk, where the OS allows it.

    On POSIX a rename lives in the directory, so without this a power cut
    just after ``save_checkpoint`` returns could still bring back the old file.
    Windows cannot open a directory this way; there the rename is left to the OS.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the data itself is safe
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- load


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by ``save_checkpoint``; never unpickles anything.

    Returns:
        ``(arrays, metadata)``: every array fully read into memory (the file can
        be replaced or deleted afterwards), and the caller's metadata dict.

    Raises:
        CheckpointNotFoundError: there is no file at ``path``.
        CheckpointError: the file cannot be read, is truncated or corrupted
            (including a checksum mismatch), holds pickled objects, is not a
            tinygrad_gpt checkpoint, or has a format version this build does not read.
    """
    path = os.fspath(path)
    _check_looks_like_zip(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            members = _npy_members(path, npz)
            envelope = _read_envelope(path, npz, members)
            arrays = {
                name: _read_member(path, npz, name, info)
                for name, info in members.items()
                if name != METADATA_KEY
            }
    except CheckpointError:
        raise
    except _DAMAGE_ERRORS as exc:
        raise CheckpointError(
            f"checkpoint {path!r} is truncated or corrupted ({type(exc).__name__}: {exc})"
        ) from exc
    if _checksum(arrays, envelope["metadata"]) != envelope["sha256"]:
        raise CheckpointError(
            f"checkpoint {path!r} is corrupted: checksum mismatch "
            "(its arrays or metadata are not the ones that were saved)"
        )
    return arrays, envelope["metadata"]


def _check_looks_like_zip(path: str) -> None:
    """Raise CheckpointError unless ``path`` is a readable file starting like a zip.

    Looking at the first bytes ourselves gives a precise message for the usual
    wrong files (a pickle, a lone ``.npy``, text), where ``np.load`` would only
    say that it refuses to unpickle.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(6)
    except FileNotFoundError as exc:
        error = CheckpointNotFoundError(f"checkpoint file {path!r} does not exist")
        error.errno = errno.ENOENT
        raise error from exc
    except IsADirectoryError as exc:
        raise CheckpointError(f"checkpoint path {path!r} is a directory, not a file") from exc
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint file {path!r} cannot be read ({exc.strerror or exc})"
        ) from exc

    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # a zip entry; an empty zip
        return
    if not head:
        problem = "is empty"
    elif head.startswith(b"\x80"):  # pickle protocol 2 and later open with PROTO (0x80)
        problem = "is a Python pickle, which is refused because loading one can run code"
    elif head.startswith(np.lib.format.MAGIC_PREFIX):
        problem = "is a single .npy array, not a checkpoint archive"
    else:
        problem = "is not a checkpoint (it is not an .npz archive)"
    raise CheckpointError(f"checkpoint file {path!r} {problem}")


def _npy_members(path: str, npz) -> dict[str, zipfile.ZipInfo]:
    """Map each entry's array name to its zip entry, checking each can be read plainly."""
    members = {}
    for info in npz.zip.infolist():
        if not info.filename.endswith(".npy"):
            raise CheckpointError(
                f"checkpoint {path!r} is not a tinygrad_gpt checkpoint: "
                f"its entry {info.filename!r} is not a .npy array"
            )
        # Only the methods np.savez and np.savez_compressed use. Refusing the
        # rest up front also refuses damage that flips an entry to encrypted or
        # to a compressor whose errors are not in _DAMAGE_ERRORS.
        encrypted = info.flag_bits & 0x1
        if encrypted or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"checkpoint {path!r} is corrupted: entry {info.filename!r} is encrypted "
                "or uses an unsupported compression method"
            )
        members[info.filename[: -len(".npy")]] = info
    return members


def _read_envelope(path: str, npz, members: dict[str, zipfile.ZipInfo]) -> dict:
    """Read, parse and check the ``__metadata__`` envelope; return it."""
    if METADATA_KEY not in members:
        raise CheckpointError(
            f"file {path!r} is not a tinygrad_gpt checkpoint: it has no {METADATA_KEY!r} entry"
        )
    raw = _read_member(path, npz, METADATA_KEY, members[METADATA_KEY])  # (N,) uint8
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(
            f"checkpoint {path!r} has a {METADATA_KEY!r} entry that is not a 1-D uint8 byte array"
        )
    try:
        envelope = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON; absurdly deep nesting
        raise CheckpointError(f"checkpoint {path!r} has metadata that is not valid JSON ({exc})") from exc

    if not isinstance(envelope, dict) or envelope.get("format") != CHECKPOINT_FORMAT:
        found = envelope.get("format") if isinstance(envelope, dict) else None
        raise CheckpointError(
            f"file {path!r} is not a tinygrad_gpt checkpoint: its metadata names format "
            f"{found!r}, expected {CHECKPOINT_FORMAT!r}"
        )
    version = envelope.get("version")
    if version != CHECKPOINT_VERSION or type(version) is not int:
        if type(version) is int:
            age = "a newer" if version > CHECKPOINT_VERSION else "an older"
            written_by = f" (written by {age} tinygrad_gpt)"
        else:
            written_by = ""
        raise CheckpointError(
            f"checkpoint {path!r} has format version {version!r}{written_by}, "
            f"but this build of tinygrad_gpt reads version {CHECKPOINT_VERSION} only"
        )
    if not isinstance(envelope.get("sha256"), str) or not isinstance(envelope.get("metadata"), dict):
        raise CheckpointError(
            f"checkpoint {path!r} is corrupted: its metadata lacks a 'sha256' string "
            "or a 'metadata' dict"
        )
    return envelope


def _read_member(path: str, npz, name: str, info: zipfile.ZipInfo) -> np.ndarray:
    """Read one array after checking its ``.npy`` header says it is safe and whole.

    The header is parsed first, on its own: an object dtype means the data is a
    pickle, refused here without relying on NumPy's ``allow_pickle=False``
    alone; and a shape that needs more bytes than the entry holds means damage,
    caught before NumPy allocates memory for it.
    """
    with npz.zip.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = _NPY_HEADER_READERS.get(version)
        if read_header is None:
            raise CheckpointError(
                f"checkpoint {path!r} is corrupted: array {name!r} has .npy header "
                f"version {version}, which this build does not read"
            )
        shape, _fortran_order, dtype = read_header(member)
        data_offset = member.tell()
    if dtype.hasobject:
        raise CheckpointError(
            f"checkpoint {path!r} contains pickled objects (array {name!r}), "
            "which are refused for safety"
        )
    expected_size = data_offset + math.prod(shape) * dtype.itemsize
    if info.file_size != expected_size:
        raise CheckpointError(
            f"checkpoint {path!r} is corrupted: array {name!r} of shape {shape} and dtype "
            f"{dtype} needs {expected_size} bytes but its entry holds {info.file_size}"
        )
    return npz[name]  # np.load's own reader; zipfile checks the entry's CRC-32 at its end


# ----------------------------------------------------------------------- checksum


def _checksum(arrays: dict[str, np.ndarray], metadata: dict) -> str:
    """SHA-256 over the metadata, then every array's name, dtype, shape and bytes.

    The metadata is hashed as canonical JSON (sorted keys), which reads back to
    the same text after a save/load round trip, so tampering with the config,
    tokenizer or random states is caught just like tampering with the weights.
    Arrays go in sorted name order, so the checksum does not depend on dict order. Each array adds a
    JSON header ``[name, dtype, shape]`` (self-delimiting) and then its bytes in
    C order; the header fixes how many bytes follow, so no two different dicts
    feed the hash the same stream. The dtype string includes the byte order.
    """
    try:
        # One JSON round trip first turns non-string keys into strings, as loading will.
        as_loaded = json.loads(json.dumps(metadata, ensure_ascii=False))
    except (TypeError, ValueError) as exc:  # an unsupported type; a circular reference
        raise type(exc)(f"metadata must be JSON-serializable ({exc})") from exc
    digest = hashlib.sha256()
    digest.update(json.dumps(as_loaded, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    for name in sorted(arrays):
        array = arrays[name]
        header = json.dumps([name, array.dtype.str, list(array.shape)])
        digest.update(header.encode("utf-8"))
        # C order, so an F-ordered array hashes like its C-ordered copy. The
        # shape above is the array's own: ascontiguousarray turns 0-d into (1,).
        digest.update(np.ascontiguousarray(array).data)  # the buffer, copied only if not C-ordered
    return digest.hexdigest()
