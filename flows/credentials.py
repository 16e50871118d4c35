"""How a flow gets its settings and credentials: from the environment or a Prefect Secret block,
never from its parameters.

Prefect stores every flow run's parameters in its database and shows them in the UI, so a
credential given as a parameter (or with `--set`, which becomes one) would be readable by anyone
who can read the UI. `run_settings` is what every flow and task calls instead of
`load_settings`: it refuses credentials in the overrides with a one-line error, loads the
settings (the environment supplies `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
`AWS_SESSION_TOKEN`), and, when `storage.secret_block` names a Prefect Secret block, takes the
credentials from that block. Tasks are handed the config file and the overrides, never a loaded
`Settings`, so no credential is a task argument either (Prefect hashes task arguments for its
cache key and keeps them in memory for retries).
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from infra.settings import Settings, load_settings
from infra.settings.services import CREDENTIAL_FIELDS

ENVIRONMENT = {
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
}


class CredentialsInParameters(ValueError):
    """A credential was passed where Prefect would store and show it."""


def refuse_credentials(overrides: dict[str, Any] | None) -> None:
    """Raise CredentialsInParameters when `overrides` (flow parameters, `--set`) carry a credential."""
    storage = (overrides or {}).get("storage")
    if not isinstance(storage, dict):
        return
    for name in CREDENTIAL_FIELDS:
        if storage.get(name) is not None:
            raise CredentialsInParameters(
                f"storage.{name} is a credential and flow parameters are stored and shown by Prefect: "
                f"set {ENVIRONMENT[name]} in the environment or name a Prefect Secret block with storage.secret_block"
            )


def run_settings(config_file: str | None = None, overrides: dict[str, Any] | None = None, preset: str | None = None) -> Settings:
    """The settings of a flow or task run, with credentials from the environment or a Secret block."""
    refuse_credentials(overrides)
    settings = load_settings(config_file, overrides, preset=preset)
    if settings.storage.secret_block:
        credentials = block_credentials(settings.storage.secret_block)
        settings.storage = settings.storage.model_copy(update=credentials)
    return settings


def block_credentials(block_name: str) -> dict[str, Any]:
    """The storage credentials in Prefect Secret block `block_name`, as StorageSettings fields."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block_name).get()
    except ValueError as error:  # Prefect's "Unable to find block document named ..."
        raise ValueError(f"storage.secret_block: no Prefect Secret block named {block_name!r}") from error
    if isinstance(value, str):
        value = {"secret_access_key": value}
    if not isinstance(value, dict) or not set(value) <= set(CREDENTIAL_FIELDS) or not value.get("secret_access_key"):
        raise ValueError(
            f"Prefect Secret block {block_name!r} must hold the secret key, or JSON with secret_access_key "
            f"and optionally access_key_id and session_token"
        )
    return {
        name: SecretStr(str(field)) if name != "access_key_id" else str(field)
        for name, field in value.items()
        if field is not None
    }
