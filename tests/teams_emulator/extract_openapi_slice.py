"""Cut ``graph-openapi-slice.json`` (next to this file) out of Microsoft's OpenAPI description.

The slice is what ``test_openapi.py`` validates the emulator's responses and notifications
against, so CI needs no file from outside the repository. It holds only:

- the paths and methods the emulator serves (read from its aiohttp router, so a route added
  to the emulator and served by Graph shows up here when the slice is cut again);
- every schema, response and parameter those operations reach through ``$ref``, plus the
  notification payload (``changeNotificationCollection``) and Graph's error body (``ODataError``),
  and the subtypes of each schema kept (``aadUserConversationMember`` of ``conversationMember``),
  which an object names in its ``@odata.type``.

``info`` is the source's, its ``x-subset`` lists narrowed to what the slice holds; ``x-slice``
names the source operations left out and the served routes the source does not describe.

Origin and licence: the input is ``teams-v1.0-subset.openapi.json``, itself a cut of the
OpenAPI description Microsoft publishes for Graph v1.0 (``microsoftgraph/msgraph-sdk-powershell``
``openApiDocs/v1.0``, commit 297822afd2b4740504dcb2bead122623ef941b44, MIT licence, "Copyright
2019 Microsoft Graph"; the exact sources are kept in the slice's ``info.x-subset``). Everything
copied is verbatim except the schemas' ``description`` texts, which are dropped. Run again after changing the emulator's routes:

    .venv/bin/python -m tests.teams_emulator.extract_openapi_slice \\
        path/to/teams-v1.0-subset.openapi.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

SLICE = Path(__file__).with_name("graph-openapi-slice.json")
METHODS = ("get", "put", "post", "patch", "delete")
EXTRA_SCHEMAS = (
    "microsoft.graph.changeNotificationCollection",
    "microsoft.graph.ODataErrors.ODataError",
)
_VARIABLE = re.compile(r"\{[^}]*\}")


def emulator_operations() -> set[tuple[str, str]]:
    """(method, path) of every Graph route the emulator serves, variables as ``{}``, with
    ``{action:a|b}`` alternatives expanded."""
    from graph_emulator import EmulatorConfig, create_app

    app = create_app(EmulatorConfig())
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.resource is None or route.method == "HEAD":
            continue
        path = route.resource.canonical
        pattern = route.resource.get_info().get("pattern")
        if pattern is not None:
            # ``{action:a|b}`` shows as ``{action}`` in ``canonical``; its choices are here.
            for name, choices in re.findall(r"\(\?P<(\w+)>([\w|]+)\)", pattern.pattern):
                path = path.replace("{" + name + "}", "{" + name + ":" + choices + "}")
        if not path.startswith("/v1.0/"):
            continue
        for expanded in _expand(path.removeprefix("/v1.0")):
            found.add((route.method.lower(), _VARIABLE.sub("{}", expanded)))
    return found


def _expand(path: str) -> list[str]:
    match = re.search(r"\{\w+:([\w|]+)\}", path)
    if match is None:
        return [path]
    out: list[str] = []
    for choice in match.group(1).split("|"):
        out += _expand(path[: match.start()] + choice + path[match.end() :])
    return out


def cut(full: dict[str, Any], served: set[tuple[str, str]]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, item in full["paths"].items():
        key = _VARIABLE.sub("{}", path.replace("()", ""))
        methods = [m for m in METHODS if m in item and (m, key) in served]
        if methods:
            kept = {k: v for k, v in item.items() if k not in METHODS}
            kept.update({m: item[m] for m in methods})
            paths[path] = kept
    components = full["components"]
    wanted: dict[str, set[str]] = {
        "schemas": set(EXTRA_SCHEMAS),
        "responses": set(),
        "parameters": set(),
    }
    todo: list[Any] = [paths, *(components["schemas"][n] for n in EXTRA_SCHEMAS)]
    # An object says its own type in "@odata.type" (info.x-subset.odataTypeRule), so the
    # subtypes of each kept type are kept too: a member is checked as the
    # aadUserConversationMember it says it is, not only as a conversationMember.
    hierarchies = full["info"].get("x-subset", {}).get("odataTypeHierarchies", {})
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/"):
                kind, name = ref.removeprefix("#/components/").split("/", 1)
                if name not in wanted[kind]:
                    wanted[kind].add(name)
                    todo.append(components[kind][name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
        if not todo:
            subtypes = {
                sub
                for base, subs in hierarchies.items()
                if base in wanted["schemas"]
                for sub in subs
                if sub not in wanted["schemas"]
            }
            wanted["schemas"] |= subtypes
            todo = [components["schemas"][sub] for sub in subtypes]
    sliced = {
        "openapi": full["openapi"],
        "info": {},
        "servers": full["servers"],
        "paths": dict(sorted(paths.items())),
        "components": {
            kind: {n: components[kind][n] for n in sorted(names)} for kind, names in wanted.items()
        }
        | {"securitySchemes": components.get("securitySchemes", {})},
        "security": full.get("security", []),
    }
    schemas = sliced["components"]["schemas"]
    sliced["components"]["schemas"] = _without_descriptions(schemas)
    sliced["info"] = _info(full, sliced, served)
    return sliced


def operations(spec: dict[str, Any]) -> list[str]:
    """``METHOD /path`` of each operation of an OpenAPI document."""
    return [f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in METHODS if m in item]


def _info(full: dict[str, Any], sliced: dict[str, Any], served: set[tuple[str, str]]) -> Any:
    """The source's ``info``, its ``x-subset`` lists narrowed to what the slice holds (so it
    claims no operation or schema the slice lacks), and ``x-slice``: what was left out and
    which routes the emulator serves that the source does not describe (not validated)."""
    info = json.loads(json.dumps(full["info"]))
    info["title"] = "Microsoft Graph v1.0 - the operations the Pontis Graph emulator serves"
    held = set(operations(sliced))
    components = sliced["components"]
    schemas = components["schemas"]
    subset = info.get("x-subset", {})
    for extension in subset.get("extensions", []):
        added = extension.get("operationsAdded", [])
        extension["operationsAdded"] = [op for op in added if op in held]
        if left := [op for op in added if op not in held]:
            extension["operationsNotInThisSlice"] = left
        extension["componentsAdded"] = [
            c
            for c in extension.get("componentsAdded", [])
            if c.partition("/")[2] in components.get(c.partition("/")[0], {})
        ]
    steps = subset.get("transformations", {})
    if "derivedPaths" in steps:
        steps["derivedPaths"] = [p for p in steps["derivedPaths"] if p in sliced["paths"]]
    if "schemasAddedFromCsdl" in steps:
        steps["schemasAddedFromCsdl"] = [s for s in steps["schemasAddedFromCsdl"] if s in schemas]
    subset["odataTypeHierarchies"] = {
        base: [s for s in subtypes if s in schemas]
        for base, subtypes in subset.get("odataTypeHierarchies", {}).items()
        if base in schemas
    }
    described = {(m, _VARIABLE.sub("{}", p.replace("()", ""))) for m, p in _pairs(full)}
    info["x-slice"] = {
        "note": (
            "Cut by tests/teams_emulator/extract_openapi_slice.py from the file described in"
            " info.x-subset (a subset of Microsoft's Graph v1.0 OpenAPI description, MIT"
            " licence): the operations of that file the Pontis Graph emulator serves, verbatim,"
            " and the components they reach, without the schemas' prose. The lists in"
            " info.x-subset are narrowed to what this slice holds; its counts are the source"
            " file's. Nothing here was written by hand."
        ),
        "sourceOperationsNotServed": sorted(o for o in operations(full) if o not in held),
        "servedNotInSource": sorted(
            f"{m.upper()} {p}" for m, p in served if (m, p.replace("()", "")) not in described
        ),
        "servedNotInSourceNote": (
            "Routes the emulator serves that the source file has no operation for, so they"
            " are not validated. The source file is a subset: some of these are in Microsoft's"
            " full description (the hostedContents lists of channel and user-chat messages"
            " were left out of it on purpose), /me/chats/{id}/... is Graph's alias of"
            " /users/{signed-in user}/chats/{id}/..., which the PowerShell slices it was cut"
            " from do not spell out."
        ),
    }
    return info


def _pairs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m, p) for p, item in spec["paths"].items() for m in METHODS if m in item]


def _without_descriptions(node: Any) -> Any:
    """The schemas' prose is dropped (a third of the size); nothing a validator reads is."""
    if isinstance(node, dict):
        return {
            k: _without_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    full = json.loads(Path(sys.argv[1]).read_text())
    served = emulator_operations()
    sliced = cut(full, served)
    for operation in sliced["info"]["x-slice"]["servedNotInSource"]:
        print(f"not in the description (not validated): {operation}")
    SLICE.write_text(json.dumps(sliced, indent=1, ensure_ascii=False, sort_keys=False) + "\n")
    print(f"{SLICE}: {len(sliced['paths'])} paths, {len(sliced['components']['schemas'])} schemas")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
