"""Configuration: defaults plus ``IM_*`` environment and command-line overrides."""

from config.settings import Settings, SettingsError, build_arg_parser, load_settings

__all__ = ["Settings", "SettingsError", "build_arg_parser", "load_settings"]
