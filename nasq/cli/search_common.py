"""Options and launch steps shared by every ``nasq search`` target (and ``nasq demo``).

The flags are generated from the settings dataclasses of :mod:`nasq.settings` (a field
``data_limit`` is the flag ``--data-limit``, its one-line comment the help). Every flag defaults to
"not given" (``argparse.SUPPRESS``), so the settings resolve in three layers: the target's
defaults, then ``--config FILE`` (YAML or a run's ``nasq-run.json``), then the flags actually given.
Values are parsed and validated by the dataclasses, so a bad value is one ``nasq: error:`` line
before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Mapping

from nasq.errors import ConfigError
from nasq.settings import ExperimentSettings, SearchSettings, field_help, flag, load_config

# common flag -> SearchSettings field
COMMON_FLAGS: dict[str, str] = {
    "--searcher": "searcher", "--population": "population_size", "--sample-size": "sample_size",
    "--children-per-parent": "children_per_parent", "--samples": "samples", "--concurrency": "concurrency",
    "--seed": "seed", "--points": "points_to_evaluate", "--storage": "storage", "--name": "name",
    "--address": "address",
}
_COMMON_HELP = {"points_to_evaluate": "a genome to evaluate first (repeatable)"}
_SKIPPED_TYPES = ("dict",)  # fields set only through --config


def _type_of(cls: type, name: str) -> str:
    return str({f.name: f.type for f in dataclasses.fields(cls)}[name])


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE``."""
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="settings file (YAML, or a run's nasq-run.json); flags given override it")


def add_experiment_arguments(parser: argparse.ArgumentParser, cls: type[ExperimentSettings],
                             defaults: Mapping[str, Any] | None = None, only: tuple[str, ...] = (),
                             aliases: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """Add one flag per field of ``cls`` (all but derived and mapping fields, or just ``only``)."""
    helps, aliases = field_help(cls), dict(aliases or {})
    values = {f.name: f.default for f in dataclasses.fields(cls)}
    values.update(defaults or {})
    for f in dataclasses.fields(cls):
        if f.name in cls.DERIVED or (only and f.name not in only) or _type_of(cls, f.name).startswith(
                _SKIPPED_TYPES):
            continue
        names = (flag(f.name), *aliases.get(f.name, ()))
        extra: dict[str, Any] = {}
        if f.name == "sim_time":
            extra = {"nargs": "?", "const": "0.5", "metavar": "SECONDS"}
        shown = values[f.name]
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
        parser.add_argument(*names, dest=f.name, default=argparse.SUPPRESS,
                            help=f"{helps.get(f.name, '')} (default: {shown})", **extra)


def add_search_target(sub: argparse._SubParsersAction, name: str, help_text: str,
                      cls: type[ExperimentSettings], search_defaults: Mapping[str, int],
                      aliases: Mapping[str, tuple[str, ...]] | None = None) -> argparse.ArgumentParser:
    """Add one ``nasq search NAME`` target: ``--config``, the flags of ``cls`` and the shared search flags
    with this target's defaults of P, S and samples (the same mapping ``resolve_settings`` takes)."""
    parser = sub.add_parser(name, help=help_text)
    add_config_argument(parser)
    add_experiment_arguments(parser, cls, aliases=aliases)
    add_search_arguments(parser, population=search_defaults["population_size"],
                         sample=search_defaults["sample_size"], samples=search_defaults["samples"],
                         extra_defaults=search_defaults)
    return parser


def add_search_arguments(parser: argparse.ArgumentParser, population: int = 16, sample: int = 16,
                         samples: int = 64, only: tuple[str, ...] = (),
                         extra_defaults: Mapping[str, Any] | None = None) -> None:
    """Add the options every search target shares (searcher, P, S, samples, Ray, storage); the help
    shows ``extra_defaults`` (a target's other search defaults, e.g. its searcher) where given."""
    helps = field_help(SearchSettings)
    defaults = {**(extra_defaults or {}), "population_size": population, "sample_size": sample,
                "samples": samples}
    for name, field in COMMON_FLAGS.items():
        if only and field not in only:
            continue
        default = defaults.get(field, next(f.default for f in dataclasses.fields(SearchSettings)
                                           if f.name == field))
        text = f"{_COMMON_HELP.get(field, helps.get(field, ''))} (default: {default})"
        if field == "points_to_evaluate":
            parser.add_argument(name, dest=field, action="append", default=argparse.SUPPRESS,
                                metavar="GENOME", help=_COMMON_HELP[field])
        else:
            parser.add_argument(name, dest=field, default=argparse.SUPPRESS, help=text)


def parse_value(cls: type, name: str, text: str) -> Any:
    """Parse one flag's text by the field's type (validation itself is the dataclass's)."""
    kind = _type_of(cls, name).replace(" ", "")
    if text is None or kind.startswith("tuple") or kind.startswith("str"):
        return text
    base = kind.split("|")[0]
    if kind.endswith("|None") and text.strip().lower() in ("none", ""):
        return None
    if base == "bool":
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.strip().lower() not in words:
            raise ConfigError(f"{flag(name)} {text!r} must be true or false")
        return words[text.strip().lower()]
    try:
        if base == "int":
            if not (text.strip().lstrip("+-").isascii() and text.strip().lstrip("+-").isdecimal()):
                raise ValueError(text)
            return int(text)
        if base == "float":
            if not text.strip().isascii():
                raise ValueError(text)
            return float(text)
    except ValueError:
        raise ConfigError(f"{flag(name)} {text!r} must be {'an integer' if base == 'int' else 'a number'}"
                          ) from None
    return text


def resolve_settings(args: argparse.Namespace, experiment: str, cls: type[ExperimentSettings],
                     search_defaults: Mapping[str, Any] | None = None,
                     experiment_defaults: Mapping[str, Any] | None = None) -> SearchSettings:
    """Resolve the settings of a search: target defaults < ``--config`` < flags given.

    Raises:
        ConfigError: a bad file, a file of another experiment, or a bad value (one line).
    """
    given = vars(args)
    search: dict[str, Any] = dict(search_defaults or {})
    options: dict[str, Any] = dict(experiment_defaults or {})
    if given.get("config"):
        doc = load_config(given["config"])
        if doc.get("experiment", experiment) != experiment:
            raise ConfigError(f"--config {given['config']} is for experiment {doc['experiment']!r}; use "
                              f"`nasq search {doc['experiment']} --config ...`")
        cfg = doc.pop("experiment_config", None) or {}
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"--config {given['config']}: experiment_config must be a mapping")
        doc.pop("experiment", None)
        search.update(doc)
        options.update(cfg)
    for field in COMMON_FLAGS.values():
        if field in given:
            search[field] = given[field] if field in ("points_to_evaluate", "searcher", "storage", "name",
                                                      "address") else parse_value(SearchSettings, field,
                                                                                   given[field])
    names = {f.name for f in dataclasses.fields(cls)}
    for field in names & set(given):
        options[field] = parse_value(cls, field, given[field])
    return SearchSettings.from_dict({**search, "experiment": experiment,
                                     "experiment_config": cls.from_dict(options, "settings")}, "settings")


def launch(settings: SearchSettings) -> Path:
    """Validate, start or join Ray, print where to look, search (``nasq.runner.run_search``).

    Returns:
        The run directory.
    """
    from nasq import runner

    def show(url: str | None, run_dir: Path) -> None:
        print(f"nasq: Ray dashboard: {url or '(not running)'}", flush=True)
        from nasq.cli.submit import dashboard_help  # the token to open it, and the status actor's name
        from nasq.status import NAMESPACE, status_actor_name

        for line in filter(None, [dashboard_help(url), url and f"nasq: search status actor: "
                                  f"{status_actor_name(run_dir.name)} (namespace {NAMESPACE}; Actors page)"]):
            print(line, flush=True)
        print(f"nasq: run directory: {run_dir}", flush=True)

    return runner.run_search(settings, on_connect=show)
