"""All of crawl2chat's configuration: one pydantic model, split by domain into sections.

Values come from, in rising priority: the defaults (the published FineWeb / Gopher / C4
parameters for the data half), a YAML file (`--config` or `CRAWL2CHAT_CONFIG`), environment
variables (`CRAWL2CHAT_<SECTION>__<FIELD>`, e.g. `CRAWL2CHAT_SPARK__MASTER=spark://host:7077`),
and finally explicit overrides from the CLI (`--set`) or a flow parameter. A named preset
(`--preset cpu-tiny`, see `presets.py`) sits just above the defaults. The standard AWS
variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`) are honoured by the storage section. Flows load
settings through `flows.credentials.run_settings`, which refuses credentials in overrides (Prefect
stores flow parameters) and can take them from a Prefect Secret block.

The sections live by domain: `services.py` (storage, Spark, SeaweedFS, the local stack), `data.py`
(jobs: unit quarantine and output leases; inputs, the filter chain, dedup, tokenizer, shards),
`search.py` (the search tool's index), `train.py` (the model's shape, the training loop), `sft.py`
(chat fine-tuning and the "I don't know" builder), `rl.py` (learning from preferences and
rewards: reward model, PPO, best-of-N, RLAIF labelling, DPO, GRPO, each with its own training
loop settings), `presets.py` (named sets of training values) and `serve.py` (the terminal chat's
defaults and the model server). Every
step or stage takes its own section, so it can be built and tested without the rest. Import any
section from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings.base import Section  # noqa: F401 - re-exported with every section
from infra.settings.data import (
    C4Settings,
    DedupSettings,
    ExtractionSettings,
    FilterSettings,
    FineWebSettings,
    GopherQualitySettings,
    GopherRepetitionSettings,
    InputSettings,
    JobSettings,
    LanguageSettings,
    PerLanguage,
    PiiSettings,
    ShardSettings,
    TextSettings,
    TokenizerSettings,
    UrlFilterSettings,
)
from infra.settings.presets import PRESETS, preset_values
from infra.settings.rl import (
    ArithmeticSettings,
    BestOfNSettings,
    BestOfNTrainSettings,
    DpoSettings,
    DpoTrainSettings,
    GrpoSettings,
    GrpoTrainSettings,
    LabelSettings,
    PpoSettings,
    PpoTrainSettings,
    RewardSettings,
    RewardTrainSettings,
)
from infra.settings.search import SearchSettings
from infra.settings.serve import ChatSettings, ServeSettings
from infra.settings.services import SeaweedSettings, ServicesSettings, SparkSettings, StorageSettings
from infra.settings.sft import IdkSettings, SftSettings, SftTrainSettings
from infra.settings.train import ModelSettings, TrainSettings


class Settings(BaseSettings):
    """The root of crawl2chat's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CRAWL2CHAT_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    storage: StorageSettings = Field(default_factory=StorageSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    seaweed: SeaweedSettings = Field(default_factory=SeaweedSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    input: InputSettings = Field(default_factory=InputSettings)
    filter: FilterSettings = Field(default_factory=FilterSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    tokenizer: TokenizerSettings = Field(default_factory=TokenizerSettings)
    shards: ShardSettings = Field(default_factory=ShardSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    sft: SftSettings = Field(default_factory=SftSettings)
    idk: IdkSettings = Field(default_factory=IdkSettings)
    dpo: DpoSettings = Field(default_factory=DpoSettings)
    grpo: GrpoSettings = Field(default_factory=GrpoSettings)
    reward: RewardSettings = Field(default_factory=RewardSettings)
    ppo: PpoSettings = Field(default_factory=PpoSettings)
    best_of_n: BestOfNSettings = Field(default_factory=BestOfNSettings)
    label: LabelSettings = Field(default_factory=LabelSettings)
    config_file: str | None = Field(default=None, validation_alias=AliasChoices("CRAWL2CHAT_CONFIG", "config_file"))


def merge_settings(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Nested setting values with `override`'s on top of `base`'s (neither is changed)."""
    merged = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: str | Path | None = None, overrides: dict[str, Any] | None = None, preset: str | None = None
) -> Settings:
    """Defaults < preset < YAML file < environment < overrides (nested dicts, e.g. {"spark": {"master": ...}})."""
    preset_part = preset_values(preset) if preset else {}
    from_env = Settings()  # defaults + environment
    path = config_file or from_env.config_file
    file_values: dict[str, Any] = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        file_values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(file_values, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
    # Environment wins over the file: re-read the environment as a dict of explicitly set values.
    env_values = from_env.model_dump(exclude_defaults=True)
    merged = merge_settings(merge_settings(merge_settings(preset_part, file_values), env_values), overrides or {})
    return Settings.model_validate(merged)
