"""The book's three public data sets: where each comes from, what it holds, and whether a folder has it.

A :class:`DataSource` is everything needed to rebuild one data set byte for byte, without its images:
the public GitHub repository and commit its files are served from, the rule that turns a file's path
in the book's layout into its path there, and the *manifest* shipped inside the package
(``apse/data/manifests/NAME.csv``: path, size, SHA-256 of every file; ``NAME.labels.csv``: the label
file written beside the images, where the set has one). :mod:`apse.data.fetch` downloads a source;
this module only describes sources and checks folders against them (:func:`verify`).

The three sets (:data:`SOURCES`) are exactly the folders under ``../shared/data`` the book was run on:

- ``fi-subset``: 602 FI images, one folder per emotion (the label is the folder);
- ``twitter1``: 1,093 Twitter I images, polarity labels in ``labels.csv``;
- ``flickrldl``: 861 FlickrLDL images, 11 emotion votes each in ``labels.csv``.

Each is for research and teaching use only (:attr:`DataSource.licence`); the images are never part
of the repository.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["DataSource", "FileEntry", "INCOMPLETE", "SOURCES", "WORK_DIR", "VerifyReport", "get_source", "read_manifest_csv",
           "sha256_file", "verify"]

#: The hidden folder inside a data set where a download keeps its unfinished and rejected files,
#: and the marker file in it that says a download has not finished (the loaders refuse the set).
WORK_DIR, INCOMPLETE = ".apse-download", "INCOMPLETE"
#: GitHub's raw file host: ``{base}/{owner}/{repo}/{commit}/{path}`` is one file at one commit.
DEFAULT_BASE_URL = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class FileEntry:
    """One file of a data set: its path in the book's layout, its size in bytes and its SHA-256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DataSource:
    """A data set as a pinned GitHub commit plus a manifest.

    ``upstream(path)`` maps a path of the book's layout to the file's path in the repository;
    ``label_file`` names the label file written beside the images (its bytes in ``labels``);
    ``sums_prefix`` is how ``SHA256SUMS`` writes each path (``"./"`` for the FI subset), so the
    written ``SHA256SUMS`` is the same file as the one of ``../shared/data/NAME``.
    """

    name: str
    title: str
    owner: str
    repo: str
    commit: str
    upstream: Callable[[str], str]
    files: tuple[FileEntry, ...]
    licence: str
    labels: bytes | None = None
    label_file: str = "labels.csv"
    sums_prefix: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def url(self, entry: FileEntry, base_url: str = DEFAULT_BASE_URL) -> str:
        """The address of ``entry`` under ``base_url`` (a mirror laid out as GitHub's raw host)."""
        from urllib.parse import quote
        upstream = quote(self.upstream(entry.path))
        return f"{base_url.rstrip('/')}/{self.owner}/{self.repo}/{self.commit}/{upstream}"

    def sha256sums(self) -> str:
        """The text of ``SHA256SUMS`` for this set (``sha256sum -c SHA256SUMS`` checks a folder)."""
        return "".join(f"{f.sha256}  {self.sums_prefix}{f.path}\n" for f in self.files)

    def readme(self) -> str:
        """The short README written into a fetched folder: what it is, where from, its licence."""
        return (f"# {self.title}\n\nFetched by `python -m apse data get {self.name}` from "
                f"https://github.com/{self.owner}/{self.repo} at commit {self.commit}.\n"
                f"{len(self.files)} files, {self.total_bytes / 1e6:.0f} MB; SHA256SUMS lists every "
                f"file (check with `sha256sum -c SHA256SUMS`).\n\n{self.licence}\n")


def read_manifest_csv(text: str) -> tuple[FileEntry, ...]:
    """The entries of a manifest CSV (header ``path,size,sha256``), in file order."""
    rows = csv.DictReader(text.splitlines())
    if rows.fieldnames != ["path", "size", "sha256"]:
        raise ValueError(f"a data manifest needs the header path,size,sha256, got {rows.fieldnames}")
    return tuple(FileEntry(r["path"], int(r["size"]), r["sha256"].lower()) for r in rows)


def _packaged(name: str) -> bytes:
    return resources.files("apse.data").joinpath("manifests", name).read_bytes()


_RESEARCH_ONLY = (
    "Licence: none is stated by the source repository; {what} is released by its authors for "
    "research use only. Use these images for research and teaching, keep them out of public "
    "repositories, and cite {cite}."
)


def _fi_upstream(path: str) -> str:
    return "data/pretrained_data/" + path.split("/", 1)[1]   # amusement/amusement12.jpg


def _build_sources() -> dict[str, DataSource]:
    fi = DataSource(
        name="fi-subset", title="FI subset (602 images, 8 emotions)",
        owner="kpzhang", repo="ImageEmotionDetection",
        commit="8110dd9851f1d98ba2ab6424f21bf2809b6d3fe7", upstream=_fi_upstream,
        files=read_manifest_csv(_packaged("fi-subset.csv").decode()),
        licence=_RESEARCH_ONLY.format(
            what="FI", cite="You, Luo, Jin and Yang, AAAI 2016 (FI). Label results 'FI subset'"),
        sums_prefix="./", label_file="")
    twitter = DataSource(
        name="twitter1", title="Twitter I (1,093 of its 1,269 images, polarity labels)",
        owner="johnwsh", repo="twitterDataset",
        commit="4604b72f99303fc8e814de37dc90f17fe39aa5bb", upstream=lambda path: path,
        files=read_manifest_csv(_packaged("twitter1.csv").decode()),
        licence=_RESEARCH_ONLY.format(
            what="Twitter I", cite="You, Luo, Jin and Yang, AAAI 2015. Label results "
                                   "'Twitter I (1,093-image subset)'"),
        labels=_packaged("twitter1.labels.csv"))
    flickr = DataSource(
        name="flickrldl", title="FlickrLDL, part (861 images, 11 emotion votes each)",
        owner="Abivishaq", repo="dataset_flickrr",
        commit="ffc7d2849c2bcf21fb3e19c189d1f39f91326107",
        upstream=lambda path: path.split("/", 1)[1],            # images/12.jpg -> 12.jpg
        files=read_manifest_csv(_packaged("flickrldl.csv").decode()),
        licence=_RESEARCH_ONLY.format(
            what="FlickrLDL", cite="Yang, Sun and Sun, AAAI 2017. Label results "
                                   "'FlickrLDL (861-image part)'"),
        labels=_packaged("flickrldl.labels.csv"))
    return {s.name: s for s in (fi, twitter, flickr)}


#: The data sets ``python -m apse data`` knows, by name.
SOURCES: dict[str, DataSource] = _build_sources()


def get_source(name: str) -> DataSource:
    """The source called ``name`` (any case, ``_`` for ``-``); ValueError naming the known ones."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in SOURCES:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[key]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as 64 lower-case hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class VerifyReport:
    """What :func:`verify` found: files that match, are missing, or have other bytes."""

    source: str
    root: Path
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    labels_ok: bool = True

    @property
    def passed(self) -> bool:
        return not self.missing and not self.wrong and self.labels_ok

    def summary(self) -> str:
        total = len(self.ok) + len(self.missing) + len(self.wrong)
        if self.passed:
            return f"verified ({len(self.ok)}/{total} files)"
        parts = [f"{len(self.ok)}/{total} files verify"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {self.missing[0]})")
        if self.wrong:
            parts.append(f"{len(self.wrong)} with other bytes (e.g. {self.wrong[0]})")
        if not self.labels_ok:
            parts.append("labels.csv missing or changed")
        return ", ".join(parts)


def verify(source: DataSource, root: str | os.PathLike,
           entries: Iterable[FileEntry] | None = None) -> VerifyReport:
    """Check every file of ``source`` under ``root`` by size and SHA-256 (and its label file)."""
    root = Path(root)
    report = VerifyReport(source.name, root)
    for entry in source.files if entries is None else entries:
        path = root / entry.path
        if not path.is_file():
            report.missing.append(entry.path)
        elif path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
            report.wrong.append(entry.path)
        else:
            report.ok.append(entry.path)
    if source.labels is not None:
        label_path = root / source.label_file
        report.labels_ok = label_path.is_file() and label_path.read_bytes() == source.labels
    return report
