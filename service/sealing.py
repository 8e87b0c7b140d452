"""Sealing: authenticated encryption (Fernet) of data that must be stored but not in clear.

The dead-letter store keeps redacted arguments for people to read and the original arguments
sealed, so a requeue can send them again. The key comes from ``CALLBOARD_SECRET_KEY`` (any
string; all processes of a deployment must share it) or, when unset, from
``<data_dir>/secret.key``, created on first use for a single-machine setup.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from config.settings import Settings, get_settings
from service.errors import CallboardError


class SealError(CallboardError):
    """Sealed data cannot be opened: it was sealed with another CALLBOARD_SECRET_KEY."""


def _fernet(settings: Settings) -> Fernet:
    secret = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
    return _fernet_for(secret, str(Path(settings.data_dir).absolute()))


@lru_cache(maxsize=8)
def _fernet_for(configured: str | None, data_dir: str) -> Fernet:
    if configured is not None:
        secret = configured.encode()
    else:
        path = Path(data_dir) / "secret.key"
        if not path.exists():
            _create_key_file(path)
        secret = path.read_bytes().strip()
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret).digest()))


def _create_key_file(path: Path) -> None:
    # Written in full under a temporary name, then linked into place: a process racing us sees
    # either no key file or a complete one, and exactly one key wins.
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()


def seal(data: bytes, settings: Settings | None = None) -> str:
    """``data`` encrypted and authenticated, as text."""
    return _fernet(settings or get_settings()).encrypt(data).decode()


def unseal(token: str, settings: Settings | None = None) -> bytes:
    """The data sealed in ``token``; raises :class:`SealError` with the wrong key."""
    try:
        return _fernet(settings or get_settings()).decrypt(token.encode())
    except InvalidToken:
        raise SealError(
            "cannot open sealed arguments: CALLBOARD_SECRET_KEY differs from the key that sealed them"
        ) from None
