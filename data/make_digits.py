"""Rebuild data/digits.bin from scikit-learn's copy of the UCI digits set.

Usage: pip install scikit-learn && python3 data/make_digits.py

Reads sklearn/datasets/data/digits.csv.gz (1,797 rows of 64 pixel counts in 0..16 and the
label) and writes data/digits.bin: 1,797 records of 65 bytes, the 64 pixels of the 8x8 image
in row-major order followed by the label, in the original row order. Prints the SHA-256 of the
file, which src/data.rs's tests check.
"""
import gzip
import hashlib
import os
import pathlib

import sklearn

src = pathlib.Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
rows = [list(map(int, line.split(","))) for line in gzip.open(src, "rt") if line.strip()]
assert len(rows) == 1797 and all(len(r) == 65 for r in rows)
assert all(0 <= v <= 16 for r in rows for v in r[:64]) and all(0 <= r[64] <= 9 for r in rows)
out = pathlib.Path(__file__).with_name("digits.bin")
out.write_bytes(bytes(v for r in rows for v in r))
print(out, os.path.getsize(out), hashlib.sha256(out.read_bytes()).hexdigest())
