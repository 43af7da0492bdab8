"""A PACS round trip against a real Orthanc with its DICOMweb plugin (Debian packages ``orthanc`` and
``orthanc-dicomweb``), started on a free localhost port and stopped afterwards: upload a phantom series, run
``segvol infer`` on its DICOMweb URL with ``--store``, fetch the stored SEG back and check that it references the
series."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

from segvol.cli import main
from tests.inference.dicom_tools import series
from tests.inference.test_infer_geometry import untrained_ckpt  # noqa: F401

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def orthanc(tmp_path):
    """The DICOMweb root URL of a fresh Orthanc, stopped after the test."""
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    if not binary or not PLUGIN.exists():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb); "
                    "CI installs them (.ci/run)")
    pytest.importorskip("dicomweb_client", reason="dicomweb-client is not installed (pip install 'segvol[pacs]')")
    port = _free_port()
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "segvol-test", "StorageDirectory": str(tmp_path / "db"), "IndexDirectory": str(tmp_path / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "Plugins": [str(PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}))
    log = open(tmp_path / "orthanc.log", "w")
    proc = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}/dicom-web"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/system", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"Orthanc exited: {(tmp_path / 'orthanc.log').read_text()[-1000:]}")
                time.sleep(0.2)
        else:
            pytest.fail("Orthanc did not answer within 20 s")
        yield root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_a_pacs_round_trip(tmp_path, orthanc, untrained_ckpt, bright_model):  # noqa: F811
    from dicomweb_client.api import DICOMwebClient

    folder = series(tmp_path / "ct")
    sources = [pydicom.dcmread(str(p)) for p in sorted(folder.iterdir())]
    client = DICOMwebClient(url=orthanc)
    client.store_instances(sources)
    study, series_uid = str(sources[0].StudyInstanceUID), str(sources[0].SeriesInstanceUID)
    url = f"{orthanc}/studies/{study}/series/{series_uid}"

    out = tmp_path / "out"
    assert main(["infer", url, "--model", str(untrained_ckpt), "--device", "cpu", "--out-dir", str(out),
                 "--output", "seg,dicom-seg", "--store"]) == 0
    assert (out / f"{series_uid}_seg.nii.gz").exists() and (out / f"{series_uid}_seg.dcm").exists()

    found = [s for s in client.search_for_series(study) if s["00080060"]["Value"] == ["SEG"]]
    assert len(found) == 1
    seg_series = found[0]["0020000E"]["Value"][0]
    (seg,) = client.retrieve_series(study, seg_series)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}


def test_a_bad_url_is_one_line(capsys, untrained_ckpt):  # noqa: F811
    assert main(["infer", "http://127.0.0.1:9/dicom-web/studies/1.2/nothing", "--model", str(untrained_ckpt),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a DICOMweb series URL" in err
