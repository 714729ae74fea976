#!/usr/bin/env python3
"""Offline checks of the IoT Edge deployment files (tooling, called by tests/it/deployment.rs).

Subcommands (each exits 0 when everything holds, 1 with one line per problem otherwise):

  validate-manifest MANIFEST [--schemas DIR]
      A generated manifest (config/deployment.<platform>.json) against
      azure-iot-edge-deployment-2.0.json, its $edgeAgent part against
      azure-iot-edgeagent-deployment-1.1.json and its $edgeHub part against
      azure-iot-edgehub-deployment-1.2.json; plus IoT Edge's createOptions rules
      (each chunk a string of at most 512 characters, the joined chunks one JSON object).
  validate-template TEMPLATE [--schemas DIR]
      A deployment.template.json against azure-iot-edge-deployment-template-4.0.json.
  yaml-to-json FILE
      Prints a YAML file (docker/compose.yaml) as JSON, so Rust can read it without a YAML crate.

Schemas are read from DIR (default: deployment/schemas beside this repository's scripts/);
their cross-references are resolved from those files only, never from the network.
Needs the packages `jsonschema` (>= 4.18, with `referencing`) and, for yaml-to-json, `PyYAML`:
scripts/deploy_venv.sh makes a venv with both.
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_SCHEMAS = ROOT / "deployment" / "schemas"

MANIFEST_SCHEMA = "azure-iot-edge-deployment-2.0.json"
AGENT_SCHEMA = "azure-iot-edgeagent-deployment-1.1.json"
HUB_SCHEMA = "azure-iot-edgehub-deployment-1.2.json"
TEMPLATE_SCHEMA = "azure-iot-edge-deployment-template-4.0.json"

# edgeAgent stores createOptions in twin properties, at most 512 characters each
# ("createOptions", "createOptions01", ... "createOptions07").
CREATE_OPTIONS_CHUNK = 512
CREATE_OPTIONS_CHUNKS = 8


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def schema_set(schema_dir):
    """All *.json schemas of schema_dir, keyed by file name, and a registry of them by id."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    schemas = {}
    resources = []
    for path in sorted(pathlib.Path(schema_dir).glob("*.json")):
        contents = load_json(path)
        schemas[path.name] = contents
        resource = Resource.from_contents(contents, default_specification=DRAFT4)
        uri = contents.get("$id") or contents.get("id")
        if not uri:
            raise SystemExit(f"{path}: schema has no id; cannot resolve references to it")
        resources.append((uri, resource))
    for needed in (MANIFEST_SCHEMA, AGENT_SCHEMA, HUB_SCHEMA, TEMPLATE_SCHEMA):
        if needed not in schemas:
            raise SystemExit(f"{schema_dir}: missing {needed}")
    # No `retrieve` function: a reference outside these files is an error, not a download.
    return schemas, Registry().with_resources(resources)


def schema_errors(schema, instance, registry, label):
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, registry=registry)
    out = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        out.append(f"{label}: {where}: {err.message}")
    return out


def create_options_errors(manifest):
    out = []
    agent = manifest.get("modulesContent", {}).get("$edgeAgent", {}).get("properties.desired", {})
    modules = {}
    modules.update(agent.get("systemModules", {}))
    modules.update(agent.get("modules", {}))
    for name, module in modules.items():
        settings = module.get("settings", {})
        chunks = []
        for i in range(CREATE_OPTIONS_CHUNKS):
            key = "createOptions" if i == 0 else f"createOptions{i:02d}"
            if key not in settings:
                break
            chunks.append((key, settings[key]))
        for key, chunk in chunks:
            if not isinstance(chunk, str):
                out.append(f"{name}: settings.{key} must be a string in a manifest, got {type(chunk).__name__}")
            elif len(chunk) > CREATE_OPTIONS_CHUNK:
                out.append(f"{name}: settings.{key} has {len(chunk)} characters, more than {CREATE_OPTIONS_CHUNK}")
        if chunks and all(isinstance(c, str) for _, c in chunks):
            joined = "".join(c for _, c in chunks)
            try:
                parsed = json.loads(joined)
            except ValueError as e:
                out.append(f"{name}: createOptions is not JSON: {e}")
                continue
            if not isinstance(parsed, dict):
                out.append(f"{name}: createOptions is not a JSON object")
    return out


def cmd_validate_manifest(args):
    schemas, registry = schema_set(args.schemas)
    manifest = load_json(args.manifest)
    content = manifest.get("modulesContent", {})
    errors = schema_errors(schemas[MANIFEST_SCHEMA], manifest, registry, MANIFEST_SCHEMA)
    errors += schema_errors(
        schemas[AGENT_SCHEMA], {"$edgeAgent": content.get("$edgeAgent")}, registry, AGENT_SCHEMA
    )
    errors += schema_errors(
        schemas[HUB_SCHEMA], {"$edgeHub": content.get("$edgeHub")}, registry, HUB_SCHEMA
    )
    errors += create_options_errors(manifest)
    return report(errors, f"{args.manifest}: valid ({MANIFEST_SCHEMA}, {AGENT_SCHEMA}, {HUB_SCHEMA}, createOptions)")


def cmd_validate_template(args):
    schemas, registry = schema_set(args.schemas)
    template = load_json(args.template)
    errors = schema_errors(schemas[TEMPLATE_SCHEMA], template, registry, TEMPLATE_SCHEMA)
    if template.get("$schema-template") != "4.0.0":
        errors.append(f"$schema-template is {template.get('$schema-template')!r}, expected '4.0.0'")
    return report(errors, f"{args.template}: valid ({TEMPLATE_SCHEMA})")


def cmd_yaml_to_json(args):
    import yaml

    with open(args.file, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    json.dump(data, sys.stdout)
    sys.stdout.write("\n")
    return 0


def report(errors, ok_line):
    if errors:
        for e in errors:
            print(e, file=sys.stderr)
        return 1
    print(ok_line)
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-manifest")
    p.add_argument("manifest")
    p.add_argument("--schemas", default=str(DEFAULT_SCHEMAS))
    p.set_defaults(func=cmd_validate_manifest)

    p = sub.add_parser("validate-template")
    p.add_argument("template")
    p.add_argument("--schemas", default=str(DEFAULT_SCHEMAS))
    p.set_defaults(func=cmd_validate_template)

    p = sub.add_parser("yaml-to-json")
    p.add_argument("file")
    p.set_defaults(func=cmd_yaml_to_json)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as e:
        print(f"deploy_check.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
