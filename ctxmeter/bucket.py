"""The JetStream KV bucket that holds every session's state: its configuration and how to read a key.

A key's revision is what every compare-and-set expects, so a read must report the right one in every
case: a stored value's own revision; the revision of the marker a delete or purge left behind (the
key's last sequence is the marker's, so a write expecting 0 would be refused forever); or 0 when the
key has never been written or its messages aged out.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from ctxmeter.settings import Settings


class StoreUnavailable(RuntimeError):
    """The bucket (or a stream beside it) can be neither bound nor created; the message is one line."""


# JetStream requests that get no answer: JetStream is off, or this user may not make them (the server
# reports a permission violation on the connection; the request itself only times out).
NO_ANSWER = (nats.errors.TimeoutError, nats.errors.NoRespondersError)


def unavailable(what: str, subject: str, error: Exception) -> StoreUnavailable:
    return StoreUnavailable(
        f"could not open {what}: JetStream did not answer {subject} ({type(error).__name__}); is JetStream "
        "enabled, and may this user make that request? (deploy/nats/permissions.conf)"
    )


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A key's value (None when absent or deleted) and the revision a compare-and-set must expect."""

    value: bytes | None
    revision: int


ABSENT = StoredEntry(value=None, revision=0)


def bucket_config(settings: Settings) -> KeyValueConfig:
    return KeyValueConfig(
        bucket=settings.kv_bucket,
        description="ctxmeter session state",
        history=1,
        ttl=settings.kv_ttl,
        storage=StorageType.FILE,
        replicas=settings.kv_replicas,
        # Past it, JetStream refuses writes that need more room (the bucket discards nothing).
        max_bytes=settings.kv_max_bytes,
    )


async def open_bucket(js: JetStreamContext, settings: Settings) -> KeyValue:
    """Bind the bucket, creating it (history 1, file storage, TTL) when it does not exist yet."""
    stream = f"KV_{settings.kv_bucket}"
    try:
        return await js.key_value(settings.kv_bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    except NO_ANSWER as error:
        raise unavailable(f"the KV bucket {settings.kv_bucket}", f"$JS.API.STREAM.INFO.{stream}", error) from None
    try:
        # Several processes may race here; creating an identical bucket twice is accepted by JetStream.
        return await js.create_key_value(bucket_config(settings))
    except NO_ANSWER as error:
        raise unavailable(f"the KV bucket {settings.kv_bucket}", f"$JS.API.STREAM.CREATE.{stream}", error) from None


async def read_entry(kv: KeyValue, key: str) -> StoredEntry:
    """The key's value and revision; a deleted or purged key reads as no value at its marker's revision."""
    try:
        entry = await kv.get(key)
    except nats.js.errors.KeyNotFoundError as missing:
        marker = missing.entry
        if marker is None or not marker.revision:
            return ABSENT
        return StoredEntry(value=None, revision=marker.revision)
    return StoredEntry(value=entry.value or None, revision=entry.revision or 0)
