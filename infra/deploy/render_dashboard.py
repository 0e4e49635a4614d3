#!/usr/bin/env python3
"""Renders the CloudWatch dashboard of template.yaml as an SVG picture of
its layout (docs/dashboard.svg): each widget at its place, with its title and
the metrics it plots. Run: .local/venv/bin/python infra/deploy/render_dashboard.py
"""
import json
import re
import sys
from html import escape
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
UNIT_X, UNIT_Y = 44, 34  # pixels per dashboard grid unit (24 columns)


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation tags (!Sub, !Ref, ...) as plain values."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


CfnLoader.add_multi_constructor("!", _tag)


def main():
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CfnLoader)
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]
    body = re.sub(r"\$\{([^}]+)\}", lambda m: m.group(1).split(".")[0], body)
    widgets = json.loads(body)["widgets"]
    width = 24 * UNIT_X
    height = max(w["y"] + w["height"] for w in widgets) * UNIT_Y
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="100%" height="100%" fill="#f4f5f7"/>',
        f'<text x="8" y="20" font-size="15" font-weight="bold">'
        f"CloudWatch dashboard &lt;stack&gt;-countries (from template.yaml)</text>",
    ]
    for w in widgets:
        x, y = w["x"] * UNIT_X + 4, w["y"] * UNIT_Y + 34
        wd, ht = w["width"] * UNIT_X - 8, w["height"] * UNIT_Y - 8
        props = w["properties"]
        out.append(f'<rect x="{x}" y="{y}" width="{wd}" height="{ht}" rx="4" fill="white" stroke="#c3c7cf"/>')
        out.append(f'<text x="{x + 8}" y="{y + 18}" font-weight="bold">{escape(props.get("title", ""))}</text>')
        lines = []
        if w["type"] == "alarm":
            names = [a.replace("Alarm", "") for a in props["alarms"]]
            lines = [", ".join(names[i : i + 4]) for i in range(0, len(names), 4)]
        for metric in props.get("metrics", []):
            names = [m for m in metric if isinstance(m, str)]
            stat = next((m.get("stat") for m in metric if isinstance(m, dict) and "stat" in m), props.get("stat", ""))
            lines.append(f"{names[0]} {names[1]} [{names[3]}] {stat}")
        for i, line in enumerate(lines):
            out.append(f'<text x="{x + 12}" y="{y + 38 + i * 16}" fill="#333">{escape(line)}</text>')
    out.append("</svg>")
    target = ROOT / "docs" / "dashboard.svg"
    target.write_text("\n".join(out) + "\n")
    print(f"wrote {target.relative_to(ROOT)}: {len(widgets)} widgets")


if __name__ == "__main__":
    sys.exit(main())
