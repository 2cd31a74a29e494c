"""The chain's settings: table ``[chain]`` of the settings file, environment ``EDGEFLEET_CHAIN_*``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from protocol.settings import DeployableSettings

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


class ChainSettings(DeployableSettings):
    """Where the notary contract lives and who signs its transactions.

    ``url = None`` runs an EVM inside the process (eth-tester on py-evm): nothing to install, gone
    when the process ends. Any Ethereum JSON-RPC URL (a node, an L2, Hardhat or anvil on loopback)
    keeps the record. The signing account is, in order: ``private_key`` (best from the environment,
    ``EDGEFLEET_CHAIN_PRIVATE_KEY``), ``private_key_file``, ``account`` (an account the node holds
    unlocked), or else the node's first account.
    """

    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_CHAIN_", env_nested_delimiter="__", extra="forbid")

    url: str | None = Field(default=None, description="Ethereum JSON-RPC URL; none runs an in-process EVM.")
    contract_address: str | None = Field(default=None, description="The deployed notary; none deploys one.")
    private_key: SecretStr | None = Field(default=None, description="Hex private key of the hub's notary account.")
    private_key_file: Path | None = Field(default=None, description="File holding the hex private key.")
    account: str | None = Field(default=None, description="An account the node holds unlocked.")
    confirmations: int = Field(default=0, ge=0, le=64, description="Blocks to wait past a transaction's own.")
    timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for a transaction to be confirmed.")
    poll_interval_s: float = Field(default=0.2, gt=0, le=60, description="How often to look for a receipt.")
    ledger_dir: Path = Field(default=Path("var/notary"), description="Where each round's leaves are kept.")
    compile_cache: Path | None = Field(
        default=None, description="Cache of compiled contracts by source hash; none uses the temp directory."
    )

    @field_validator("url", "contract_address", "account", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        # TOML has no null: an empty string selects the default.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("contract_address", "account")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not _ADDRESS.match(value):
            raise ValueError(f"not an Ethereum address (0x and 40 hex digits): {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"the chain URL is an http(s) JSON-RPC endpoint, not {value!r}")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        if self.private_key is not None and self.private_key_file is not None:
            raise ValueError("set private_key or private_key_file, not both")
        return self
