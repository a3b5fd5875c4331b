"""Exceptions shared by every stage."""

from __future__ import annotations


class StreamsightError(Exception):
    """Base class for errors Streamsight reports to the user (no traceback needed)."""


class ConfigError(StreamsightError):
    """A setting or contract is invalid. The message names the setting."""


class BrokerUnavailableError(StreamsightError):
    """The Kafka bootstrap servers did not answer within the configured time."""


class BrokerAccessError(StreamsightError):
    """Kafka refused the principal: a failed login, or an operation its ACLs do not allow."""


class LakeUnavailableError(StreamsightError):
    """The lake's file system (HDFS NameNode, S3 endpoint) cannot be reached."""
