"""Which names make a training function's payload big, told before a long upload.

A Livy session gets the function as statements of base64 text, so a training set that
the function captures as a global (``X_train`` from an earlier cell) travels with it. Above
``BIG_PAYLOAD`` bytes the user is told the heaviest captured names and what to do instead.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

#: Payload size above which the heaviest names are listed.
BIG_PAYLOAD = 20 * 2**20
#: How many names the note lists.
SHOWN = 3


def heaviest(fn: Callable, objects: Dict[str, Any]) -> List[Tuple[str, int]]:
    """``(name, pickled bytes)`` of what travels with ``fn`` (its captured names and the
    config's objects), heaviest first; what cannot be pickled alone is left out."""
    from ...portable import captured_values, cloudpickle_module

    dumps = cloudpickle_module().dumps
    sizes: List[Tuple[str, int]] = []
    for name, value in list(captured_values(fn)) + sorted(objects.items()):
        try:
            sizes.append((name, len(dumps(value))))
        except Exception:  # noqa: BLE001 - the payload itself pickled; this is a hint only
            continue
    return sorted(sizes, key=lambda item: -item[1])


def big_payload_note(fn: Callable, objects: Dict[str, Any], size: int,
                     threshold: int = BIG_PAYLOAD) -> Optional[str]:
    """Print (and return) the note for a payload of ``size`` bytes, if it is big."""
    if size < threshold:
        return None
    names = [f"{name} ({mb(bytes_)})" for name, bytes_ in heaviest(fn, objects)[:SHOWN]
             if bytes_ >= size / 20]
    note = (f"maggy-magic: the training function travels to the cluster as {mb(size)}"
            + (f", mostly {', '.join(names)}" if names else "")
            + "; the upload takes a while: load such data on the cluster instead (a cell "
              "of sparkmagic's PySpark kernel, or --cell remote) or read it inside the "
              "function")
    print(note)
    return note


def mb(size: float) -> str:
    return f"{size / 2**20:.1f} MB"
