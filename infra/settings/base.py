"""The base of every settings section: a small pydantic model where unknown keys are an error."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid")
