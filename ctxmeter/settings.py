"""All of ctxmeter's settings in one pydantic-settings tree; every field reads ``CTXMETER_<NAME>``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ctxmeter.limits import GIB, KIB, MIB


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CTXMETER_", extra="ignore", frozen=True)

    # -- NATS and state ----------------------------------------------------------------------
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description=(
            "NATS server(s) to use, comma-separated (nats://, tls://; user:password@ allowed); "
            "`ctxmeter up` starts its own when not given."
        ),
    )
    nats_creds: Path | None = Field(default=None, description="A NATS .creds file (user JWT and nkey seed).")
    nats_nkey: Path | None = Field(default=None, description="A file holding an nkey seed (SU...).")
    nats_token: SecretStr | None = Field(default=None, description="A NATS authentication token.")
    nats_tls_ca: Path | None = Field(default=None, description="CA certificate(s) that signed the NATS servers'.")
    nats_tls_cert: Path | None = Field(default=None, description="Client certificate for NATS mutual TLS.")
    nats_tls_key: Path | None = Field(default=None, description="Private key of the client certificate.")
    nats_connect_wait: float = Field(
        default=30.0,
        gt=0,
        description="Seconds to keep trying to reach NATS at start before giving up with an error.",
    )
    nats_service_url: str | None = Field(
        default=None,
        description=(
            "`ctxmeter functions`: the server URL(s) of the connection that takes the requests and sends the "
            "replies, with that NATS user's user:password@ (deploy/nats: ctxmeter-service); unset: "
            "CTXMETER_NATS_URL without its credentials. The service connection is separate when this or "
            "another CTXMETER_NATS_SERVICE_* setting is given; otherwise the functions serve on their one connection."
        ),
    )
    nats_service_creds: Path | None = Field(
        default=None, description="`ctxmeter functions`: the service connection's .creds file (its own NATS user)."
    )
    nats_service_nkey: Path | None = Field(
        default=None, description="`ctxmeter functions`: the service connection's nkey seed file (its own NATS user)."
    )
    inbox_prefix: str = Field(
        default="_INBOX",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description=(
            "Inbox prefix of requesters: the functions answer only reply subjects under `<prefix>.` (any other "
            "is refused and counted), and the edge's own requests use it."
        ),
    )
    kv_bucket: str = Field(default="CTXMETER", pattern=r"^[A-Za-z0-9_-]+$", description="JetStream KV bucket.")
    kv_ttl: float = Field(
        default=86_400,
        gt=0,
        description="Seconds a session's state (and its history) lives after its last write (24 h).",
    )
    kv_replicas: int = Field(default=1, ge=1, le=5, description="KV replicas: 3 in a cluster.")
    request_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a NATS reply.")
    idempotency_window: float = Field(
        default=60.0,
        ge=0,
        description=(
            "Seconds an applied idempotency key is remembered, beyond the newest 64 a session always keeps: a "
            "retry within this long is never applied twice. A session takes 2,048 keyed changes per window at "
            "most; more are refused with conflict until older keys leave it."
        ),
    )
    count_copies_at_start: bool | None = Field(
        default=None,
        description=(
            "Build every counting worker's own copy of o200k_base when the functions start (about 38 MB more per"
            " worker beyond the first, and 0.25-2 s more start-up), so the first burst of concurrent large counts"
            " runs at full speed; off, a second worker counts on the first one's copy (about half speed while"
            " both count) and builds its own once both are idle. Unset: on for `ctxmeter functions`, off for"
            " `ctxmeter up`, which stays small."
        ),
    )
    record_history: bool = Field(
        default=True,
        description="Keep each session's history (one more publish per change); off, history has one point: now.",
    )
    history_points: int = Field(
        default=1_000,
        ge=1_000,
        le=100_000,
        description="History points kept per session (the newest; at least 1,000, the most one request returns).",
    )
    kv_max_bytes: int = Field(
        default=2 * GIB,
        ge=64 * KIB,
        description=(
            "Bytes the bucket (every session's state) may take, reserved on the server when ctxmeter creates it; "
            "when full, changes that need more room are refused with store_full (HTTP 507) until states expire."
        ),
    )
    history_max_bytes: int = Field(
        default=GIB,
        ge=MIB,
        description=(
            "Bytes the history of all sessions may take, reserved on the server when ctxmeter creates the stream; "
            "the oldest points go first beyond it."
        ),
    )
    models_file: Path | None = Field(
        default=None, description="A models file (TOML, as functions/data/models.toml) adding or replacing models."
    )

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`ctxmeter functions`: serve Prometheus metrics on this port (/metrics); off when unset.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the functions' metrics port listens on.")

    log_format: Literal["auto", "text", "json"] = Field(
        default="auto", description="Log lines: text on a terminal and JSON otherwise (auto), or always one."
    )

    # -- counting and levels -----------------------------------------------------------------
    max_text_bytes: int = Field(
        default=4 * MIB,
        ge=1,
        description="Largest text (UTF-8 bytes) a request may carry; larger is payload_too_large.",
    )
    default_context_window: int = Field(
        default=200_000, ge=1, description="Context window of a session with no model and no total set."
    )
    draft_default_max: int = Field(
        default=8_000, ge=1, description="Draft limit when neither the request nor the model gives one."
    )
    warning_percent: float = Field(default=80, gt=0, le=100, description="Context and draft warning level from here.")
    critical_percent: float = Field(default=90, gt=0, le=100, description="Context critical level from here.")
    draft_critical_percent: float = Field(default=95, gt=0, le=100, description="Draft critical level from here.")

    # -- embedded server (`ctxmeter up`) -----------------------------------------------------
    nats_port: int = Field(default=4222, ge=0, le=65535, description="Client port of the embedded nats-server.")
    nats_monitor_port: int = Field(
        default=8222, ge=0, le=65535, description="Monitoring port of the embedded nats-server (0: off)."
    )
    store: Path = Field(default=Path(".ctxmeter"), description="JetStream store directory of the embedded server.")

    # -- edge --------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address the edge listens on.")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP/WebSocket port of the edge.")
    tls_cert: Path | None = Field(
        default=None,
        description="Certificate chain (PEM) for HTTPS and wss:// on the edge itself; needs tls_key.",
    )
    tls_key: Path | None = Field(default=None, description="Private key (PEM) of tls_cert.")
    throttle_ms: int = Field(default=100, ge=0, description="At most one frame per session and type per interval.")
    sessions_index_at_start: bool = Field(
        default=False,
        description="Build the sessions overview's index when the edge starts, not at the first overview request "
        "(a fast first /sessions page, for about 0.8 KB per live session held by every edge).",
    )
    jwt_secret: str | None = Field(default=None, description="HS256 secret; when set, the API and sockets need a JWT.")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to open sockets, comma-separated; empty: the edge's own and localhost.",
    )
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list,
        description=(
            "Proxies in front of the edge (addresses or CIDRs, comma-separated): only from these is the client's "
            "address taken from X-Forwarded-For/Forwarded and its scheme from X-Forwarded-Proto."
        ),
    )
    ip_connect_rate: float = Field(default=50, gt=0, description="New connections per second per client IP.")
    ip_connect_burst: float = Field(default=100, ge=1, description="Burst of new connections per client IP.")
    ip_write_rate: float = Field(
        default=100,
        gt=0,
        description=(
            "HTTP requests that change state (POST) per second per client IP; more are 429. Behind a proxy, or "
            "with one backend reporting for many agents over HTTP, every client shares one address: raise it."
        ),
    )
    ip_write_burst: float = Field(default=200, ge=1, description="Burst of state-changing HTTP requests per client IP.")
    max_connections: int = Field(
        default=20_000,
        ge=1,
        description="Open TCP connections at most (WebSockets and plain HTTP); more are answered 503 and closed.",
    )
    ws_heartbeat: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between WebSocket protocol pings; a peer that misses the pong by half of this is closed.",
    )
    slow_socket_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds one write to a socket may stay blocked (the peer is not reading) before it is closed.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds a connection has to send a whole request head, from opening or from the first byte after "
            "its last response; a connection that takes longer is dropped."
        ),
    )
    body_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds a request has to send its whole body once its head is in; a slower one is dropped. "
            "Raise it for texts of megabytes over slow links."
        ),
    )
    keepalive_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Seconds an idle kept-alive HTTP connection stays open after its last response.",
    )

    otlp_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Also serve OTLP/HTTP (/v1/traces, /v1/logs, /v1/metrics) on this port (4318 by convention); "
        "the edge's own port serves it too.",
    )
    otlp_session_attributes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["gen_ai.conversation.id", "session.id", "conversation.id"],
        min_length=1,
        description="OpenTelemetry attributes naming a record's session, comma-separated: the first present, "
        "on the span or log record and then on its resource.",
    )

    @field_validator("allowed_origins", "trusted_proxies", "otlp_session_attributes", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("inbox_prefix")
    @classmethod
    def _inbox_not_ours(cls, value: str) -> str:
        # ctxmeter's own subjects (events, history, requests) must never count as somebody's inbox.
        if value.split(".")[0] == "ctxmeter":
            raise ValueError("the inbox prefix must not be under ctxmeter.")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither")
        return self

    @model_validator(mode="after")
    def _levels_ordered(self) -> Settings:
        if self.critical_percent < self.warning_percent:
            raise ValueError("critical_percent must not be below warning_percent")
        return self
