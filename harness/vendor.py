"""`make vendor`: re-fetch the map's third-party files into static/vendor/ (they are committed;
the console never loads anything from the internet, and neither does a test).

- Leaflet 1.9.4 (BSD-2-Clause) from the npm registry: dist/leaflet.js, leaflet.css, images/,
  LICENSE -> static/vendor/leaflet/
- world-atlas 2.0.2 (ISC; Natural Earth data, public domain): countries-50m.json, TopoJSON,
  converted here to GeoJSON (coordinates rounded to 0.01 degree, ~1 km; only each country's
  name kept) -> static/vendor/outline/countries-50m.geojson, with world-atlas's LICENSE

Each package tarball is checked against the SHA-256 below before anything is copied: a
registry that serves other bytes fails the run (exit 1) and changes nothing.
Run: `python -m harness.vendor` (needs `npm` on PATH).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "tools" / "controlroom" / "web" / "static" / "vendor"
PACKAGES = {
    "leaflet@1.9.4": "84c65a256e50657896f54c33bd857b6849ebe94c817803be818bf32a3dde0b77",
    "world-atlas@2.0.2": "032e7765f2ce00edaeafec23ff22bc3b77e42987c257da944cc585b452c05b97",
}
LEAFLET_FILES = ("dist/leaflet.js", "dist/leaflet.css", "dist/images/layers.png",
                 "dist/images/layers-2x.png", "dist/images/marker-icon.png",
                 "dist/images/marker-icon-2x.png", "dist/images/marker-shadow.png", "LICENSE")
OUTLINE = "countries-50m.json"
DECIMALS = 2


def topo_to_geojson(topo: dict, obj: str, decimals: int = DECIMALS) -> dict:
    """A TopoJSON object (quantized, delta-encoded arcs) as a GeoJSON FeatureCollection."""
    scale, translate = topo["transform"]["scale"], topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            point = [round(x * scale[0] + translate[0], decimals),
                     round(y * scale[1] + translate[1], decimals)]
            if not points or point != points[-1]:  # the same point after rounding
                points.append(point)
        arcs.append(points)

    def ring(indexes: list[int]) -> list[list[float]]:
        out: list[list[float]] = []
        for i in indexes:
            points = arcs[i] if i >= 0 else arcs[~i][::-1]
            out.extend(points if not out else points[1:])  # arcs share their end points
        return out

    def geometry(g: dict) -> dict | None:
        if g["type"] == "Polygon":
            return {"type": "Polygon", "coordinates": [ring(r) for r in g["arcs"]]}
        if g["type"] == "MultiPolygon":
            return {"type": "MultiPolygon",
                    "coordinates": [[ring(r) for r in poly] for poly in g["arcs"]]}
        return None

    features = []
    for g in topo["objects"][obj]["geometries"]:
        geo = geometry(g)
        if geo is not None:
            features.append({"type": "Feature", "geometry": geo,
                             "properties": {"name": (g.get("properties") or {}).get("name", "")}})
    return {"type": "FeatureCollection", "features": features}


def fetch(spec: str, sha256: str, work: Path) -> Path:
    out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=work, check=True,
                         capture_output=True, text=True).stdout.split()[-1]
    tgz = work / out
    got = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if got != sha256:
        raise SystemExit(f"vendor: {spec}: sha256 {got}, expected {sha256}: not copied")
    folder = work / spec.split("@")[0]
    with tarfile.open(tgz) as tar:
        tar.extractall(folder, filter="data")
    return folder / "package"


def main() -> int:
    if shutil.which("npm") is None:
        print("vendor: npm not found (apt-get install npm)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        leaflet = fetch("leaflet@1.9.4", PACKAGES["leaflet@1.9.4"], work)
        atlas = fetch("world-atlas@2.0.2", PACKAGES["world-atlas@2.0.2"], work)
        for name in LEAFLET_FILES:
            dest = STATIC / "leaflet" / name.removeprefix("dist/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(leaflet / name, dest)
        outline = STATIC / "outline"
        outline.mkdir(parents=True, exist_ok=True)
        geo = topo_to_geojson(json.loads((atlas / OUTLINE).read_text()), "countries")
        (outline / "countries-50m.geojson").write_text(json.dumps(geo, separators=(",", ":")))
        shutil.copyfile(atlas / "LICENSE", outline / "LICENSE")
    print(f"vendor: leaflet and the outline written to {STATIC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
