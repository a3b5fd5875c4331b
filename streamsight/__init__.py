"""Streamsight shared package: settings, stream contracts, Kafka client settings and lake paths.

Every stage (``ingestion``, ``streaming_jobs``, ``ml``, ``analytics``) imports this package;
this package imports no stage.
"""

from __future__ import annotations

from streamsight.contracts import Contract, ContractError, load_contract, load_contracts
from streamsight.errors import ConfigError, StreamsightError
from streamsight.settings import Settings, load_settings

__all__ = [
    "ConfigError",
    "Contract",
    "ContractError",
    "Settings",
    "StreamsightError",
    "load_contract",
    "load_contracts",
    "load_settings",
]
__version__ = "0.1.0"
