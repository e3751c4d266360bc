"""The original stack, as the baseline: Flask serving the same model's parameters.

Reads the artifact the Rust server serves (<root>/latest -> <root>/<version>/manifest.json
and model.json) and scores with the same encoding (z-scored numerics, one-hot attr_b,
all zeros for an unseen category) and logistic regression, in plain Python as the
original service did. Only the logistic family is implemented (the benchmark's model).

Development server:  python flask_app.py ROOT PORT
gunicorn:            MODEL_ROOT=ROOT gunicorn -w 2 -b 127.0.0.1:PORT flask_app:app
"""

import json
import math
import os
import sys

from flask import Flask, jsonify, request


def load(root):
    with open(os.path.join(root, "latest")) as f:
        version = f.read().strip()
    d = os.path.join(root, version)
    with open(os.path.join(d, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(d, manifest["model"]["file"])) as f:
        params = json.load(f)
    assert params["family"] == "logistic_regression", "benchmark model must be logistic"
    return version, manifest, params


ROOT = os.environ.get("MODEL_ROOT") or (sys.argv[1] if len(sys.argv) > 1 else ".")
VERSION, MANIFEST, PARAMS = load(ROOT)
ENC = MANIFEST["features"]
THRESHOLD = MANIFEST["threshold"]

app = Flask(__name__)


def encode(features):
    row = [(float(features[s["name"]]) - s["mean"]) / s["std"] for s in ENC["numeric"]]
    b = features["attr_b"]
    row.extend(1.0 if b == c else 0.0 for c in ENC["categories"])
    return row


@app.route("/predict", methods=["POST"])
def predict():
    body = request.get_json()
    row = encode(body["features"])
    z = PARAMS["intercept"] + sum(w * x for w, x in zip(PARAMS["weights"], row))
    p = 1.0 / (1.0 + math.exp(-z))
    return jsonify(
        {"idx": body["idx"], "label": int(p >= THRESHOLD), "probability": p, "model_version": VERSION}
    )


if __name__ == "__main__":
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    app.run(host="127.0.0.1", port=port)
