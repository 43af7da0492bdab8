"""A series from a DICOMweb server (a PACS such as Orthanc, dcm4chee or a cloud DICOM store) and results back to it,
through ``dicomweb-client`` (``pip install 'segvol[pacs]'``).

A series is named by its URL, the server's DICOMweb root followed by ``studies/<StudyInstanceUID>/series/
<SeriesInstanceUID>``, e.g. ``http://localhost:8042/dicom-web/studies/1.2.3/series/1.2.3.4``. WADO-RS retrieves its
instances into a local folder (written as Part 10 files, which the rest of segvol reads like any series folder);
STOW-RS stores DICOM outputs (a Segmentation, an RTSTRUCT) back into the same study.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segvol.errors import SegvolError, first_line

__all__ = ["DicomwebSeries", "is_dicomweb_url", "parse_series_url", "retrieve_series", "store_instances"]

log = logging.getLogger(__name__)
_SERIES_URL = re.compile(r"^(?P<root>https?://.+?)/studies/(?P<study>[0-9.]+)/series/(?P<series>[0-9.]+)/?$")


@dataclass(frozen=True)
class DicomwebSeries:
    """A series on a DICOMweb server.

    Attributes:
        root: the server's DICOMweb root URL (``http://host:8042/dicom-web``).
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        store: whether DICOM outputs are stored back to the server.
    """

    root: str
    study_uid: str
    series_uid: str
    store: bool = False

    @property
    def url(self) -> str:
        return f"{self.root}/studies/{self.study_uid}/series/{self.series_uid}"


def is_dicomweb_url(item: Any) -> bool:
    """Whether an input is a URL (``http://`` or ``https://``) rather than a path."""
    return isinstance(item, str) and item.lower().startswith(("http://", "https://"))


def parse_series_url(url: str, store: bool = False) -> DicomwebSeries:
    """``<root>/studies/<study uid>/series/<series uid>`` -> :class:`DicomwebSeries`; anything else is a one-line
    error saying what a series URL looks like."""
    match = _SERIES_URL.match(url.strip())
    if not match:
        raise SegvolError(f"{url}: not a DICOMweb series URL; expected <server>/dicom-web/studies/<StudyInstanceUID>/"
                          f"series/<SeriesInstanceUID>")
    return DicomwebSeries(match["root"], match["study"], match["series"], store)


def _client(root: str) -> Any:
    try:
        from dicomweb_client.api import DICOMwebClient
    except ImportError as exc:
        raise SegvolError("reading from a DICOMweb server needs dicomweb-client: pip install 'segvol[pacs]'") from exc
    return DICOMwebClient(url=root)


def retrieve_series(remote: DicomwebSeries, folder: str | Path) -> Path:
    """Retrieve every instance of ``remote`` (WADO-RS) into ``folder`` as Part 10 files; errors are one line naming
    the URL."""
    import pydicom

    folder = Path(folder)
    try:
        datasets = _client(remote.root).retrieve_series(remote.study_uid, remote.series_uid)
    except SegvolError:
        raise
    except Exception as exc:  # requests' HTTPError, ConnectionError, and the client's own
        raise SegvolError(f"{remote.url}: cannot retrieve the series ({type(exc).__name__}: {first_line(exc)})") \
            from exc
    if not datasets:
        raise SegvolError(f"{remote.url}: the server holds no instances of this series")
    folder.mkdir(parents=True, exist_ok=True)
    for n, ds in enumerate(datasets, start=1):
        pydicom.dcmwrite(str(folder / f"{n:05d}.dcm"), ds, enforce_file_format=True)
    log.info("%s: retrieved %d instance(s)", remote.url, len(datasets))
    return folder


def store_instances(remote: DicomwebSeries, files: Sequence[str | Path]) -> None:
    """Store the DICOM files ``files`` (STOW-RS) in ``remote``'s study on its server; errors are one line."""
    import pydicom

    if not files:
        return
    datasets = [pydicom.dcmread(str(p)) for p in files]
    try:
        _client(remote.root).store_instances(datasets, study_instance_uid=remote.study_uid)
    except SegvolError:
        raise
    except Exception as exc:  # requests' HTTPError, ConnectionError, and the client's own
        raise SegvolError(f"{remote.url}: cannot store {', '.join(Path(p).name for p in files)} "
                          f"({type(exc).__name__}: {first_line(exc)})") from exc
    log.info("%s: stored %s", remote.root, ", ".join(Path(p).name for p in files))
