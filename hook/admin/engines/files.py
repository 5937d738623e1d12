"""Reading and writing engine config files: the backup-first merge and its exact undo.

:func:`merge_file` applies a pure merge to a file and keeps the original beside it
(``<file>.dpdk-oci-hook.bak``); :func:`revert_file` undoes it: the backup's bytes when nothing
else changed since, else only our part is taken out.  Unregister after register, with nothing
else changed in between, gives back the original bytes (or no file, if there was none).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hook.admin.engines.base import BACKUP_SUFFIX, Say
from hook.errors import EngineConfigError
from hook.host.fsutil import replace_file


def read_text(path: Path) -> str | None:
    """The file's text, None if it does not exist; a file that is not UTF-8 is refused."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise EngineConfigError(reason=f"{path} is not UTF-8 text; nothing was changed") from exc


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Temp file beside ``path``, fsync, rename: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(str(path), text.encode(), None if path.exists() else mode)


def show(say: Say, text: str) -> None:
    """A file's would-be content, for a dry run."""
    for line in text.rstrip("\n").splitlines():
        say(f"  | {line}")


def backup_of(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def merge_file(
    path: Path,
    merge: Callable[[str | None], str],
    registered: Callable[[str | None], bool],
    dry_run: bool,
    say: Say,
    label: str,
) -> bool:
    """Apply ``merge`` to ``path``; back up the original first.  Returns whether it changed."""
    current = read_text(path)
    new = merge(current)
    if new == current:
        say(f"{label}: {path} is up to date")
        return False
    backup = backup_of(path)
    take_backup = current is not None and not backup.exists() and not registered(current)
    if dry_run:
        say(f"{label}: would write {path}" + (f" (original kept as {backup})" if take_backup else "") + ":")
        show(say, new)
        return True
    if take_backup:
        assert current is not None
        write_text_atomic(backup, current, path.stat().st_mode & 0o7777)
    write_text_atomic(path, new)
    say(f"{label}: wrote {path}" + (f" (original kept as {backup})" if take_backup else ""))
    return True


def revert_file(
    path: Path,
    merge: Callable[[str | None], str],
    unmerge: Callable[[str, str | None], str | None],
    registered: Callable[[str | None], bool],
    dry_run: bool,
    say: Say,
    label: str,
) -> bool:
    """Undo ``merge``: the backup's bytes when nothing else changed since, else only our part."""
    current = read_text(path)
    backup = backup_of(path)
    original = read_text(backup)
    if current is None or not registered(current):
        say(f"{label}: {path} does not register us: nothing to undo")
        return False
    if original is not None and merge(original) == current:
        action, new, drop_backup = f"restore {path} from {backup}", original, True
    elif original is None and merge(None) == current:
        action, new, drop_backup = f"remove {path} (it was created by install)", None, False
    else:
        new = unmerge(current, original)
        drop_backup = False
        action = f"remove our entry from {path} (changed since install" + (f"; {backup} kept)" if original is not None else ")")
        if new is None:
            action = f"remove {path} (only our entry was left)"
    if dry_run:
        say(f"{label}: would {action}")
        return True
    if new is None:
        path.unlink()
    else:
        write_text_atomic(path, new)
    if drop_backup:
        backup.unlink()
    say(f"{label}: {action.replace('restore', 'restored', 1).replace('remove', 'removed', 1)}")
    return True
