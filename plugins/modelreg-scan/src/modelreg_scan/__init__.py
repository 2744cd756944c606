"""modelreg-scan: inspect model files before a version becomes ready.

The plugin (entry point ``scan`` in the ``modelreg`` group, module
:mod:`modelreg_scan.plugin`) implements ``modelreg_scan_file``.  Files are recognised by their
bytes, never by their extension:

* **pickles** (plain pickles of every protocol, every pickle of a file in turn, legacy
  ``torch.save`` files with their raw storages, joblib files with their inline arrays and
  every joblib compressor, NumPy object arrays in ``.npy``/``.npz``, and the pickles inside
  PyTorch zip checkpoints): read with CPython's own unpicklers (:mod:`.unpickle`) whose
  ``find_class`` records and returns stubs, so nothing is imported or called, and every
  import is checked against an allow-list; a file that would break before importing
  anything is no pickle (it cannot run code), one that starts with ``PROTO`` and breaks
  fails closed;
* **safetensors**: header length, JSON, dtypes, shapes and offsets; a summary of a valid file
  (tensor and parameter counts, dtypes) comes back as an ``info`` finding;
* **archives** (zip, tar, tar.gz/bz2/xz): links, device files, absolute or ``..`` members,
  decompression bombs, and the pickles inside.

Each file is scanned in a subprocess with a time and a memory limit; a scan that crashes,
hangs or runs out of memory raises :class:`~modelreg_scan.sandbox.ScanFailed`.

Settings (all optional):

``modelreg.scan.timeout``
    seconds a file's scan may take (default 60).
``modelreg.scan.max_memory``
    the scan subprocess's address-space limit, e.g. ``2GiB`` (the default).
``modelreg.scan.max_ratio``
    largest expansion ratio of an archive or a member (default 100).
``modelreg.scan.max_uncompressed``
    largest total uncompressed size of an archive (default ``64GiB``).
``modelreg.scan.max_members``
    most members of an archive (default 100000).
``modelreg.scan.max_header``
    largest safetensors header (default ``100MB``).
``modelreg.scan.unknown``
    ``ignore`` (default: no findings), ``warn`` or ``reject`` files of no known format.
``modelreg.scan.allow_globals``
    extra imports pickles may make, as ``module.name``, ``module:qualified.name`` or
    ``module.*`` (one plain attribute of that module; see
    :func:`modelreg_scan.pickles.is_allowed`).
``modelreg.scan.allow.<name>``
    an allowance: ``<model glob> : <module>:<qualname> ...``, globals the pickles of the
    matching models may import, audited (:mod:`modelreg_scan.allowances`; also over the
    admin API of :mod:`modelreg_scan.views`).

This module imports nothing, so that the scan subprocess starts quickly.
"""
