"""The phantom's public API: one case in memory, or a whole multi-site dataset on disk.

Every case is reproducible on its own: its randomness comes from
``SeedSequence([seed, site_index, case_index])``, so asking for more cases, other sites or
another matrix size never changes the anatomy or acquisition of a case already generated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_kdseg.core.atomic import atomic_directory
from napari_kdseg.core.errors import DatasetError
from napari_kdseg.data.layout import MASK_MARK
from napari_kdseg.data.nifti import write_nifti
from napari_kdseg.data.phantom.acquisition import ImagedCase, acquire, plan_scan
from napari_kdseg.data.phantom.anatomy import sample_pelvis
from napari_kdseg.data.phantom.sites import SITES, SiteProtocol
from napari_kdseg.data.provenance import PHANTOM_FORMAT, PHANTOM_MANIFEST
from napari_kdseg.data.volume import Volume

FORMAT_VERSION = 1
MANIFEST = PHANTOM_MANIFEST
MIN_SIZE = 32
MAX_CASES_PER_SITE = 100  # case names have two digits, as in the SAML release


def image_case(
    site: str, case_index: int, size: int = 384, seed: int = 0, repeat: int = 0
) -> ImagedCase:
    """Generate one case and keep the ground truth (tissue map, coil sensitivity) with it.

    The anatomy, scan plan, texture and noise each get their own child of the case's seed
    sequence, so they stay independent of one another. ``repeat`` > 0 scans the same patient
    again with fresh noise only, as the two-acquisition SNR measurement needs.
    """
    protocol = _protocol(site)
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    if min(case_index, seed, repeat) < 0:
        raise ValueError(
            f"case_index, seed and repeat must be non-negative, got {case_index}, {seed}, {repeat}"
        )
    site_index = list(SITES).index(site)
    anatomy_seed, plan_seed, texture_seed, noise_seed = np.random.SeedSequence(
        [seed, site_index, case_index]
    ).spawn(4)
    pelvis = sample_pelvis(np.random.default_rng(anatomy_seed), protocol.coil == "endorectal")
    geometry = plan_scan(protocol, pelvis, size, np.random.default_rng(plan_seed))
    if repeat:
        noise_seed = noise_seed.spawn(repeat)[-1]
    return acquire(
        pelvis,
        protocol,
        geometry,
        np.random.default_rng(texture_seed),
        np.random.default_rng(noise_seed),
    )


def make_case(site: str, case_index: int, size: int = 384, seed: int = 0) -> tuple[Volume, Volume]:
    """One synthetic T2 case of ``site`` ("A".."F"): ``(image float32, label uint8)``.

    Both volumes share one grid and affine (LPS voxel axes, ``size`` x ``size`` in plane,
    the site's field of view and slice thickness). The same arguments give bit-identical
    arrays.
    """
    case = image_case(site, case_index, size, seed)
    protocol = SITES[site]
    geometry = case.geometry
    metadata: dict[str, Any] = {
        "format": PHANTOM_FORMAT,
        "site": site,
        "site_name": protocol.name,
        "case_index": case_index,
        "seed": seed,
        "vendor": protocol.vendor,
        "coil": protocol.coil,
        "field_strength_t": geometry.field_t,
        "slice_thickness_mm": geometry.slice_thickness_mm,
        "native_spacing_mm": geometry.native_spacing_mm,
        "stored_dtype": protocol.vendor_scale.stored_dtype,
    }
    image = Volume(array=case.image, affine=geometry.affine, metadata=metadata)
    label = Volume(array=case.label, affine=geometry.affine, metadata={**metadata, "kind": "label"})
    return image, label


def generate_phantom(
    out: Path,
    cases_per_site: int,
    size: int = 384,
    seed: int = 0,
    sites: Sequence[str] = "ABCDEF",
    *,
    overwrite: bool = False,
) -> Path:
    """Write the phantom as ``out/<site>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz``.

    Images are stored as the vendor would (int16 for Siemens and GE, float32 for Philips),
    labels as uint8, and ``out/phantom.json`` records the parameters and each site's protocol.
    If ``out`` already holds a phantom made with the same parameters nothing is done; a
    different phantom or any other content is refused unless ``overwrite``. The dataset is
    built in a temporary folder and renamed into place, so an interrupted run leaves nothing.
    """
    out = Path(out)
    site_keys = list(sites)
    _check_parameters(cases_per_site, size, seed, site_keys)
    parameters = {
        "format_version": FORMAT_VERSION,
        "cases_per_site": cases_per_site,
        "size": size,
        "seed": seed,
        "sites": site_keys,
    }
    if out.exists() and _existing_matches(out, parameters, overwrite):
        return out

    cases: dict[str, list[dict[str, Any]]] = {}
    with atomic_directory(out) as folder:
        for site in site_keys:
            protocol = SITES[site]
            cases[site] = []
            for index in range(cases_per_site):
                image, label = make_case(site, index, size, seed)
                name = f"Case{index:02d}"
                write_nifti(
                    image, folder / site / f"{name}.nii.gz", protocol.vendor_scale.stored_dtype
                )
                write_nifti(label, folder / site / f"{name}{MASK_MARK}.nii.gz", np.uint8)
                spacing = image.spacing
                voxel_cc = float(np.prod(spacing)) / 1000.0
                cases[site].append(
                    {
                        "case": name,
                        "shape": list(image.shape),
                        "spacing_mm": [round(value, 4) for value in spacing],
                        "field_strength_t": image.metadata["field_strength_t"],
                        "gland_volume_cc": round(float(label.array.sum()) * voxel_cc, 2),
                    }
                )
        manifest = {
            "format": "napari-kdseg synthetic multi-site prostate T2 phantom",
            "parameters": parameters,
            "sites": {site: SITES[site].summary() for site in site_keys},
            "cases": cases,
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _protocol(site: str) -> SiteProtocol:
    """The protocol of ``site``, or a ValueError naming the known sites."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; expected one of {', '.join(SITES)}")
    return SITES[site]


def _check_parameters(cases_per_site: int, size: int, seed: int, sites: list[str]) -> None:
    """Refuse parameters that cannot make a valid dataset, naming the bad value."""
    if not 1 <= cases_per_site <= MAX_CASES_PER_SITE:
        raise ValueError(f"cases_per_site must be 1..{MAX_CASES_PER_SITE}, got {cases_per_site}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if not sites:
        raise ValueError("at least one site is needed")
    if len(set(sites)) != len(sites):
        raise ValueError(f"sites repeat: {''.join(sites)}")
    for site in sites:
        _protocol(site)


def _existing_matches(out: Path, parameters: dict[str, Any], overwrite: bool) -> bool:
    """Whether ``out`` already holds this exact phantom; raises if it holds anything else.

    With ``overwrite`` an existing different phantom (or other content) is simply replaced.
    """
    if not out.is_dir():
        raise DatasetError(out, "exists and is not a folder")
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            existing = json.loads(manifest.read_text()).get("parameters", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            existing = {}
        if existing == parameters:
            return True
        if overwrite:
            return False
        differences = ", ".join(
            f"{key} {existing.get(key)!r} != {value!r}"
            for key, value in parameters.items()
            if existing.get(key) != value
        )
        raise DatasetError(
            out,
            f"holds a phantom made with different parameters ({differences}); "
            "choose another folder or pass overwrite=True",
        )
    if overwrite or not any(out.iterdir()):
        return False
    raise DatasetError(out, "exists and holds files that are not a phantom; refusing to replace it")
