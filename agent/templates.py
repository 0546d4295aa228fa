"""The commented starting configuration `sync-agent init` writes: one template per source type.

The templates follow the examples in `config/` (a test checks that every key an example
shows, set or commented out, appears in the template of its type). Rendering is pure:
answers in, TOML text out. Secrets are never rendered: a source's secret becomes a
`*_env` or `*_file` reference to where the secret lives.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from string import Template

DEFAULT_NAMES = {
    "standard-metrics": "portfolio",
    "huddle": "huddle",
    "index-health": "index-health",
    "opencde": "cde",
}
PLACEHOLDER_CLIENT_ID = "your-client-id"

HEADER = """\
# sync-agent configuration, written by `sync-agent init`.
# Check it:   sync-agent --config ${path} check-config
# Every key is explained in the examples in the project's config/ folder.

[agent]
mirror_dir = ${mirror_dir}  # required: each source mirrors into a sub-folder named after it
# state_dir = "~/.local/state/sync-agent"   # default: $$STATE_DIRECTORY, else this
# state_url = "postgresql+asyncpg://sync@db/sync"   # any SQLAlchemy async URL; default SQLite
# max_concurrent_downloads = 8              # shared by all sources
# max_connections_per_host = 8
# bandwidth_limit = "20M"                   # bytes per second for all transfers (K/M/G)
# min_free_space = "1G"                     # kept free; default 5 % of the volume, at most 1G
# log_format = "auto"                       # auto: console on a terminal, JSON lines elsewhere
# log_level = "info"
# listen = "127.0.0.1:8749"                 # /healthz /readyz /metrics /status /events, POST
# api_token_env = "SYNC_AGENT_API_TOKEN"    # off loopback, /status /events and POST need it
# shutdown_timeout = "30s"                  # how long SIGTERM waits for running downloads
# lease_duration = "30s"                    # replicas: a stopped one's work moves on after it
"""

STANDARD_METRICS = """
[[sources]]
name = ${name}  # letters, digits, - and _; also the mirror sub-folder
type = "standard-metrics"
# base_url = "https://api.standardmetrics.io/v1"     # the default
# token_url = "https://api.standardmetrics.io/o/token/"
client_id = ${client_id}
${client_secret}
# company_id = "abc123"                   # only this company's documents
poll_interval = "15m"
# requests_per_minute = 120               # the documented limit, shared by every call
# write_metadata = false                  # true: also write <file>.meta.json
${filters}
# enabled = false                         # keep the source in the file without syncing it
"""

HUDDLE = """
[[sources]]
name = ${name}  # letters, digits, - and _; also the mirror sub-folder
type = "huddle"
# base_url = "https://api.huddle.net"        # the default
# token_url = "https://login.huddle.net/token"   # login.huddle.com for FedRAMP
client_id = ${client_id}
# client_secret_env = "HUDDLE_CLIENT_SECRET"  # optional for public clients
${refresh_token}  # only the first: rotated tokens live in the state
workspaces = ${workspaces}  # their root folders are mirrored
# folders = ["https://api.huddle.net/files/folders/98765"]
# download_reason = "offline-file"        # one of Huddle's reasons, or "other/<text>"
# auth_scheme = "Bearer"                  # "OAuth2" for older deployments
# formats = ["application/pdf"]           # also keep a PDF rendition beside each document
# trust_folder_times = false              # true only if a folder's time covers its subtree
poll_interval = "10m"
# write_metadata = false
${filters}
# enabled = false                         # keep the source in the file without syncing it
"""

INDEX_HEALTH = """
[[sources]]
name = ${name}  # letters, digits, - and _; also the mirror sub-folder
type = "index-health"
base_url = ${base_url}
client_id = ${client_id}
${client_secret}
# fingerprint = "my-server-1"             # default: a stable id derived once and stored
# collections = ["collection-123"]        # default: discovered through /get-plans
# download_method = "presigned"           # or "direct"
write_metadata = true                     # description, tags, plans in <file>.meta.json
poll_interval = "30m"
${filters}
# enabled = false                         # keep the source in the file without syncing it

[sources.user]  # who the agent acts as; at least one of email, date_of_birth, uid, eid
first_name = ${first_name}
last_name = ${last_name}
email = ${email}
# date_of_birth = "1980-01-31"
# uid = "svc-sync"
# eid = "E123"
# phone = "+44 20 7946 0000"
# group_name = "my-domain"
"""

OPENCDE = """
# OpenCDE: after `check-config`, sign in and pick documents in the browser:
#   sync-agent --config ${path} login ${bare_name}
#   sync-agent --config ${path} select ${bare_name}
# The browser's callbacks arrive on [agent] listen (default 127.0.0.1:8749).
[[sources]]
name = ${name}  # letters, digits, - and _; also the mirror sub-folder
type = "opencde"
base_url = ${base_url}  # discovery: /foundation/versions
client_id = ${client_id}
${client_secret}
# refresh_token_env = "CDE_REFRESH_TOKEN" # start without `login`
# keep_versions = 1                       # 2: also keep the previous version as "name (v2.0).ext"
poll_interval = "5m"                      # the standard's minimum; shorter values are raised
# write_metadata = false
${filters}
# enabled = false                         # keep the source in the file without syncing it
"""

FILTERS = """\
# Filters, on the path inside this source's folder (** any folders, * within a name):
# include = ["**/*.pdf", "**/*.{docx,xlsx}"]  # only these (default: everything)
# exclude = ["**/drafts/**"]              # never these, even when included
# ignore_case = false                     # true: *.pdf also matches REPORT.PDF
# max_size = "500M"                       # min_size too; sizes as 10M, 1G, 1GiB or bytes
# on_filter_exclude = "keep"              # "remove": delete files a new filter leaves out\
"""

TEMPLATES: Mapping[str, str] = {
    "standard-metrics": STANDARD_METRICS,
    "huddle": HUDDLE,
    "index-health": INDEX_HEALTH,
    "opencde": OPENCDE,
}
SECRET_KEYS: Mapping[str, str] = {  # the secret each template must reference
    "standard-metrics": "client_secret",
    "huddle": "refresh_token",
    "index-health": "client_secret",
    "opencde": "client_secret",
}
EXAMPLE_VALUES: Mapping[str, Mapping[str, object]] = {  # what a blank answer becomes
    "standard-metrics": {},
    "huddle": {"workspaces": ["your-workspace-id"]},
    "index-health": {
        "base_url": "https://api.example.com",
        "first_name": "Sync",
        "last_name": "Agent",
        "email": "sync-agent@example.com",
    },
    "opencde": {"base_url": "https://cde.example.com"},
}


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives: an environment variable or a file (never the value itself)."""

    kind: str  # "env" or "file"
    where: str

    def line(self, key: str) -> str:
        return f"{key}_{self.kind} = {toml_string(self.where)}"


@dataclass(frozen=True)
class SourceAnswers:
    """What init knows about one source; `values` holds the type's other essentials."""

    type: str
    name: str
    client_id: str
    secret: SecretRef
    values: Mapping[str, object] = field(default_factory=dict)


def toml_string(value: str) -> str:
    """A TOML basic string: JSON escapes for controls, other text raw (TOML has no
    surrogate-pair escapes), and DEL escaped (TOML forbids it raw)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML rendering for {type(value).__name__}")


def shell_word(text: str) -> str:
    """`text` quoted for a shell command shown in a comment (never breaking the comment)."""
    return shlex.quote(text) if text.isprintable() else "CONFIG"


def env_name(source: str, key: str) -> str:
    """The environment variable a secret reference names: `PORTFOLIO_CLIENT_SECRET`."""
    cleaned = "".join(c if c.isalnum() else "_" for c in source.upper())
    return f"{cleaned}_{key.upper()}"


def render(path: str, mirror_dir: str, sources: Sequence[SourceAnswers]) -> str:
    """The whole configuration file for these answers."""
    shown = shell_word(path)
    parts = [Template(HEADER).substitute(path=shown, mirror_dir=toml_string(mirror_dir))]
    parts += [render_source(shown, answers) for answers in sources]
    return "".join(parts)


def render_source(shown_path: str, answers: SourceAnswers) -> str:
    values = {**EXAMPLE_VALUES[answers.type], **answers.values}
    key = SECRET_KEYS[answers.type]
    fields = {name: toml_value(value) for name, value in values.items()}
    fields |= {
        "path": shown_path,
        "bare_name": shell_word(answers.name),
        "name": toml_string(answers.name),
        "client_id": toml_string(answers.client_id),
        "filters": FILTERS,
        key: answers.secret.line(key),
    }
    return Template(TEMPLATES[answers.type]).substitute(fields)
