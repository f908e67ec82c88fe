#!/usr/bin/env python3
"""A small `helm` front end over the real Helm engine (Helm v4's Go SDK, as bundled by the
PyPI package helm-python-sdk in libhelm_c.so). Run it through render.sh, which installs it.

    lint CHART [-f VALUES]... [--strict]
        `helm lint`: prints findings; exits 1 on an error (or, with --strict, a warning).
    template CHART [-f VALUES]... [--name NAME] [--namespace NS] [--include-crds]
        `helm template`: prints every rendered object, hooks included, as one YAML stream
        with `# Source:` comments; exits 1 when the values break the schema or a template fails.
    notes CHART [-f VALUES]... [--name NAME] [--namespace NS]
        `helm install --dry-run=client`: the whole install path offline; prints NOTES.txt.
    version
        Prints the helm-python-sdk, helm-c-sdk and Helm SDK versions.
"""
import argparse
import json
import sys

import helm_python as helm


def merge(base, override):
    """Helm's coalescing of values files: maps merge, anything else replaces, null deletes."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def user_values(files):
    values = {}
    for path in files or []:
        with open(path, encoding="utf-8") as f:
            values = merge(values, helm.values_from_yaml(f.read()) or {})
    return values or None


def split_docs(text):
    docs, current = [], []
    for line in text.splitlines():
        if line.rstrip() == "---":
            docs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    docs.append("\n".join(current))
    return [d.strip("\n") for d in docs if d.strip()]


def comment_only(doc):
    return all(not l.strip() or l.lstrip().startswith("#") for l in doc.splitlines())


def fail(error):
    print(f"Error: {error}", file=sys.stderr)
    return 1


def cmd_lint(args):
    report = helm.lint(args.chart, user_values(args.values), strict=args.strict or None)
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    worst = 0
    for m in report.get("messages") or []:
        print(f"[{names.get(m['severity'], m['severity'])}] {m['path']}: {m['error']}")
        worst = max(worst, m["severity"])
    for e in report.get("errors") or []:
        print(f"[ERROR] {e}")
        worst = 3
    print(f"{report.get('total_charts_linted', 0)} chart(s) linted, "
          f"{'failed' if worst >= (2 if args.strict else 3) else 'no failures'}")
    return 1 if worst >= (2 if args.strict else 3) else 0


def cmd_template(args):
    try:
        with helm.Chart.load(args.chart) as chart:
            out = []
            if args.include_crds:
                for crd in chart.crds:
                    for doc in split_docs(crd["data"]):
                        if not comment_only(doc):
                            out.append(f"---\n# Source: {crd['filename']}\n{doc}\n")
            rendered = chart.render(user_values(args.values), name=args.name,
                                    namespace=args.namespace, is_install=True)
            for path in sorted(rendered):
                if path.endswith("NOTES.txt") or path.rsplit("/", 1)[-1].startswith("_"):
                    continue
                for doc in split_docs(rendered[path]):
                    if comment_only(doc):
                        continue
                    out.append(f"---\n# Source: {path}\n{doc}\n")
    except helm.HelmError as e:
        return fail(e)
    sys.stdout.write("".join(out))
    return 0


def cmd_notes(args):
    try:
        with helm.Config(storage_driver="memory", namespace=args.namespace) as cfg:
            release = cfg.install(args.chart, args.name, user_values(args.values),
                                  namespace=args.namespace, dry_run="client")
    except helm.HelmError as e:
        return fail(e)
    sys.stdout.write(release.get("notes") or "")
    return 0


def cmd_version(_args):
    print(json.dumps({"helm_c": helm.helm_c_version(), "helm_sdk": helm.helm_sdk_version()}))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, func in (("lint", cmd_lint), ("template", cmd_template), ("notes", cmd_notes)):
        s = sub.add_parser(name)
        s.add_argument("chart")
        s.add_argument("-f", "--values", action="append", help="values file (repeatable)")
        s.set_defaults(func=func)
        if name == "lint":
            s.add_argument("--strict", action="store_true")
        else:
            s.add_argument("--name", default="release-name")
            s.add_argument("--namespace", default="default")
        if name == "template":
            s.add_argument("--include-crds", action="store_true")
    sub.add_parser("version").set_defaults(func=cmd_version)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
