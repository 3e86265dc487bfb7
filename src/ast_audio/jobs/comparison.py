"""The one rule a resumed job uses to compare the options that wrote an output with its own (the local
engine's state file, `jobs.output`, and a Ray job's directory, `jobs.directory`)."""

from __future__ import annotations

from typing import Any

from ast_audio.checkpoints.identity import model_location

_MODEL_KEYS = ("model", "model_fingerprint")


def option_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Each option in which the recorded `before` and this run's `now` differ, as "hop was default, now 1.0"
    (an option not given, None or absent, is "default").

    The model (`checkpoints.identity.model_identity`): the same when both records have a fingerprint and they
    are equal, however the model was named; when one has none (an output written before fingerprints were
    recorded, a Hub id not in the cache), when both names resolve to the same place from here.
    """
    differences = [f"{key} was {_shown(before.get(key))}, now {_shown(now.get(key))}"
                   for key in sorted((set(before) | set(now)) - set(_MODEL_KEYS)) if before.get(key) != now.get(key)]
    model = _model_difference(before, now)
    return ([model] if model else []) + differences


def _model_difference(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    if "model" not in before and "model" not in now:
        return None
    was, is_now = before.get("model_fingerprint"), now.get("model_fingerprint")
    if was and is_now:
        if was == is_now:
            return None
        return (f"model was {before.get('model')!r} (content {was[:12]}), now {now.get('model')!r} (content "
                f"{is_now[:12]}): another checkpoint, or one changed since")
    named_before, named_now = before.get("model"), now.get("model")
    if isinstance(named_before, str) and isinstance(named_now, str) and \
            model_location(named_before) == model_location(named_now):
        return None
    return f"model was {_shown(named_before)}, now {_shown(named_now)}"


def _shown(value: Any) -> str:
    return "default" if value is None else repr(value)
