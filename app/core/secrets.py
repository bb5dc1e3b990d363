"""Secrets: values encrypted at rest (Fernet) with a key kept apart from the store, read as ``{{ secrets.NAME }}``.

The key is WORKFLOW_ENCRYPTION_KEY (Fernet keys, comma-separated: the first
encrypts, every one decrypts) or else the file WORKFLOW_KEY_FILE (one key a
line, same order), made 0600 at the first secret when neither exists. The store
holds ciphertext only; this module never logs, raises or answers a value.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actions import atomic
from actions.paths import files_root
from actions.private_files import make_private_dir
from app.core.redaction import KNOWN_SECRETS
from app.core.run_logs import PROCESS_WIDE
from app.core.templating import RenderError
from app.errors import ConfigError, InvalidInput, NotFound

if TYPE_CHECKING:  # cryptography loads only when a secret is used: `run.py list` without secrets never pays for it
    from cryptography.fernet import MultiFernet

    from app.storage.base import Store

logger = logging.getLogger(__name__)

#: A secret's name: what ``{{ secrets.NAME }}`` can spell, and a path segment as it is.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
DEFAULT_KEY_FILE = "~/.config/pyflow/encryption.key"
_KEY_HELP = ("Fernet keys (32 url-safe base64-encoded bytes each; make one with: python -c "
             "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')")

#: What a private credential field (``secret_fields`` of an action or trigger) may hold: exactly one secret's name.
SECRET_REF = re.compile(r"^\s*\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")


class UnknownSecret(RenderError):
    """A template named a secret that is not stored."""


def resolve_secret_fields(obj: Any, secrets: Mapping[str, str] | None, where: str) -> None:
    """Put the value of each ``{{ secrets.NAME }}`` that ``obj``'s ``secret_fields`` hold in its place.

    Those fields are private (never rendered as templates, never shown), so only this exact form is
    read there. ``obj`` is a per-run or per-binding copy: the shared original keeps the reference.
    RenderError naming ``where`` and the field for an unknown secret.
    """
    for attribute in getattr(obj, "secret_fields", ()):
        value = getattr(obj, attribute, None)
        match = SECRET_REF.match(value) if isinstance(value, str) else None
        if match is None:
            continue
        field = attribute.lstrip("_")
        if secrets is None:
            raise RenderError(f"{where}: field {field!r} names secret {match.group(1)!r}, but no secrets are "
                              "available here")
        try:
            setattr(obj, attribute, secrets[match.group(1)])
        except RenderError as error:
            raise RenderError(f"{where}: field {field!r}: {error}") from None


def check_name(name: Any, field: str = "name") -> str:
    """``name`` when it can name a secret; InvalidInput (422) naming ``field`` otherwise."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        message = f"{field} must be a letter or '_', then up to 63 letters, digits or '_', got {name!r}"
        raise InvalidInput(f"invalid secret name: {message}", details=[{"path": field, "message": message}])
    return name


def key_file(settings: Mapping[str, Any]) -> Path:
    """Where the key file is (WORKFLOW_KEY_FILE, ``~`` expanded)."""
    return Path(os.path.expanduser(str(settings.get("WORKFLOW_KEY_FILE") or DEFAULT_KEY_FILE))).absolute()


def _fernets(keys: list[str], source: str) -> MultiFernet:
    from cryptography.fernet import Fernet, MultiFernet

    if not keys:
        raise ConfigError(f"{source} holds no key: it must hold {_KEY_HELP}")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError:  # the message never quotes a key
        raise ConfigError(f"{source} must hold {_KEY_HELP}") from None


def _split(text: str, separator: str) -> list[str]:
    return [part.strip() for part in text.split(separator) if part.strip()]


class Secrets:
    """Names and encrypted values in ``store``, encrypted and decrypted with the key the settings name."""

    def __init__(self, store: Store, settings: Mapping[str, Any]):
        self.store = store
        self._env_keys = _split(str(settings.get("WORKFLOW_ENCRYPTION_KEY") or ""), ",")
        self._new_key = str(settings.get("WORKFLOW_NEW_ENCRYPTION_KEY") or "").strip()
        self.key_file = key_file(settings)
        self._storage = Path(str(settings.get("WORKFLOW_STORAGE_PATH") or "./data")).absolute()
        self._files_root = files_root(settings)
        self._cipher: MultiFernet | None = None
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        """The key's setting, as messages name it."""
        return "WORKFLOW_ENCRYPTION_KEY" if self._env_keys else f"WORKFLOW_KEY_FILE {self.key_file}"

    # -- the key ------------------------------------------------------------------
    def check(self) -> None:
        """At start-up: ConfigError (one line naming the setting or file) when the key cannot read the secrets."""
        if not self._env_keys and self.key_file.resolve().is_relative_to(self._storage.resolve()):
            raise ConfigError(f"WORKFLOW_KEY_FILE {self.key_file} is inside WORKFLOW_STORAGE_PATH {self._storage}: "
                              "a key kept beside its ciphertext protects nothing; keep it elsewhere")
        if not self._env_keys and self.key_file.resolve().is_relative_to(self._files_root):
            raise ConfigError(f"WORKFLOW_KEY_FILE {self.key_file} is inside WORKFLOW_FILES_ROOT {self._files_root}: "
                              "a file step could read or replace the key; keep it elsewhere")
        stored = self.store.list_secrets()
        if not stored and not self._env_keys:
            return  # the key file is made with the first secret
        cipher = self._key(create=False)
        if cipher is None:
            raise ConfigError(f"WORKFLOW_KEY_FILE {self.key_file} does not exist, but the store holds "
                              f"{len(stored)} encrypted secrets: restore that file, or set WORKFLOW_ENCRYPTION_KEY "
                              "to the key they were encrypted with")
        if stored:
            self._decrypt(cipher, stored[0])

    def _key(self, *, create: bool) -> MultiFernet | None:
        """The key (made into the key file when ``create`` and there is none); None when there is none."""
        with self._lock:
            if self._cipher is not None:
                return self._cipher
            if self._env_keys:
                self._cipher = _fernets(self._env_keys, "WORKFLOW_ENCRYPTION_KEY")
                return self._cipher
            try:
                text = self.key_file.read_text(encoding="ascii")
            except FileNotFoundError:
                if not create:
                    return None
                text = self._make_key_file()
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(f"WORKFLOW_KEY_FILE {self.key_file} cannot be read: "
                                  f"{getattr(error, 'strerror', None) or type(error).__name__}") from None
            else:
                logger.info("secrets: encryption key from WORKFLOW_KEY_FILE %s", self.key_file, extra=PROCESS_WIDE)
                if self.key_file.stat().st_mode & 0o077:
                    logger.warning("WORKFLOW_KEY_FILE %s can be read by other users: chmod 600 it", self.key_file,
                                   extra=PROCESS_WIDE)
            self._cipher = _fernets(_split(text, "\n"), f"WORKFLOW_KEY_FILE {self.key_file}")
            return self._cipher

    def _make_key_file(self) -> str:
        """A new key written to the key file (0600, in a 0700 folder); the file's text if another process won."""
        from cryptography.fernet import Fernet

        text = Fernet.generate_key().decode() + "\n"
        try:
            make_private_dir(self.key_file.parent)
            temp = self.key_file.with_name(f".{self.key_file.name}.{os.getpid()}.new")
            atomic.write_atomic(temp, text.encode())
            try:
                os.link(temp, self.key_file)  # never replaces a key another process made meanwhile
            except FileExistsError:
                return self.key_file.read_text(encoding="ascii")
            finally:
                temp.unlink(missing_ok=True)
        except OSError as error:
            raise ConfigError(f"WORKFLOW_KEY_FILE {self.key_file} cannot be made: {error.strerror or error}") from None
        logger.warning("secrets: made a new encryption key in WORKFLOW_KEY_FILE %s; back it up apart from "
                       "the store: without it the secrets cannot be read", self.key_file, extra=PROCESS_WIDE)
        return text

    def _decrypt(self, cipher: MultiFernet, record: dict) -> str:
        from cryptography.fernet import InvalidToken

        try:
            value = cipher.decrypt(record["ciphertext"].encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise ConfigError(f"{self.source}: this key does not decrypt the stored secret {record['name']!r}; "
                              "set the key the secrets were encrypted with") from None
        KNOWN_SECRETS.add([value])
        return value

    # -- the secrets --------------------------------------------------------------
    def set(self, name: str, value: str) -> bool:
        """Encrypt and store ``value`` as ``name``; True when the name is new."""
        check_name(name)
        if not isinstance(value, str) or not value:
            raise InvalidInput("value must be a non-empty string",
                               details=[{"path": "value", "message": "must be a non-empty string"}])
        cipher = self._key(create=True)
        KNOWN_SECRETS.add([value])
        return self.store.put_secret(name, cipher.encrypt(value.encode()).decode())

    def get(self, name: str) -> str:
        """The value of ``name``; UnknownSecret naming it when there is none."""
        record = self.store.get_secret(name) if isinstance(name, str) and NAME.fullmatch(name) else None
        if record is None:
            raise UnknownSecret(f"no secret named {name!r}: store it with PUT /api/secrets/{name} "
                                f"or python run.py secrets set {name}")
        cipher = self._key(create=False)
        if cipher is None:
            raise ConfigError(f"{self.source} does not exist: the stored secrets cannot be decrypted")
        return self._decrypt(cipher, record)

    def names(self) -> list[dict]:
        """``{"name", "created_at", "updated_at"}`` of every secret, by name: never a value."""
        return [{key: record[key] for key in ("name", "created_at", "updated_at")}
                for record in self.store.list_secrets()]

    def delete(self, name: str) -> None:
        """Forget ``name``; NotFound when there is no such secret."""
        if not self.store.delete_secret(check_name(name)):
            raise NotFound(f"no secret named {name!r}")

    def rotate(self) -> int:
        """Re-encrypt every secret with a new key (WORKFLOW_NEW_ENCRYPTION_KEY, or one made into the key file).

        With the key file, the new key is written first above the old one (both decrypt), the secrets are
        re-encrypted, then the old key is dropped: stopping at any point loses nothing. With
        WORKFLOW_ENCRYPTION_KEY the new key must be given; the caller then sets it in its place.
        Returns how many secrets were re-encrypted.
        """
        from cryptography.fernet import Fernet

        old = self._key(create=False)
        if self._env_keys and not self._new_key:
            raise ConfigError("the key comes from WORKFLOW_ENCRYPTION_KEY: set WORKFLOW_NEW_ENCRYPTION_KEY to the "
                              "new key, run rotate-key, then set WORKFLOW_ENCRYPTION_KEY to it")
        new_key = self._new_key or Fernet.generate_key().decode()
        _fernets([new_key], "WORKFLOW_NEW_ENCRYPTION_KEY")  # checked before anything changes
        old_keys = self._env_keys or (_split(self.key_file.read_text(encoding="ascii"), "\n") if old else [])
        both = _fernets([new_key, *old_keys], "the new and old keys")
        if not self._env_keys:
            self._write_keys([new_key, *old_keys])
        stored = self.store.list_secrets()
        for record in stored:
            self._decrypt(both, record)  # a secret the old key cannot read stops the rotation, naming it
            self.store.put_secret(record["name"], both.rotate(record["ciphertext"].encode()).decode())
        if not self._env_keys:
            self._write_keys([new_key])
        with self._lock:
            self._cipher = _fernets([new_key], "the new key")
        return len(stored)

    def _write_keys(self, keys: list[str]) -> None:
        try:
            make_private_dir(self.key_file.parent)
            atomic.write_atomic(self.key_file, "".join(f"{key}\n" for key in keys).encode())
        except OSError as error:
            raise ConfigError(f"WORKFLOW_KEY_FILE {self.key_file} cannot be written: {error.strerror or error}") \
                from None

    def view(self, on_read: Callable[[str], None] | None = None) -> SecretsView:
        """What templates see as ``secrets``; ``on_read(value)`` for each value read (a run's scrubber)."""
        return SecretsView(self, on_read)


class SecretsView(Mapping[str, str]):
    """``secrets.NAME`` in a template: decrypted when read, never listed with values."""

    def __init__(self, secrets: Secrets, on_read: Callable[[str], None] | None):
        self._secrets = secrets
        self._on_read = on_read

    def __getitem__(self, name: str) -> str:
        try:
            value = self._secrets.get(name)
        except ConfigError as error:  # a key that no longer reads it: the step fails naming the setting
            raise RenderError(error.message) from None
        if self._on_read is not None:
            self._on_read(value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter([record["name"] for record in self._secrets.store.list_secrets()])

    def __len__(self) -> int:
        return len(self._secrets.store.list_secrets())


class Placeholders(Mapping[str, str]):
    """``secrets`` where the store is not at hand (``run.py validate``): any name reads as a placeholder text."""

    def __getitem__(self, name: str) -> str:
        return f"(secret {name})"

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0
