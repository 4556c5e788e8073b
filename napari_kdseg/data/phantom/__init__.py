"""Synthetic multi-site prostate T2 MRI: the built-in stand-in for the six-site benchmark.

``make_case(site, case_index, size, seed)`` returns one ``(image, label)`` pair in memory;
``generate_phantom(out, cases_per_site, ...)`` writes the SAML folder layout. ``SITES`` holds
the six acquisition protocols (A RUNMC ... F HK) that make the sites differ.
"""

from napari_kdseg.data.phantom.generate import generate_phantom, image_case, make_case
from napari_kdseg.data.phantom.sites import SITES, SiteProtocol

__all__ = ["SITES", "SiteProtocol", "generate_phantom", "image_case", "make_case"]
