"""Tiny random-init encoders with offline tokenizers: no test touches a hub or the network."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "be",
    "are",
    "it",
    "an",
    "or",
    "model",
    "fast",
    "small",
    "large",
    "text",
    "language",
    "search",
    "latency",
    "student",
    "teacher",
    "distil",
    "export",
    "hello",
    "world",
    "bonjour",
    "monde",
    "hallo",
    "welt",
    "hola",
    "mundo",
    "привет",
    "мир",
    "你好",
    "世界",
]

SENTENCES = [
    "hello world",
    "the small student model is fast",
    "bonjour monde",
    "the teacher was large and the search was fast on a small text",
]


def _bert_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=64)
    fast.save_pretrained(folder)


def _xlmr_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    pieces = [(s, 0.0) for s in specials] + [("▁" + w, -1.0) for w in WORDS]
    pieces += [(ch, -5.0) for ch in sorted(set("".join(WORDS)))] + [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, model_max_length=64)
    fast.save_pretrained(folder)


def build_tiny_model(folder: Path, model_type: str = "bert", seed: int = 0) -> Path:
    """A random-init 2-layer, hidden-32 encoder with a matching offline tokenizer."""
    import torch
    from transformers import AutoModel, BertConfig, XLMRobertaConfig

    folder.mkdir(parents=True, exist_ok=True)
    if model_type == "bert":
        _bert_tokenizer(folder)
        config_cls: type[BertConfig] | type[XLMRobertaConfig] = BertConfig
        extra = {"pad_token_id": 0}
    else:
        _xlmr_tokenizer(folder)
        config_cls = XLMRobertaConfig
        extra = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(folder))
    config = config_cls(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,
        **extra,
    )
    torch.manual_seed(seed)
    AutoModel.from_config(config).eval().save_pretrained(folder)
    return folder


def build_tiny_of_type(tokenizer_from: Path, folder: Path, model_type: str, **shape: int) -> Path:
    """A random-init encoder of ``model_type`` with the tokenizer of ``tokenizer_from``."""
    import json
    import shutil

    import torch
    from transformers import AutoConfig, AutoModel

    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(tokenizer_from / name, folder / name)
    source = json.loads((tokenizer_from / "config.json").read_text())
    ids = {k: source[k] for k in ("vocab_size", "pad_token_id") if k in source}
    config = AutoConfig.for_model(model_type, max_position_embeddings=80, **ids, **shape)
    torch.manual_seed(0)
    AutoModel.from_config(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_xlmr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-xlmr"), "xlm-roberta")


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy machine they lose a lot."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_proxy_data() -> object:
    """A few English sentences with German and Chinese translations: a search's proxy data
    without the Bible (a ``kdcompress.search.proxy.ProxyData``)."""
    from kdcompress.search.proxy import ProxyData

    words = ["hello world", "the small model", "a fast student", "the large teacher"]
    return ProxyData(
        sources=[f"{w} {i}" for i in range(4) for w in words],
        translations=[(f"hallo {w} {i}", f"你好 {w}") for i in range(4) for w in words],
        languages=("de", "zh"),
        score_sources=words,
        score_translations=[(f"hallo {w}", "") for w in words],
    )
