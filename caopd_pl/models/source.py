"""Where ``model.model.name_or_path`` points: a local directory or a hub name, checked before any download starts.

transformers treats every string that is not an existing directory as a hub id: a mistyped local path ends, after
network retries, in a hub error that never says the path does not exist, and a misspelled name waits for a network
that may not be there. :func:`check_model_source` answers in one line, at once:

- a local-looking string (``/...``, ``./...``, ``../...``, ``~...``, more than one ``/``, a backslash) must be an
  existing directory;
- a hub name must be in the local Hugging Face cache when ``HF_HUB_OFFLINE`` is set; otherwise the hub must
  answer a 2-second connection check (skipped behind a proxy, where a direct connection says nothing) and then
  know the name (one ``model_info`` request).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from caopd_pl.errors import UsageError
from caopd_pl.models.pull import pull_hint

KEY = "model.model.name_or_path"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_CONNECT_TIMEOUT_S = 2.0
_HUB_TIMEOUT_S = 10.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def looks_local(name: str) -> bool:
    """Whether ``name`` can only mean a local path (a hub id is ``name`` or ``org/name``)."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or name.count("/") > 1 or "\\" in name


def check_model_source(name_or_path: str) -> None:
    """Fail in one line when ``name_or_path`` cannot be loaded without waiting on a network.

    A missing folder named like a model ``python -m caopd_pl pull`` fetches (``models/smollm2-135m-instruct``)
    gets the pull command appended to the error.

    Raises:
        UsageError: a local-looking path that is not a directory, a string that is no hub id, or a hub name that is
            not cached while the hub is offline or unreachable.
    """
    try:
        _check_source(name_or_path)
    except UsageError as err:
        hint = pull_hint(name_or_path)
        if not hint:
            raise
        raise UsageError(f"{err}; {hint}") from err


def _check_source(name_or_path: str) -> None:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return
    fix = "give an existing checkpoint directory or a hub name such as Qwen/Qwen3-0.6B"
    if path.exists():
        raise UsageError(f"{KEY}={name_or_path!r} is a file; give the checkpoint's directory")
    if looks_local(name_or_path):
        raise UsageError(f"{KEY}={name_or_path!r}: no such directory; {fix}")
    if not _HUB_ID.match(name_or_path):
        raise UsageError(f"{KEY}={name_or_path!r} is neither a local directory nor a hub id; {fix}")
    if _is_cached(name_or_path):
        return
    if hub_offline():
        raise UsageError(
            f"{KEY}={name_or_path!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            "download it first (hf download NAME) or give a local checkpoint directory"
        )
    if not hub_reachable():
        raise UsageError(
            f"{KEY}={name_or_path!r} is not in the local Hugging Face cache and {hub_endpoint()} cannot be reached; "
            "check the name and the network, or give a local checkpoint directory"
        )
    _check_on_hub(name_or_path)


def _check_on_hub(repo_id: str) -> None:
    """One request to the hub: a name it does not know fails here in one line, not in transformers' traceback."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi(endpoint=hub_endpoint()).model_info(repo_id, timeout=_HUB_TIMEOUT_S)
    except GatedRepoError:
        return  # it exists; transformers explains the access it needs
    except RepositoryNotFoundError as err:
        raise UsageError(
            f"{KEY}={repo_id!r}: no such model on {hub_endpoint()} (or a private one: log in with hf auth login); "
            "check the name, or give a local checkpoint directory"
        ) from err
    except Exception:  # noqa: BLE001 - rate limits, slow answers: transformers retries and reports them itself
        return


def _is_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def hub_endpoint() -> str:
    """The Hugging Face hub's address (``HF_ENDPOINT``, default ``https://huggingface.co``)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_reachable() -> bool:
    """Whether the hub answers a short connection check; assumed so behind a proxy (a direct check says nothing)."""
    return _behind_proxy() or _reachable(hub_endpoint())


def hub_offline() -> bool:
    """Whether the user set Hugging Face's offline mode."""
    flags = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag in ("1", "ON", "YES", "TRUE") for flag in flags)


def _behind_proxy() -> bool:
    return any(os.environ.get(variable) for variable in _PROXY_VARIABLES)


def _reachable(endpoint: str, timeout: float = _CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the endpoint's host opens within ``timeout`` (name resolution included)."""
    url = urlparse(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # Name resolution ignores the socket timeout; a daemon thread bounds it too.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])
