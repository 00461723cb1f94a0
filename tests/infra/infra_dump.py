"""Run by tests/infra inside the infra venv (.venv-infra), where pycep-parser and PyYAML live.

    python infra_dump.py bicep PATH...   -> JSON {"pycep_version", "trees": {path: tree}, "errors": {path: message}}
    python infra_dump.py yaml PATH       -> the YAML document as JSON

Paths may be files or directories (every *.bicep below a directory). Exit 1 if any Bicep file failed to parse,
so the parse gate fails on a syntax error even though checkov itself would only count it as a parsing error.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any


def _bicep_files(args: list[str]) -> list[Path]:
    files: list[Path] = []
    for arg in args:
        path = Path(arg)
        files.extend(sorted(path.rglob("*.bicep")) if path.is_dir() else [path])
    return files


def dump_bicep(args: list[str]) -> int:
    from pycep import BicepParser

    parser = BicepParser()
    trees: dict[str, object] = {}
    errors: dict[str, str] = {}
    for file in _bicep_files(args):
        try:
            trees[str(file)] = parser.parse(file_path=file)
        except Exception as exc:  # lark raises many types; every one is "does not parse"
            errors[str(file)] = f"{type(exc).__name__}: {exc}"
    json.dump({"pycep_version": version("pycep-parser"), "trees": trees, "errors": errors}, sys.stdout, default=str)
    return 1 if errors else 0


def dump_yaml(path: str) -> int:
    """A repeated key is an error, not "the last one wins": azd would silently drop the first block."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        document = yaml.load(Path(path).read_text(), Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    json.dump(document, sys.stdout)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "bicep":
        return dump_bicep(argv[1:])
    if len(argv) == 2 and argv[0] == "yaml":
        return dump_yaml(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
