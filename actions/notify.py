"""The notify action: one message to any number of services through Apprise (Slack, Discord, ntfy, e-mail, JSON...)."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from actions.base import ActionError, BaseAction, SettingError
from actions.http_policy import denied, networks
from actions.paths import PathError, literal, readable

if TYPE_CHECKING:
    from apprise.plugins.base import NotifyBase

logger = logging.getLogger(__name__)

FORMATS = ("text", "markdown", "html")
# URL options that make an Apprise service read a local file (a payload template, a key).
_FILE_OPTIONS = ("template", "keyfile", "subfile", "pgppub", "pgpprv")
# What separates the parts of an Apprise URL: a secret part is masked whole between two of these.
_URL_PARTS = re.compile(r"[/:@?&=#,]+")


class NotifyAction(BaseAction):
    """Sends ``title`` and ``body`` to every Apprise URL in ``urls``; the step fails only when none was reached.

    The result lists ``sent`` and ``failed`` services by their masked URL (no
    password or token). A URL that names a host (json://, form://, mmost://,
    ntfy://host...) is refused before anything is sent when the host resolves
    to an address in WORKFLOW_HTTP_DENY; services with a fixed vendor host
    (slack://, discord://, tgram://) are not checked (see docs/task-library.md).
    """

    type = "notify"
    result_keys = ("sent", "failed")
    path_fields = {"attach": "attachments"}
    config_choices = {"format": FORMATS}
    # A notification sent twice is read twice: an attempt interrupted by a crash is not repeated.
    idempotent = False

    def __init__(
        self,
        name: str,
        *,
        urls: Sequence[str] | str,
        body: str,
        title: str = "",
        format: str = "text",
        attach: Sequence[str | Mapping[str, Any]] | str | None = None,
        **options: Any,
    ):
        super().__init__(name, **options)
        self.urls = urls
        self.body = body
        self.title = title
        self.format = format
        self.attach = attach
        if isinstance(format, str) and "{{" not in format and format.strip().lower() not in FORMATS:
            raise SettingError("format", f"action {name!r}: format must be one of {', '.join(FORMATS)}, got {format!r}")
        if not isinstance(urls, (str, list, tuple)) or not all(isinstance(url, str) for url in _as_list(urls)):
            raise SettingError("urls", f"action {name!r}: urls must be an Apprise URL or a list of them, got {urls!r}")
        for index, url in enumerate(_as_list(urls)):
            if "{{" not in url and "{%" not in url:  # a template is checked once rendered, at run time
                try:
                    plugin(url)
                except ActionError as error:
                    raise SettingError("urls", f"action {name!r}: urls[{index}]: {error}") from None

    @classmethod
    def refusals(cls, config: Mapping[str, Any], settings: Mapping[str, Any],
                 storage_path: str | None = None) -> list[tuple[str, str]]:
        """``attach``, and the files a literal URL makes Apprise read (``?keyfile=``), outside WORKFLOW_FILES_ROOT."""
        found = super().refusals(config, settings, storage_path)
        urls = config.get("urls")
        for index, url in enumerate(_as_list(urls)):
            if literal(url):
                try:
                    check_files(plugin(url), url, index, settings, storage_path)
                except ActionError as error:
                    found.append(("urls" if isinstance(urls, str) else f"urls[{index}]",
                                  str(error).removeprefix("notify: ")))
        return found

    def config_secrets(self) -> set[str]:
        """The credentials inside the URLs (passwords, tokens), for the engine to scrub everywhere."""
        found: set[str] = set()
        if isinstance(self.urls, (str, list, tuple)):
            for url in _as_list(self.urls):
                if isinstance(url, str):
                    found |= url_secrets(url)
        return found

    def execute(self, data_store: dict) -> dict:
        """Send the notification; returns ``{"sent": [...], "failed": [...]}``."""
        import apprise  # here, not at the top: it loads a hundred service modules

        urls = [str(url).strip() for url in _as_list(self.urls) if str(url or "").strip()]
        if not urls:
            raise ActionError("notify: urls is empty: give at least one Apprise URL", retryable=False)
        fmt = str(self.format or "text").strip().lower()
        if fmt not in FORMATS:
            raise ActionError(f"notify: format must be one of {', '.join(FORMATS)}, got {self.format!r}",
                              retryable=False)
        plugins = []
        for index, url in enumerate(urls):
            try:
                plugins.append(plugin(url))
            except ActionError as error:
                raise ActionError(f"notify: urls[{index}]: {error}", retryable=False) from None
        deny = networks(self.context.settings.get("WORKFLOW_HTTP_DENY"))
        for index, service in enumerate(plugins):
            check_files(service, urls[index], index, self.context.settings, self.context.storage_path,
                        self.context.attachment_folders)
            check_host(service, deny)
            # A redirect would lead to an address nobody checked; the URL's own ?redirect=yes asks for them.
            service.redirects = False
        notifier = apprise.Apprise()
        for service in plugins:
            notifier.add(service)
        attachments = self._attachments(apprise)
        outcome = notifier.notify(body=str(self.body or ""), title=str(self.title or ""), body_format=fmt,
                                  attach=attachments, log_level=logging.WARNING)
        sent, failed = [], []
        for result in outcome:
            entry = {"service": result.name, "url": masked(result.url)}
            if result:
                sent.append(entry)
            else:
                reasons = [" ".join(str(log.message).split()) for log in result.logs()]
                entry["error"] = "; ".join(dict.fromkeys(reasons)) or result.status.name.lower()
                failed.append(entry)
        if failed and not sent:
            raise ActionError("notify: nothing was sent: "
                              + "; ".join(f"{item['url']}: {item['error']}" for item in failed))
        for item in failed:
            logger.warning("notify %s: %s failed: %s", self.name, item["url"], item["error"])
        logger.info("notify %s: sent to %d service(s), %d failed", self.name, len(sent), len(failed))
        return {"sent": sent, "failed": failed}

    def _attachments(self, apprise: Any) -> Any:
        """An AppriseAttachment of the ``attach`` files, each checked like send_email's; None without any."""
        items = self.attach
        if not items:
            return None
        if isinstance(items, (str, Mapping)):
            items = [items]
        attachments = apprise.AppriseAttachment()
        for index, item in enumerate(items):
            path_value = item.get("path") if isinstance(item, Mapping) else item
            if not path_value:
                raise ActionError(f"notify: attachment without a path: {item!r}", retryable=False)
            try:
                path = readable(self.context.settings, self.context.storage_path, path_value, f"attach[{index}]",
                                self.context.attachment_folders)
            except PathError as error:
                raise ActionError(f"notify: {error}", retryable=False) from None
            if not path.is_file():
                raise ActionError(f"notify: attachment {path} not found", retryable=False)
            attachments.add(str(path))
        return attachments


def check_files(service: NotifyBase, url: str, index: int, settings: Mapping[str, Any],
                storage_path: str | None, own: Iterable[str] = ()) -> None:
    """ActionError unless every file the URL makes Apprise read lies inside WORKFLOW_FILES_ROOT (like ``attach``).

    Some services read a file a URL option names: a payload template (``?template=`` of slack, discord,
    telegram, workflows...), a key (``?keyfile=``, ``?subfile=``, ``?pgppub=``, ``?pgpprv=``). Its content
    goes out to the service, so ``?template=/srv/pyflow/data/...`` sent the store to whoever owns the URL.
    Such a path must be absolute (Apprise reads a relative one from the server's working folder, the code)
    and inside the root; a URL in its place (``http://...``, fetched without WORKFLOW_HTTP_DENY) is refused.
    """
    from apprise import AppriseAttachment
    from apprise.attachment.file import AttachFile

    options: dict[str, list[str]] = {}
    for key, values in parse_qs(urlsplit(url.strip()).query).items():
        options.setdefault(key.lower(), []).extend(value for value in values if value)
    for option in _FILE_OPTIONS:
        attribute = getattr(service, option, None)
        values = list(options.get(option, ()))
        if isinstance(attribute, AppriseAttachment):
            # What Apprise itself will open, whichever of a repeated option it took.
            values += [item.dirty_path for item in attribute if isinstance(item, AttachFile)]
        elif option == "template":
            continue  # a template's name or id (whatsapp, gupshup...), not a file
        where = f"notify: urls[{index}] option {option!r}"
        if isinstance(attribute, AppriseAttachment) and any(not isinstance(item, AttachFile) for item in attribute):
            raise ActionError(f"{where}: {values[0] if values else ''!r} is not a file inside WORKFLOW_FILES_ROOT",
                              retryable=False)
        for value in values:
            path = value[len("file://"):] if value.lower().startswith("file://") else value
            if not path.startswith("/"):
                raise ActionError(f"{where}: {value!r} must be an absolute path inside WORKFLOW_FILES_ROOT",
                                  retryable=False)
            try:
                readable(settings, storage_path, unquote(path), f"urls[{index}] option {option!r}", own)
            except PathError as error:
                raise ActionError(f"notify: {error}", retryable=False) from None


def _as_list(urls: Any) -> list[Any]:
    return [urls] if isinstance(urls, str) else list(urls) if isinstance(urls, (list, tuple)) else []


def plugin(url: str) -> NotifyBase:
    """The Apprise service for ``url``; ActionError naming the URL (credentials masked) when Apprise cannot read it."""
    import apprise

    service = apprise.Apprise.instantiate(url.strip()) if url.strip() else None
    if service is None:
        raise ActionError(f"Apprise cannot read the URL {unread(url)!r} (see https://appriseit.com/services/ "
                          f"for the URL of each service)", retryable=False)
    return service


def check_host(service: NotifyBase, deny: Iterable[Any]) -> None:
    """ActionError when the host a URL names resolves to an address WORKFLOW_HTTP_DENY refuses.

    Only services whose URL names a host are checked: slack://, discord:// and the like go to their vendor.
    """
    host = getattr(service, "host", None)
    if "host" not in getattr(service, "template_tokens", {}) or not host:
        return
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return  # no address: nothing can be sent there, and Apprise says so
    deny = tuple(deny)
    for info in infos:
        address = str(info[4][0])
        if denied(address, deny):
            raise ActionError(f"notify: {masked(service.url(privacy=True))}: {host} resolves to {address}, "
                              f"which WORKFLOW_HTTP_DENY refuses", retryable=False)


def masked(url: str) -> str:
    """An Apprise URL for messages: the password masked, Apprise's default options dropped; for any URL, read or not."""
    text = str(url).strip()
    head, _, _query = text.partition("?")
    try:
        parts = urlsplit(head)
        password = parts.password
    except ValueError:
        return head.split("@", 1)[-1]
    if password:
        head = head.replace(f":{password}@", ":****@", 1)
    return head


def unread(url: str) -> str:
    """A URL Apprise cannot read, for messages: scheme, user and host only (its path may hold a token)."""
    text = str(url).strip()
    try:
        parts = urlsplit(text)
        host = f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
        user = f"{parts.username}:****@" if parts.password else f"{parts.username}@" if parts.username else ""
    except ValueError:
        return text.split("://", 1)[0] + "://..." if "://" in text else "..."
    if not parts.scheme:
        return text[:20] + "..." if len(text) > 20 else text
    rest = "/..." if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{user}{host}{rest}"


def url_secrets(url: str) -> set[str]:
    """The secret parts of an Apprise URL: what Apprise masks in it (tokens, passwords) and the URL's own password.

    Never raises: an unreadable URL yields its password alone.
    """
    found: set[str] = set()
    try:
        password = urlsplit(url.strip()).password
    except ValueError:
        password = None
    if password:
        found |= {password, unquote(password)}
    if "{{" in url or "{%" in url or not url.strip():
        return found
    try:
        import apprise

        service = apprise.Apprise.instantiate(url.strip())
        if service is None:
            return found
        plain, private = service.url(privacy=False), service.url(privacy=True)
    except Exception:  # noqa: BLE001 - a plugin that breaks on a URL must not stop the run's bookkeeping
        return found
    plain_parts, private_parts = _URL_PARTS.split(plain), _URL_PARTS.split(private)
    if len(plain_parts) == len(private_parts):
        for shown, hidden in zip(plain_parts, private_parts, strict=True):
            if shown != hidden and shown:
                found |= {shown, unquote(shown)}
    else:  # a mask that changed the shape: hide the whole URL rather than guess
        found |= {url.strip(), plain}
    return {value for value in found if value}
