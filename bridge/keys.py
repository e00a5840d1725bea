"""Keys derived from the configured secret: one per project for the keyed mappings, one for the vault.

The secret is `security.secret` (environment: PACS_BRIDGE_SECURITY__SECRET) or the content of
`security.secret_file`, created with 32 random bytes on first use. Every node of one deployment must share
it: it makes the pseudonyms, offsets and UIDs agree, and it opens the vault.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import ConfigError
from bridge.settings import SecuritySettings


@dataclass(frozen=True)
class Keys:
    secret: bytes

    def project_key(self, project: str) -> bytes:
        return hmac.new(self.secret, f"project\x00{project}".encode(), hashlib.sha256).digest()

    def vault_key(self) -> bytes:
        return hmac.new(self.secret, b"vault", hashlib.sha256).digest()


def load_keys(settings: SecuritySettings) -> Keys:
    if settings.secret is not None:
        value = settings.secret.get_secret_value().encode()
        if len(value) < 16:
            raise ConfigError("security.secret: use at least 16 characters (32 random bytes, hex, are best)")
        return Keys(secret=value)
    path = settings.secret_file
    if not path.exists():
        _create_secret_file(path)
    value = path.read_bytes().strip()
    if len(value) < 16:
        raise ConfigError(f"security.secret_file {path}: the secret is shorter than 16 characters")
    return Keys(secret=value)


def _create_secret_file(path: Path) -> None:
    """Write a new secret to a temporary file, then link it into place: readers never see it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(secrets.token_hex(32) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process created it first; use theirs
    finally:
        temporary.unlink()
