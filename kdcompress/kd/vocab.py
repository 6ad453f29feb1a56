"""Vocabulary trimming: keep only the tokens a corpus uses, in the tokenizer and the embeddings.

XLM-R's 250k-piece vocabulary is most of a small multilingual student's parameters (250k x 384
= 96M of me5-small's 117M). A student distilled on a corpus only ever sees the tokens of that
corpus, so the others can go: the kept tokens are renumbered in their original order (new id =
rank of the old id), ``tokenizer.json`` is rewritten with the same pieces, scores, specials and
post-processor ids, and the embedding matrix keeps the matching rows.

Why a text made only of kept tokens tokenizes identically: WordPiece takes the longest piece
in the vocabulary at each step, and the piece it took before is still there while no longer
piece was added. Unigram takes the best-scoring segmentation; the old best one is still
possible and no new one appeared. Unigram scores unknown characters relative to the lowest
piece score, so the lowest-scoring piece is always kept to leave that penalty unchanged.
Texts with dropped tokens get ``<unk>`` instead: that is the price of trimming.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kdcompress.artifacts import VocabTrimStats
from kdcompress.errors import KDCompressError, UsageError
from kdcompress.outputs import atomic_write_text

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.json",
    "merges.txt",
)
_SPECIAL_ID_FIELDS = (
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "cls_token_id",
)


@dataclass(frozen=True)
class VocabTrim:
    """Which old token ids survive; new id ``k`` is old id ``keep_ids[k]``."""

    keep_ids: tuple[int, ...]
    old_size: int

    @property
    def new_size(self) -> int:
        return len(self.keep_ids)

    def old_to_new(self) -> npt.NDArray[np.int64]:
        """Lookup table old id -> new id, -1 for dropped tokens."""
        table = np.full(self.old_size, -1, dtype=np.int64)
        table[np.asarray(self.keep_ids, dtype=np.int64)] = np.arange(self.new_size)
        return table


def read_tokenizer_json(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise UsageError(
            f"{model_dir}: vocabulary trimming needs a fast tokenizer (tokenizer.json)"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    kind = data.get("model", {}).get("type")
    if kind not in ("WordPiece", "Unigram"):
        raise UsageError(f"{model_dir}: cannot trim a {kind} tokenizer (WordPiece or Unigram only)")
    return dict(data)


def _model_vocab_ids(model: dict[str, Any]) -> dict[str, int]:
    if model["type"] == "WordPiece":
        return dict(model["vocab"])
    return {piece: index for index, (piece, _score) in enumerate(model["vocab"])}


def plan_trim(
    tokenizer_json: dict[str, Any], used_ids: Iterable[int], *, vocab_size: int
) -> VocabTrim:
    """Keep ``used_ids``, every special/added token, the unknown token (and Unigram's minimum)."""
    model = tokenizer_json["model"]
    keep = {int(i) for i in used_ids}
    keep |= {int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}
    if model["type"] == "WordPiece":
        keep.add(int(model["vocab"][model["unk_token"]]))
    else:
        if model.get("unk_id") is not None:
            keep.add(int(model["unk_id"]))
        scores = [score for _piece, score in model["vocab"]]
        keep.add(int(np.argmin(scores)))
    bad = [i for i in keep if not 0 <= i < vocab_size]
    if bad:
        raise KDCompressError(
            f"token ids {sorted(bad)[:5]} are outside the vocabulary ({vocab_size})"
        )
    return VocabTrim(tuple(sorted(keep)), vocab_size)


def trim_tokenizer_json(data: dict[str, Any], trim: VocabTrim) -> dict[str, Any]:
    """A copy of ``tokenizer.json`` with only the kept pieces, renumbered consistently."""
    table = trim.old_to_new()
    out = copy.deepcopy(data)
    model = out["model"]
    if model["type"] == "WordPiece":
        model["vocab"] = {
            tok: int(table[i])
            for tok, i in model["vocab"].items()
            if i < trim.old_size and table[i] >= 0
        }
    else:
        model["vocab"] = [
            entry for i, entry in enumerate(model["vocab"]) if i < trim.old_size and table[i] >= 0
        ]
        if model.get("unk_id") is not None:
            model["unk_id"] = int(table[model["unk_id"]])
    for token in out.get("added_tokens", []):
        token["id"] = int(table[token["id"]])
    if out.get("post_processor"):
        out["post_processor"] = _remap_processor(out["post_processor"], table)
    return out


def _remap_processor(processor: dict[str, Any], table: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Special-token ids inside post-processors (Template, Bert, Roberta, Sequence)."""
    kind = processor.get("type")
    if kind == "Sequence":
        processor["processors"] = [_remap_processor(p, table) for p in processor["processors"]]
    elif kind == "TemplateProcessing":
        for special in processor.get("special_tokens", {}).values():
            special["ids"] = [int(table[i]) for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            token, old = processor[key]
            processor[key] = [token, int(table[old])]
    return processor


def _remap_tokenizer_config(data: dict[str, Any], table: npt.NDArray[np.int64]) -> dict[str, Any]:
    decoder = data.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        data["added_tokens_decoder"] = {str(int(table[int(k)])): v for k, v in decoder.items()}
    return data


def write_trimmed_tokenizer(src_dir: Path, dst_dir: Path, trim: VocabTrim) -> None:
    """Write the tokenizer files of ``src_dir`` into ``dst_dir``, renumbered by ``trim``.

    SentencePiece ``.model`` files are not carried over (they cannot be renumbered here);
    ``tokenizer.json``, which fast tokenizers load first, is authoritative.
    """
    table = trim.old_to_new()
    trimmed = trim_tokenizer_json(read_tokenizer_json(src_dir), trim)
    atomic_write_text(dst_dir / "tokenizer.json", json.dumps(trimmed, ensure_ascii=False) + "\n")
    config_path = Path(src_dir) / "tokenizer_config.json"
    if config_path.is_file():
        config = _remap_tokenizer_config(json.loads(config_path.read_text("utf-8")), table)
        atomic_write_text(dst_dir / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    added_path = Path(src_dir) / "added_tokens.json"
    if added_path.is_file():
        added = {k: int(table[v]) for k, v in json.loads(added_path.read_text("utf-8")).items()}
        atomic_write_text(dst_dir / "added_tokens.json", json.dumps(added, indent=2) + "\n")
    if (Path(src_dir) / "vocab.txt").is_file():
        atomic_write_text(dst_dir / "vocab.txt", _vocab_txt(trimmed))
    special_map = Path(src_dir) / "special_tokens_map.json"
    if special_map.is_file():
        shutil.copy2(special_map, dst_dir / special_map.name)


def _vocab_txt(trimmed: dict[str, Any]) -> str:
    by_id = {i: tok for tok, i in _model_vocab_ids(trimmed["model"]).items()}
    by_id.update({t["id"]: t["content"] for t in trimmed.get("added_tokens", [])})
    return "".join(f"{by_id[i]}\n" for i in sorted(by_id))


def copy_tokenizer(src_dir: Path, dst_dir: Path, trim: VocabTrim | None = None) -> None:
    """Copy the tokenizer of ``src_dir`` to ``dst_dir``, trimmed when ``trim`` is given."""
    if trim is not None:
        write_trimmed_tokenizer(src_dir, dst_dir, trim)
        return
    for name in TOKENIZER_FILES:
        if (Path(src_dir) / name).is_file():
            shutil.copy2(Path(src_dir) / name, Path(dst_dir) / name)


def remap_special_ids(config: Any, keep_ids: Sequence[int]) -> None:
    """Renumber the special-token ids of a model config for a trimmed vocabulary."""
    position = {int(t): k for k, t in enumerate(keep_ids)}
    for name in _SPECIAL_ID_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value >= 0:
            setattr(config, name, position.get(value))


def trim_input_embeddings(model: Any, trim: VocabTrim) -> None:
    """Keep only the rows of ``trim`` in ``model``'s word embeddings; update its config."""
    import torch
    from torch import nn

    old = model.get_input_embeddings()
    pad = getattr(model.config, "pad_token_id", None)
    remap_special_ids(model.config, trim.keep_ids)
    new_pad = model.config.pad_token_id if pad is not None else None
    new = nn.Embedding(trim.new_size, old.weight.shape[1], padding_idx=new_pad)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.as_tensor(trim.keep_ids, dtype=torch.long)])
    new.weight.requires_grad_(old.weight.requires_grad)
    model.set_input_embeddings(new)
    model.config.vocab_size = trim.new_size
    if hasattr(getattr(model, "embeddings", None), "padding_idx") and new_pad is not None:
        model.embeddings.padding_idx = new_pad  # RoBERTa-style position ids count from it


def used_token_ids(
    tokenizer: Any, texts: Sequence[str], *, max_length: int, batch: int = 1000
) -> npt.NDArray[np.int64]:
    """Distinct token ids of ``texts`` as the model sees them (truncated to ``max_length``)."""
    seen: set[int] = set()
    for start in range(0, len(texts), batch):
        encoded = tokenizer(
            list(texts[start : start + batch]), truncation=True, max_length=max_length
        )
        for ids in encoded["input_ids"]:
            seen.update(ids)
    return np.asarray(sorted(seen), dtype=np.int64)


def check_trimmed_tokenizer(
    src_dir: Path, dst_dir: Path, trim: VocabTrim, texts: Sequence[str], *, max_length: int
) -> None:
    """Fail loudly unless the trimmed tokenizer gives the renumbered ids of the original."""
    from kdcompress.encoding import load_tokenizer

    table = trim.old_to_new()
    before = load_tokenizer(src_dir)(list(texts), truncation=True, max_length=max_length)
    after = load_tokenizer(dst_dir)(list(texts), truncation=True, max_length=max_length)
    for text, old, new in zip(texts, before["input_ids"], after["input_ids"], strict=True):
        expected = [int(table[i]) for i in old]
        if -1 not in expected and expected != list(new):
            raise KDCompressError(f"trimmed tokenizer splits {text[:60]!r} differently (a bug)")


def weight_bytes(model: Any) -> int:
    """Bytes of all parameters in their current dtype (the size of a safetensors file, ~)."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def tokenizer_bytes(model_dir: Path) -> int:
    return sum(
        (Path(model_dir) / n).stat().st_size
        for n in TOKENIZER_FILES
        if (Path(model_dir) / n).is_file()
    )


def trim_stats(
    *, before_model: tuple[int, int, int], after_model: Any, src_dir: Path, dst_dir: Path
) -> VocabTrimStats:
    """Sizes before (``(vocab, params, bytes)``) and after trimming, for reports."""
    vocab, params, nbytes = before_model
    return VocabTrimStats(
        vocab_before=vocab,
        vocab_after=int(after_model.get_input_embeddings().weight.shape[0]),
        params_before=params,
        params_after=int(sum(p.numel() for p in after_model.parameters())),
        weights_bytes_before=nbytes,
        weights_bytes_after=weight_bytes(after_model),
        tokenizer_bytes_before=tokenizer_bytes(src_dir),
        tokenizer_bytes_after=tokenizer_bytes(dst_dir),
    )


def trim_model_folder(
    src_dir: Path, dst_dir: Path, texts: Sequence[str], *, max_length: int = 512
) -> tuple[VocabTrim, VocabTrimStats]:
    """Write a copy of the HF encoder folder ``src_dir`` keeping only the tokens of ``texts``.

    ``texts`` should carry the model's text prefix (e.g. ``"query: "``) if it has one. Other
    files (``kdcompress_model.json``, licences) are copied unchanged.
    """
    from transformers import AutoModel

    from kdcompress.encoding import load_tokenizer

    tokenizer = load_tokenizer(src_dir)
    model = AutoModel.from_pretrained(src_dir)
    vocab = int(model.get_input_embeddings().weight.shape[0])
    before = (vocab, int(sum(p.numel() for p in model.parameters())), weight_bytes(model))
    used = used_token_ids(tokenizer, texts, max_length=max_length)
    trim = plan_trim(read_tokenizer_json(src_dir), used, vocab_size=vocab)
    trim_input_embeddings(model, trim)
    dst_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst_dir)
    write_trimmed_tokenizer(src_dir, dst_dir, trim)
    for path in Path(src_dir).iterdir():
        skip = path.name in TOKENIZER_FILES or path.suffix in (".safetensors", ".bin")
        if path.is_file() and not skip and path.name != "config.json":
            shutil.copy2(path, dst_dir / path.name)
    check_trimmed_tokenizer(src_dir, dst_dir, trim, texts[:200], max_length=max_length)
    stats = trim_stats(before_model=before, after_model=model, src_dir=src_dir, dst_dir=dst_dir)
    return trim, stats
