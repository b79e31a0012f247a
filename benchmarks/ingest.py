"""Ingest throughput against a bare pydicom loop, and peak memory at N and 10 x N files.

    .venv/bin/python benchmarks/ingest.py            # N = 500 (and 5,000 for the memory check)
    .venv/bin/python benchmarks/ingest.py --n 100 --matrix 256

Baseline: `pydicom.dcmread` + `pixel_array` on the same files in one process, nothing else. cordwatch ingest does
that plus series rules, de-identification, hashing, normalisation, PNG encoding, journaling and the parquet tables,
with `ingest.workers` processes (the params.yaml default). Goals (issue 2): throughput ratio >= 0.8, memory flat.
Each measurement runs in a fresh subprocess, so peak RSS is that run's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian (uncompressed)
    "rle": "1.2.840.10008.1.2.5",  # RLE Lossless
    "j2k": "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless, common in PACS archives
}


def make_files(root: Path, n: int, matrix: int, seed: int = 0, syntax: str = "explicit") -> None:
    """n single-frame sagittal T2 MR files, 5 per patient, with smooth anatomy-like pixels and identity to remove."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:matrix, 0:matrix] / matrix
    base = (1500 + 1000 * np.sin(6 * xx) * np.cos(4 * yy)).astype(np.float32)
    for i in range(n):
        patient = i // 5
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"bench-{seed}-{i}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[f"bench-study-{seed}-{patient}"])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"bench-series-{seed}-{patient}"])
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"BENCH^PATIENT{patient}", f"B{patient:06d}", "19600101"
        ds.AccessionNumber, ds.StudyDate = f"ACC{patient:06d}", "20240101"
        ds.Modality, ds.SeriesDescription = "MR", "SAG T2 TSE"
        ds.Manufacturer, ds.ManufacturerModelName, ds.MagneticFieldStrength = "SIEMENS", "Skyra", 3.0
        ds.InstitutionName = "Benchmark Hospital"
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.PixelSpacing, ds.SliceThickness, ds.RepetitionTime, ds.EchoTime = [0.75, 0.75], 3.0, 3500.0, 100.0
        ds.Rows = ds.Columns = matrix
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        noisy = base + rng.normal(0, 60, base.shape)
        ds.PixelData = np.clip(noisy, 0, 4095).astype(np.uint16).tobytes()
        if syntax != "explicit":
            ds.compress(UID(SYNTAXES[syntax]))
        folder = root / f"patient{patient:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(folder / f"{i:06d}.dcm", ds, enforce_file_format=True)


def run_bare(src: Path) -> dict[str, float]:
    import pydicom

    files = sorted(p for p in src.rglob("*") if p.is_file())
    start = time.perf_counter()
    for f in files:
        ds = pydicom.dcmread(f)
        _ = ds.pixel_array
    seconds = time.perf_counter() - start
    return {"files": len(files), "seconds": seconds}


def run_cordwatch(src: Path, work: Path) -> dict[str, float]:
    os.environ.setdefault("CORDWATCH_PSEUDONYM_KEY", "benchmark-key-not-secret-0123456789")
    from pipelines import runtime
    from pipelines.config import load_params
    from pipelines.ingest import run_ingest

    params = load_params(REPO / "params.yaml")
    params = params.model_copy(update={"paths": params.paths.model_copy(update={"state_dir": work / "state"})})
    runtime.configure(params.paths.state_dir)
    start = time.perf_counter()
    summary = run_ingest(params, src, work / "out")
    seconds = time.perf_counter() - start
    return {"files": summary.files, "ok": summary.ok, "seconds": seconds, "workers": params.ingest.workers}


def _child(mode: str, src: Path, work: Path) -> dict[str, float]:
    """Run one measurement in a fresh interpreter; return its result plus peak RSS (self and largest child)."""
    cmd = [sys.executable, __file__, "--child", mode, "--src", str(src), "--work", str(work)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="files in the throughput run (memory also at 10 x N)")
    ap.add_argument("--matrix", type=int, default=320, help="image matrix (pixels a side)")
    ap.add_argument("--repeats", type=int, default=2, help="throughput runs of each side; the best is kept")
    ap.add_argument("--syntaxes", default="explicit,j2k", help=f"comma list of transfer syntaxes: {list(SYNTAXES)}")
    ap.add_argument("--skip-memory", action="store_true", help="only the throughput comparison")
    ap.add_argument("--child", choices=["bare", "cordwatch"], help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        result = run_bare(args.src) if args.child == "bare" else run_cordwatch(args.src, args.work)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["peak_child_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(result))
        return

    tmp = Path(tempfile.mkdtemp(prefix="cordwatch-bench-"))
    try:
        for syntax in args.syntaxes.split(","):
            src = tmp / f"dicom-{syntax}"
            make_files(src, args.n, args.matrix, syntax=syntax)
            bare = min((_child("bare", src, tmp) for _ in range(args.repeats)), key=lambda r: r["seconds"])
            # fresh state each time: no journal reuse
            runs = [_child("cordwatch", src, tmp / f"cw-{syntax}-{k}") for k in range(args.repeats)]
            cw = min(runs, key=lambda r: r["seconds"])
            bare_rate, cw_rate = bare["files"] / bare["seconds"], cw["files"] / cw["seconds"]
            print(f"[{syntax}] {args.n} sagittal T2 MR files, {args.matrix}x{args.matrix}")
            print(f"  bare pydicom loop (dcmread + pixel_array, 1 process): {bare_rate:8.1f} files/s")
            print(f"  cordwatch ingest ({cw['workers']} workers, full pipeline):       {cw_rate:8.1f} files/s")
            print(f"  throughput ratio cordwatch / bare: {cw_rate / bare_rate:.2f}  (goal >= 0.80)")
        src = tmp / "dicom-explicit"
        if not src.exists():
            make_files(src, args.n, args.matrix)
        if not args.skip_memory:
            big = tmp / "dicom10"
            make_files(big, 10 * args.n, args.matrix, seed=1)
            m1 = _child("cordwatch", src, tmp / "mem1")
            m10 = _child("cordwatch", big, tmp / "mem10")
            for label, m, n in (("N", m1, args.n), ("10N", m10, 10 * args.n)):
                print(
                    f"peak RSS at {label:>3} = {n:5d} files: main {m['peak_rss_mb']:7.1f} MB, "
                    f"largest worker {m['peak_child_rss_mb']:7.1f} MB"
                )
            print(
                f"memory ratio 10N / N: main {m10['peak_rss_mb'] / m1['peak_rss_mb']:.2f}, "
                f"worker {m10['peak_child_rss_mb'] / max(m1['peak_child_rss_mb'], 1e-9):.2f}  (goal: flat, ~1.0)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
