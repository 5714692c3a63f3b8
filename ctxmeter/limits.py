"""Every fixed limit and interval of ctxmeter's running parts, with the reason for its value.

What an operator tunes is a field of ``ctxmeter.settings.Settings``; what is here follows from the
protocol, the machine or a measurement, and changing it is a code change with a reason. The bounds of
the messages themselves are part of the contract, in ``schemas/limits.py``. No other module defines a
limit (``tests/test_limits.py`` fails on one that does).
"""

from __future__ import annotations

from typing import Final

KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB

# -- NATS connection --------------------------------------------------------------------------

# Seconds between reconnect attempts; with unlimited attempts a NATS restart or a cluster node's loss
# is ridden out, and half a second keeps the outage short without hammering a server that is starting.
NATS_RECONNECT_WAIT_S: Final = 0.5
# Seconds one TCP/TLS connect and handshake may take before the next server is tried.
NATS_CONNECT_TIMEOUT_S: Final = 2
# Bound on draining a connection at shutdown (unsubscribes, flushes), so a stop never hangs.
NATS_DRAIN_TIMEOUT_S: Final = 5.0
# Seconds a part waits before starting over after its connection was closed under it, doubling to the
# cap: a server that keeps refusing us is not hammered, and recovery is quick when the cause is gone.
RESTART_BACKOFF_S: Final = 0.5
RESTART_BACKOFF_CAP_S: Final = 15.0

# -- the embedded nats-server (`ctxmeter up`) --------------------------------------------------

# Seconds a starting nats-server may take to report its ports (JetStream recovers its store first).
NATS_SERVER_STARTUP_TIMEOUT_S: Final = 15.0
# Seconds a stopping nats-server may take to flush JetStream before it is killed.
NATS_SERVER_STOP_TIMEOUT_S: Final = 10.0
# Times in a row the embedded server is started again after it died before `ctxmeter up` gives up
# (exits non-zero, so a supervisor above it takes over): a server that cannot start is not a blip.
NATS_SERVER_RESTART_ATTEMPTS: Final = 5
# Seconds between checks that the embedded server is still running.
NATS_SERVER_EXIT_POLL_S: Final = 0.2

# -- what a reply or a log may quote ----------------------------------------------------------

# Characters of any one log message built from outside input (a rejected request's error, say): a
# request of megabytes must not become a log line of megabytes.
LOG_EXCERPT_CHARS: Final = 300
# Seconds between two log lines about one kind of event that can come in floods (a refused reply
# subject, say): one line per interval, with how many happened since, keeps the log readable and small
# whatever the rate; the exact count is a metric.
LOG_INTERVAL_S: Final = 10.0
# Lines of one kind (logger and message template) written per LOG_INTERVAL_S; the rest are counted, and
# the next line says how many. Five show what is going on; a client making one happen thousands of times
# a second (a slow consumer's error per dropped message wrote 200 MB in 10 s) no longer fills the disk.
LOG_BURST: Final = 5
# Kinds tracked at once (a few hundred bytes each); beyond it, new kinds share one window.
MAX_LOG_KINDS: Final = 1000
# Characters of a kind kept as its key (a message built with an f-string could be long).
LOG_KIND_CHARS: Final = 200
# Problems listed in one invalid_request message; the rest are counted.
MAX_PROBLEMS_LISTED: Final = 5
# Characters of pydantic's own description of one problem (it may quote a pattern or a literal list).
PROBLEM_CHARS: Final = 120
# Characters of any error message: it is sent twice (body and header) and logged.
MAX_MESSAGE_CHARS: Final = 1000
# Characters of a refused reply subject quoted in the log (it is client input).
REFUSED_SUBJECT_CHARS: Final = 80

# -- functions --------------------------------------------------------------------------------

# Requests handled at once by one process. Beyond this the subscription stops taking messages, so NATS
# buffers (and eventually reports a slow consumer) instead of this process running out of memory.
MAX_IN_FLIGHT: Final = 1024
# Seconds between two readings of how full the bucket and the history stream are (a stream info each):
# a store fills over hours, and Prometheus scrapes about this often.
STORE_USE_POLL_S: Final = 15.0
# Seconds shutdown waits for requests already being handled.
SHUTDOWN_GRACE_S: Final = 10.0
# Compare-and-set attempts: with jittered exponential backoff, 16 attempts ride out hundreds of writers
# racing on one key, yet give up (``conflict``) long before a requester's timeout.
CAS_MAX_ATTEMPTS: Final = 16
CAS_BACKOFF_BASE_S: Final = 0.001
CAS_BACKOFF_CAP_S: Final = 0.05
# Seconds between two looks for compare-and-set writes left unacknowledged past their timeout: one timer
# for all of them (a timer per write was a fiftieth of a change's work), so a write gives up within its
# timeout plus this.
ACK_SWEEP_S: Final = 0.25
# Sessions whose last (state, revision) a functions process remembers, so an update usually costs one
# KV write rather than a read and a write. Bounded so that many sessions cannot grow memory.
REVISION_CACHE_SIZE: Final = 10_000
# Below this many characters tiktoken takes well under a millisecond: count inline, since a thread hop
# costs more than it saves. Above it, count on a worker thread (tiktoken releases the GIL).
OFFLOAD_MIN_CHARS: Final = 16 * KIB
# Messages counted inline at most: each costs a few microseconds of per-message work (three encoder
# calls) whatever its length, so many small messages are offloaded like one large text.
OFFLOAD_MIN_MESSAGES: Final = 64
# A text this long, arriving while every worker is idle, is cut into parts (``functions.splitting``) that
# both workers count at once. Shorter texts gain less than the second thread's wake-up costs.
SPLIT_MIN_CHARS: Final = 32 * 1024
# Parts of a split count, taken one at a time by whichever of the two workers is free. Fixed shares (64 %
# for the owner, before) finish last on the side that got the least CPU: on a machine whose cores are busy
# with other work the second thread often starts late or is preempted, and the owner then waited for it
# (a 100 KB count took longer split than whole). With small parts taken on demand the owner counts what
# the helper does not get to; a part is ~6 KB (about 0.4 ms), so a preempted helper holds up at most that
# much, and 16 tiktoken calls cost ~0.05 ms more than one.
SPLIT_PARTS: Final = 16
# A worker building its own copy of an encoding counts as this many queued jobs, so requests go to the
# others meanwhile: the build takes 0.25 s on a free core (2 s on a busy one), some 50 counts of 100 KB.
BUILD_WEIGHT: Final = 32
# How far past the wanted place a cut is looked for before giving up (a long run with no such place: a
# base64 blob, CJK with no punctuation). Looking costs about 0.1 microseconds a character.
SPLIT_SEARCH_CHARS: Final = 4096
# Seconds one history read may spend fetching points before answering with what it has.
HISTORY_READ_TIMEOUT_S: Final = 2.0
# Points asked of the server at once while reading.
HISTORY_FETCH_BATCH: Final = 500
# The window of keys a session remembers: always its newest IDEMPOTENCY_KEYS_KEPT, and besides every key applied in
# the last ``idempotency_window`` seconds (a setting; a client's retries come within its deadline, 10 s
# by default). A session that changes a few times a minute keeps 64.
IDEMPOTENCY_KEYS_KEPT: Final = 64
# Keys applied within the window, at most: a keyed change that would need one more is refused (conflict,
# retried by the clients) rather than a key of the window forgotten (a retry would then apply twice). So
# a session takes 2,048 keyed changes per window in bursts, 34 a second sustained with the 60 s default.
# Stored as (16-character digest, seconds), about 30 bytes of state each: a state at the cap is 65 KB, and
# each write of it costs about twice one of a few keys (measured: 541 against 1,022 keyed adds a second
# in a row on one session); other sessions are unaffected, and unkeyed changes are not limited.
IDEMPOTENCY_KEYS_MAX: Final = 2_048
# Digest bytes per key: 96 bits make a collision between two keys of one session's window vanishingly
# unlikely (about 2048^2 / 2^97), and keep each entry small whatever keys hold.
IDEMPOTENCY_DIGEST_BYTES: Final = 12

# -- edge -------------------------------------------------------------------------------------

# Connections the kernel holds for the edge before it accepts them (the kernel caps it at
# net.core.somaxconn). asyncio's default of 100 overflowed when thousands of clients connected at once
# (every browser of a deployment reconnecting after a restart): the kernel then drops the handshake's
# last packet and the client retries after a second or more.
LISTEN_BACKLOG: Final = 4096

# Clients only ever send pings (a few bytes); a larger frame is a mistake or abuse. Closed with 1009.
MAX_INBOUND_FRAME_BYTES: Final = 4 * KIB
# A client pings every 30 s; a tab waking from sleep may send a few at once. More frames than this, of
# any kind (text, binary, protocol ping), are a flood: closed with 1008.
INBOUND_FRAMES_PER_S: Final = 10.0
INBOUND_FRAME_BURST: Final = 40.0
# How long a close the edge starts (shutdown, an expired token) waits for the client's close frame before
# dropping the connection.
WS_CLOSE_TIMEOUT_S: Final = 5.0
# Once the edge has ended its side of TCP (after the close frames, or at once when it fails a connection),
# how long it discards what the client still sends, waiting for the client's end: closing a socket with
# unread bytes sends a reset, which may destroy the close frame before the client has read it.
WS_LINGER_S: Final = 1.0
# Kernel send buffer of a socket (Linux doubles it for its bookkeeping, so 64 KiB in `ss -tm`). Frames are
# a few hundred bytes and a session sends at most one per type per throttle interval, so this holds many
# seconds of frames; left auto-tuned it grows to 4 MiB, and a client that never reads would park that
# much in the kernel before the edge noticed (the slow-socket timeout starts only when writes back up).
SOCKET_SEND_BUFFER_BYTES: Final = 32 * KIB
# On shutdown, a socket that cannot take its close frame in this long is dropped.
SHUTDOWN_CLOSE_S: Final = 3.0
# Seconds the edge waits for handlers after its sockets were told to close (they end at once).
EDGE_SHUTDOWN_TIMEOUT_S: Final = 10.0
# Seconds a session keeps its NATS subscription after its last local socket left, so that a page
# reload (leave, then join within a moment) does not unsubscribe and subscribe again.
SUBSCRIPTION_LINGER_S: Final = 1.0
# Seconds a session's bucket read serves its next sockets: a new socket of a session whose subscription
# was live before that read gets what its other sockets hold (that read, and every event since) instead
# of two more KV gets. In a connect storm (every socket of an edge reconnecting after its restart, ~1,000
# a second on 2 cores) a session's sockets arrive a second or two apart, so this reads each session
# about once; the bound keeps a state no event reached (the functions died between a put and its event)
# from reaching new sockets for longer.
STATE_REUSE_S: Final = 5.0
# Sessions re-read at once after a NATS reconnect: bounded, so thousands of sessions do not flood
# JetStream with reads the moment it comes back.
RESYNC_CONCURRENCY: Final = 32
# Right after a nats-server restart JetStream may still be recovering its streams: retry the read.
RESYNC_ATTEMPTS: Final = 20
RESYNC_RETRY_S: Final = 0.25
# The sessions overview (ws_edge/overview.py). A page shows at most this many sessions at once: a
# reply of 1,000 sessions is about 450 KB, and a person reads the top of the list.
OVERVIEW_LIMIT_MAX: Final = 1000
OVERVIEW_LIMIT_DEFAULT: Final = 100
# Seconds between sweeps for sessions the bucket's TTL aged out (no marker tells the watch): a session
# stays listed at most this long after it expired, for a sweep over every session costing about 1 ms
# per 10,000.
OVERVIEW_SWEEP_S: Final = 10.0
# Overview sockets per edge. Each holds, while it is slow, the latest frame of every session that
# changed (up to about 500 bytes each): operators' dashboards, not one per user.
OVERVIEW_MAX_SOCKETS: Final = 100
# /readyz asks the functions to answer a discovery ping; a probe must not hang for the full timeout.
READY_TIMEOUT_S: Final = 1.0
# Client IPs whose connect-rate buckets are remembered; beyond this the least recently seen are
# forgotten (they come back with a full bucket), so a spray of addresses cannot grow memory.
MAX_TRACKED_IPS: Final = 100_000
# More digits than any token count needs; also keeps int() far from its slow (and capped) path.
MAX_INT_DIGITS: Final = 18
# Browsers may reuse a CORS preflight answer this long (seconds).
CORS_MAX_AGE_S: Final = 600
# Hops of a forwarding header looked at: a chain of proxies is a few long; a header of thousands is not
# walked (each hop costs a parse).
MAX_HOPS: Final = 16

# -- OpenTelemetry ingest (OTLP/HTTP) ---------------------------------------------------------

# Bytes an export may decompress to: a gzip bomb stops here (413). The OpenTelemetry Collector's batches
# (8,192 records by default) of log records with a dozen attributes stay well below it.
OTLP_MAX_BODY_BYTES: Final = 16 * MIB
# Spans, log records or data points in one export: the Collector's default batch (8,192) fits; more is
# refused whole (413) rather than half-applied, with a message saying to lower the batch size.
OTLP_MAX_RECORDS: Final = 10_000
# Nesting of an OTLP/JSON body (attribute values may nest arrays and maps); real exports need a handful.
OTLP_MAX_JSON_DEPTH: Final = 64
# An attribute string longer than this is nothing a mapping rule reads (ids and model names are at most
# 128 characters, counts a few digits): it is not kept, so a 1 MB value is never copied or quoted.
OTLP_MAX_VALUE_CHARS: Final = 256
# Bodies up to this size are decoded on the event loop (well under a millisecond); larger or compressed
# ones on a worker thread, so a big batch never stalls the sockets.
OTLP_INLINE_BYTES: Final = 64 * KIB
# Changes one export has in flight to the functions at once: enough to keep them busy, bounded so one
# large export cannot queue thousands of requests ahead of everyone else's.
OTLP_CONCURRENCY: Final = 128
# Digest bytes of an export record's idempotency key: 128 bits, so two different records of all the retries
# within a key window never share a key.
OTLP_KEY_DIGEST_BYTES: Final = 16
# Characters of the partial-success message: the first few rejections' reasons, never the input in bulk.
OTLP_MESSAGE_CHARS: Final = 1024
# Digits of a count given as a string (some exporters write every attribute as one).
OTLP_COUNT_DIGITS: Final = 16
