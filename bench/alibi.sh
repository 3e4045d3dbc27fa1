#!/usr/bin/env bash
# Creates bench/.venv-alibi-<VERSION>: Alibi and scikit-learn beside the project's TensorFlow and
# Keras (pins read from requirements.lock), in a venv of their own: neither is a project dependency.
#
#   bash bench/alibi.sh [VERSION]      # default 0.5.5; 0.9.6 (the newest) works too, see below
#
# Alibi 0.5.x requires `tensorflow>=2.0` (the full build): its other requirements and
# tensorflow-cpu go in first, then alibi itself without dependencies (tensorflow-cpu provides the
# same `tensorflow` package). Alibi >= 0.6 makes TensorFlow an extra capped below 2.15, so it is
# installed without that extra; its spaCy needs `click`, which no requirement pulls in.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-${ALIBI_VERSION:-0.5.5}}"
VENV="bench/.venv-alibi-$VERSION"
if [ -f "$VENV/.installed" ]; then
    exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check uv==0.13.8
TENSORFLOW=$(grep -E '^tensorflow-cpu==' requirements.lock)
KERAS=$(grep -E '^keras==' requirements.lock)
install() { "$VENV/bin/uv" pip install --quiet -p "$VENV/bin/python" "$@"; }
case "$VERSION" in
    0.5.*)
        install "$TENSORFLOW" "$KERAS" scikit-learn attrs beautifulsoup4 matplotlib numpy Pillow pandas \
            requests "spacy[lookups]" "scikit-image!=0.17.1" "shap>=0.36" scipy "typing-extensions>=3.7.2"
        install --no-deps "alibi==$VERSION"
        ;;
    *)
        install "$TENSORFLOW" "$KERAS" scikit-learn click "alibi==$VERSION"
        ;;
esac
"$VENV/bin/python" -c "import alibi.explainers, sklearn, tensorflow as tf; \
print('alibi', alibi.__version__, 'scikit-learn', sklearn.__version__, 'tensorflow', tf.__version__)"
touch "$VENV/.installed"
