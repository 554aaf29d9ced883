"""One flag builder for every job command line: the flags are generated from a config dataclass.

Declare each setting once, on the dataclass, with its help (and, where they apply, its choices, its
argument group, the words for a ``None`` default) in the field's metadata::

    @dataclass(frozen=True)
    class PredictConfig:
        videos: tuple[str, ...] = field(metadata=flag("video files", positional=True))
        model: str = field(metadata=flag("models:/NAME@ALIAS, ... or a checkpoint folder"))
        top_k: int = field(default=5, metadata=flag("classes listed per video", group="output"))
        test_clips: int | None = field(default=None, metadata=flag("temporal views", none="the checkpoint's"))

    def main(argv: list[str] | None = None) -> int:
        return CommandLine(PredictConfig, "cast-predict", __file__, description=__doc__).run(argv, predict)

    def predict(parsed: Parsed) -> int:    # the job: parsed.config is the PredictConfig
        ...

:meth:`CommandLine.run` is every door's one way from flags to job: a wrong flag or a value the config
refuses is one line ``<prog>: error: <what>`` and exit code 2; ``--print-config`` prints each setting and
its source and returns 0 without building the config (no I/O: it works on paths that do not exist);
otherwise the job runs with ``parsed.config``. :meth:`CommandLine.parse` is the step below it (values
and sources, nothing built).

What the builder makes of a field ``some_name``:

* the flag ``--some-name`` (the field's name: flag and field never differ); ``positional=True`` makes it
  a positional argument instead (a ``tuple[...]`` positional takes one or more values); ``short="-o"``
  adds a one-letter spelling beside it;
* its type from the annotation: ``int``, ``float``, ``str``, ``bool`` (``--x`` / ``--no-x``), ``X | None``
  (the text ``none`` gives ``None``), ``tuple[X, ...]`` or ``tuple[X, X]`` (several values; ``sep=","``:
  one value ``a,b`` split at the separator). A value is converted losslessly (:func:`coerce`: ``1e-3`` ->
  0.001, ``5.0`` -> 5, but ``5.5`` is no int);
* its default shown once, in the help, as ``(default: X)``; a ``None`` (or empty text) default is shown
  with the words of ``none=`` (``(default: the checkpoint's)``); a field without a default (and without a value in a
  lower layer) is a required flag;
* argument groups in the order their first field appears (``group=``; fields without one go under
  "options");
* every command line gets ``--print-config``: each resolved value with its source, ``default`` (the
  dataclass), a lower layer's name (``layers=``: e.g. the recipe YAML) or ``flag``.

``layers`` are ``(source, {field: value})`` pairs between the dataclass defaults and the flags (a
training recipe): ``--help`` shows their values as the defaults. Layers that depend on the flags (the
recipe's preset, another recipe folder) are given to ``run``/``parse`` as ``layers(flag_values, extra_values)``,
which replaces the constructor's. ``skip`` names fields that are no flag (set by the program itself).
Extra flags that are no config field (``--num-cpus``) are added with ``command.parser.add_argument``
(pass ``default=argparse.SUPPRESS``); they come back in ``Parsed.extra``.

The program name is the command the user typed: ``cast-predict`` for the installed command, the file's
name for ``python workflows/predict.py``, and the installed command's name otherwise (``python -m``,
tests calling ``main(argv)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .common import user_error

PRINT_CONFIG = "print_config"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_NO_DEFAULT = object()


def flag(help: str, *, choices: Sequence[Any] | None = None, group: str | None = None, none: str | None = None,
         positional: bool = False, metavar: str | None = None, sep: str | None = None, short: str | None = None,
         cli: bool = True) -> dict[str, Any]:
    """The metadata of a config field for the builder (``field(metadata=flag(...))``): its help text,
    allowed values, argument group, the words for a ``None`` default (``none``), positional or not;
    ``sep``: a ``tuple[X, ...]`` field typed as one value split at ``sep`` (``a,b``; ``none``: empty);
    ``short``: a one-letter spelling beside ``--name`` (``-o``).
    ``cli=False``: the field is no flag (the program sets it). Modules that must not import ``workflows``
    (``pipelines``) write the same keys as a plain dict."""
    return {"help": help, "choices": tuple(choices) if choices is not None else None, "group": group,
            "none": none, "positional": positional, "metavar": metavar, "sep": sep, "short": short, "cli": cli}


class FlagError(ValueError):
    """A value that does not fit its field's type; the message names the field (and the value's source)."""


# -- types ----------------------------------------------------------------------------------------------
def type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")


def coerce(key: str, value: Any, hint: Any, source: str = "") -> Any:
    """``value`` as type ``hint`` (int, float, bool, str, ``X | None``, ``tuple[...]``, dict), or a
    :class:`FlagError` naming ``key``. Lossless conversions only: "1e-3" -> 0.001, 5.0 -> 5, "true" ->
    True; 5.5 -> int and 3 -> str are errors."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(key, value, inner, source)
    try:
        return _coerce(value, hint, args)
    except (TypeError, ValueError):
        where = f" (from {source})" if source else ""
        raise FlagError(f"{key}: expected {type_name(hint)}, got {value!r}{where}") from None


def _coerce(value: Any, hint: Any, args: tuple) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
    elif hint is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        number = float(value) if isinstance(value, (float, str)) else math.nan
        if number.is_integer():
            return int(number)
    elif hint is float and not isinstance(value, bool):
        if isinstance(value, (int, float, str)):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], typing.get_args(args[0])) for v in value)
        if len(value) == len(args):
            return tuple(_coerce(v, a, typing.get_args(a)) for v, a in zip(value, args))
    elif typing.get_origin(hint) is dict and isinstance(value, dict):
        return value
    raise TypeError(value)


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether ``None`` is allowed)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in typing.get_args(hint):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner, True
    return hint, False


class _Split:
    """argparse ``type=`` of a ``tuple[X, ...]`` field typed as one text split at ``sep``, each piece an X."""

    __name__ = "list"

    def __init__(self, sep: str, item: "_FlagType"):
        self.sep, self.item = sep, item

    def __call__(self, text: str) -> tuple[Any, ...]:
        if text.lower() == "none":
            return ()
        return tuple(self.item(t.strip()) for t in text.split(self.sep) if t.strip())


class _FlagType:
    """argparse ``type=`` of one value of a field: :func:`coerce` from text, ``none`` for optional fields."""

    def __init__(self, name: str, hint: Any, optional: bool):
        self.name, self.hint, self.optional = name, hint, optional
        self.__name__ = type_name(hint)

    def __call__(self, text: str) -> Any:
        if self.optional and text.lower() in ("none", "null"):
            return None
        try:
            return coerce(self.name, text, self.hint)
        except FlagError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


# -- the parser -------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with the project's one error shape: ``<prog>: error: <what>`` on one line, exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    """The description as written (paragraphs and examples), options wrapped to the terminal."""


def program_name(command: str, script: str | None = None) -> str:
    """The name the user typed: the installed ``command`` or the ``script``'s file name when that is what
    ran (``sys.argv[0]``), else ``command``."""
    typed = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return typed if typed in (command, os.path.basename(script or "")) else command


@dataclass(frozen=True)
class Parsed:
    values: dict[str, Any]  # field -> value: dataclass default < layers < flags
    sources: dict[str, str]  # field -> "default", a layer's name or "flag"
    extra: dict[str, Any]  # flags that are no config field (added with command.parser.add_argument)
    print_config: bool
    prog: str = ""  # the program name, as the user typed it (error lines begin with it)
    config: Any = None  # the config built from ``values`` (by CommandLine.run; parse builds none)


class CommandLine:
    """The command line of one job, generated from ``config`` (a dataclass); see the module doc."""

    def __init__(self, config: type, command: str, script: str | None = None, *, description: str | None = None,
                 layers: Sequence[tuple[str, Mapping[str, Any]]] = (), skip: Sequence[str] = ()):
        self.config, self.layers, self.skip = config, list(layers), set(skip)
        self.hints = typing.get_type_hints(config)
        self.fields = [f for f in dataclasses.fields(config) if f.name not in self.skip and f.metadata.get("cli", True)]
        missing = [f.name for f in self.fields if not f.metadata.get("help")]
        if missing:
            raise TypeError(f"{config.__name__}: fields without help: {missing} (field(metadata=flag(...)))")
        self.prog = program_name(command, script)
        self.parser = _Parser(prog=self.prog, description=description, formatter_class=_Help,
                              argument_default=argparse.SUPPRESS)
        lower = self._lower_values()
        groups: dict[str | None, Any] = {}
        for f in self.fields:
            title = f.metadata.get("group")
            if title not in groups:
                groups[title] = self.parser if title is None else self.parser.add_argument_group(title)
            self._add(groups[title], f, lower.get(f.name, _NO_DEFAULT))
        self.parser.add_argument("--print-config", action="store_true", dest=PRINT_CONFIG,
                                 help="print each resolved setting with its source (default, recipe, flag) "
                                      "and exit; nothing starts")

    def _lower_values(self) -> dict[str, Any]:
        values = {f.name: f.default for f in dataclasses.fields(self.config) if f.default is not dataclasses.MISSING}
        values.update({f.name: f.default_factory() for f in dataclasses.fields(self.config)
                       if f.default_factory is not dataclasses.MISSING})
        for _, layer in self.layers:
            values.update(layer)
        return values

    def _add(self, group, f: dataclasses.Field, default: Any) -> None:
        meta, (hint, optional) = f.metadata, _optional(self.hints[f.name])
        positional = meta.get("positional")
        text = meta["help"] + ("" if positional else _default_text(default, meta.get("none"), meta.get("sep")))
        kwargs: dict[str, Any] = {"help": text.replace("%", "%%")}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if positional:
            many = typing.get_origin(hint) is tuple
            inner = typing.get_args(hint)[0] if many else hint
            group.add_argument(f.name, type=_FlagType(f.name, inner, optional), nargs="+" if many else None,
                               **kwargs)
            return
        names = ([meta["short"]] if meta.get("short") else []) + ["--" + f.name.replace("_", "-")]
        if hint is bool:
            group.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, **kwargs)
            return
        if meta.get("sep"):
            item = _FlagType(f.name, typing.get_args(hint)[0], False)
            group.add_argument(*names, dest=f.name, type=_Split(meta["sep"], item), required=default is _NO_DEFAULT,
                               **kwargs)
            return
        if typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            inner = args[0]
            kwargs["nargs"] = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
        else:
            inner = hint
        group.add_argument(*names, dest=f.name, type=_FlagType(f.name, inner, optional),
                           required=default is _NO_DEFAULT, **kwargs)

    def parse(self, argv: Sequence[str] | None = None,
              layers: Callable[[dict[str, Any], dict[str, Any]], Sequence[tuple[str, Mapping[str, Any]]]] | None = None
              ) -> Parsed:
        """Flags over the layers over the dataclass defaults -> the values and each one's source. A wrong
        flag exits 2 with one line (argparse's own checks: unknown flag, type, choices, missing)."""
        given = vars(self.parser.parse_args(argv))
        print_config = given.pop(PRINT_CONFIG, False)
        names = {f.name for f in dataclasses.fields(self.config)}
        flags = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if k in names}
        extra = {k: v for k, v in given.items() if k not in names}
        values: dict[str, Any] = {}
        sources = {f.name: "default" for f in dataclasses.fields(self.config)}
        for f in dataclasses.fields(self.config):
            if f.default is not dataclasses.MISSING:
                values[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                values[f.name] = f.default_factory()
        below = list(layers(flags, extra)) if layers is not None else self.layers
        for source, layer in below + [("flag", flags)]:
            values.update(layer)
            sources.update(dict.fromkeys(layer, source))
        # The dataclass's order; a layer's unknown keys stay, last, for the config to refuse by name.
        order = [f.name for f in dataclasses.fields(self.config) if f.name in values]
        order += [k for k in values if k not in names]
        return Parsed({k: values[k] for k in order}, sources, extra, print_config, self.prog)

    def run(self, argv: Sequence[str] | None, job: Callable[[Parsed], int], *,
            layers: Callable[[dict[str, Any], dict[str, Any]], Sequence[tuple[str, Mapping[str, Any]]]] | None = None,
            build: Callable[[Parsed], Any] | None = None, show: Callable[[Parsed], str] | None = None) -> int:
        """A door's ``main``: :meth:`parse` the flags (a wrong one: one line and exit 2), then either
        ``--print-config`` (each setting and its source, ``show(parsed)`` where the default lines do not
        say enough; exit code 0: nothing is built, read or started, so paths that do not exist print too)
        or ``job(parsed)`` with ``parsed.config`` built from the values (``build(parsed)``, by default the
        dataclass itself). A value the config refuses (a ``ValueError`` while building or showing) is one
        line ``<prog>: error: <what>`` and exit code 2, before the job starts. Returns the exit code."""
        try:
            parsed = self.parse(argv, layers)  # a layer (a recipe file) may refuse a value too
            if parsed.print_config:
                print(show(parsed) if show is not None else self.format_config(parsed))
                return 0
            config = build(parsed) if build is not None else self.config(**parsed.values)
        except ValueError as err:
            return user_error(self.prog, err)
        return job(dataclasses.replace(parsed, config=config))

    def format_config(self, parsed: Parsed) -> str:
        """One line per setting, the extra flags given last: name, value (JSON), source (what
        ``--print-config`` prints)."""
        return format_config(parsed.values | parsed.extra, parsed.sources | dict.fromkeys(parsed.extra, "flag"))


def format_config(values: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    """One line per setting: name, value (JSON), source (``default`` when ``sources`` does not say)."""
    width = max(map(len, values), default=0)
    return "\n".join(f"{k:<{width}}  {json.dumps(v, default=str):<24}  {sources.get(k, 'default')}"
                     for k, v in values.items())


def _default_text(default: Any, none: str | None, sep: str | None = None) -> str:
    if default is _NO_DEFAULT:
        return " (required)"
    if default is None or (default == "" and none):  # nothing given: the words for what is used then
        return f" (default: {none})" if none else ""
    if isinstance(default, bool):
        return f" (default: {'on' if default else 'off'})"
    if isinstance(default, (tuple, list)):
        return f" (default: {(sep or ' ').join(map(str, default)) or 'none'})"
    return f" (default: {default})"
