"""MkDocs hook: publish the dataset cards (kept in ``datasets/`` beside the data they describe)
as the site's ``datasets/`` pages, without copying them into ``docs/``."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

CARDS = Path(__file__).resolve().parents[1] / "datasets"


def on_files(files, config):
    for card in sorted(CARDS.glob("*.md")):
        files.append(File.generated(config, f"datasets/{card.name}", abs_src_path=str(card)))
    return files
