"""The settings contract every deployable shares: a TOML table, overridden by the environment.

Each deployable (agent, hub, simulator, …) declares its own settings class on this base. The CLI
reads the deployable's table from the settings file and passes it as keyword arguments; the
environment (``EDGEFLEET_<PART>_<FIELD>``, nested with ``__``) wins over the file. Nothing is read
until a settings object is built.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class DeployableSettings(BaseSettings):
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values from the settings file arrive as init arguments; the environment overrides them.
        return (env_settings, init_settings)
