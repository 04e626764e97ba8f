#!/usr/bin/env bash
# Build the folder of clean photographs that the "more photographs" training runs of DEVNOTES used as
# data.backgrounds_dir:
# the 22 backgrounds that ship inside scikit-image and matplotlib (written out as PNG, so they keep their
# share of the draws), 22 natural photographs from OpenCV's sample data (Debian's opencv-doc: fruit, a
# baboon, a squirrel, streets, aerial views, a painting; its screenshots, charts, calibration boards and
# scene-text samples left out) and scikit-learn's two sample photographs (from its wheel). None of them is
# in the real-photo benchmark, which draws on Debian's wallpaper packages.
#   bash benchmarks/background_pool.sh [DIR]      # default results/backgrounds; needs apt-get and pip
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-results/backgrounds}
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DIR"
$PY - "$DIR" <<'PYEOF'
import sys
from PIL import Image
from wmrepair.synth import _shipped_backgrounds
for i, a in enumerate(_shipped_backgrounds()):
    Image.fromarray(a).save(f"{sys.argv[1]}/shipped_{i:02d}.png")
PYEOF
(cd "$WORK" && apt-get download -q opencv-doc >/dev/null 2>&1 && dpkg -x opencv-doc_*.deb ocv)
DATA=$WORK/ocv/usr/share/doc/opencv-doc/examples/data
for n in aero1.jpg aero3.jpg aloeL.jpg apple.jpg baboon.jpg basketball1.png box_in_scene.png building.jpg \
         butterfly.jpg chicky_512.png ela_original.jpg fruits.jpg graf1.png home.jpg leuvenA.jpg messi5.jpg \
         orange.jpg rubberwhale1.png smarties.png squirrel_cls.jpg starry_night.jpg stuff.jpg; do
  cp "$DATA/$n" "$DIR/ocv_$n"
done
$PY -m pip download -q --no-deps scikit-learn -d "$WORK" >/dev/null
unzip -q -o -j "$WORK"/scikit_learn-*.whl 'sklearn/datasets/images/*.jpg' -d "$DIR"
echo "$(ls "$DIR" | wc -l) pictures in $DIR"
