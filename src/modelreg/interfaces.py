"""The interfaces between the core and its backends, as zope.interface declarations.

A backend is an object that *provides* one of these interfaces; the core checks it with
:func:`zope.interface.verify.verifyObject` when it builds it (a missing method or a wrong
signature stops start-up).  Declare it with ``@zope.interface.implementer(IBlobStore)`` on
the class.  Re-exported by :mod:`modelreg.api`, which is where plugins import them from.

The docstrings are the contract; :class:`modelreg.testing.BlobStoreContract` is the test
suite that checks it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from zope.interface import Interface

#: A blob's name: the lowercase hex sha256 of its content, nothing else.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

#: The smallest chunk of a resumable upload other than the last (S3's minimum part is 5 MiB).
MIN_CHUNK_SIZE = 8 * 1024 * 1024
#: The most parts one upload may have (S3's limit), numbered 1 to ``MAX_PARTS``.
MAX_PARTS = 10_000


def validate_sha256(value: object) -> str:
    """Return ``value`` if it is a blob name (64 lowercase hex characters).

    Backends call this on every digest they are handed before they build a path or a key
    from it.

    :raises ValueError: for anything else (uppercase, short, ``../etc/passwd``, not a str).
    """
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
        raise ValueError(f"not a sha256 digest (64 lowercase hex characters): {value!r}")
    return value


class IBlobStore(Interface):
    """A content-addressed store of blobs, each named by the lowercase hex sha256 of its bytes.

    **Names.**  Every ``sha256`` argument must be 64 lowercase hex characters; anything else
    raises :class:`ValueError` before the backend touches storage (see
    :func:`validate_sha256`).  Storage keys and paths are derived from digests only, never
    from what a client sent.

    **Threads.**  One instance is built at start-up and shared by every request thread (and
    the background worker): every method may be called concurrently from several threads, on
    the same digest too.  Two concurrent ``put`` calls of the same bytes both succeed and leave
    one blob.

    **Processes.**  Several processes, on several machines, may share one store.  An instance
    keeps no state between calls that matters: resumable uploads hand all their state back to
    the caller as JSON-serialisable dicts that the core stores in its database, so any process
    may continue or complete an upload that another began.

    **Errors.**  Methods raise the exceptions of :mod:`modelreg.api` (``BlobNotFound``,
    ``UploadNotFound``, ``DigestMismatch``, ``BlobTooLarge``, ``StorageFull``, and their base
    ``StorageError`` for any other failure of the storage itself) and ``ValueError`` for
    malformed arguments; never a backend library's own exceptions (``OSError``,
    ``botocore.exceptions.ClientError``).  Errors raised by the caller's ``stream`` propagate
    unchanged.  A method that fails leaves no partial blob behind: a blob either exists with
    exactly the content its name promises, or it does not exist.

    **Memory.**  Content is streamed in bounded pieces (about 1 MiB, at most one upload part);
    no method holds a whole blob in memory.
    """

    def put(stream, *, expected_sha256=None, max_size=None):
        """Store the bytes read from ``stream`` and return their :class:`BlobInfo`.

        The content is hashed while it is written to a temporary place and moved to its
        content address only once complete and verified.  If a blob with the same digest
        already exists, one copy is kept (dedupe) and its info returned.

        :param stream: a binary file-like object; only ``read(n)`` is called, until it returns
            ``b""``.
        :param expected_sha256: the digest the caller promises, or ``None``.
        :param max_size: the largest acceptable length in bytes, or ``None`` for no limit.
        :returns: the :class:`BlobInfo` of the stored content.
        :raises DigestMismatch: if ``expected_sha256`` is given and differs; nothing stored.
        :raises BlobTooLarge: as soon as more than ``max_size`` bytes were read; nothing
            stored (the rest of the stream is not read).
        :raises StorageFull: when the store ran out of space; nothing stored.
        :raises ValueError: if ``expected_sha256`` is not a digest.
        """

    def exists(sha256):
        """Whether a blob with this digest exists.

        :returns: ``True`` or ``False``.
        :raises ValueError: if ``sha256`` is not a digest.
        """

    def stat(sha256):
        """The :class:`BlobInfo` (digest and size) of a blob.

        :raises BlobNotFound: if there is no such blob.
        :raises ValueError: if ``sha256`` is not a digest.
        """

    def open(sha256, start=0, end=None):
        """A readable binary stream of the bytes ``[start, end)`` of a blob (for ``Range``).

        The caller closes it (it is a context manager).  ``end`` greater than the blob's size
        is clamped to the size; ``start`` equal to the size gives an empty stream.  The
        stream's ``read(n)`` never returns more than ``n`` bytes nor anything past ``end``.
        Only ``read`` and ``close`` are required.  A stream may also offer ``seekable()``,
        ``seek`` and ``tell`` over the range (0 is ``start``, ``seek(0, 2)`` is ``end``): if
        it says ``seekable()`` and :meth:`file_path` is set, the core hands it to the WSGI
        server's ``wsgi.file_wrapper`` (Waitress's calls ``tell()`` and ``seek()``); else
        the body is read in blocks.

        :param start: the first byte, ``0 <= start <= size``.
        :param end: one past the last byte, ``start <= end``, or ``None`` for the end.
        :raises BlobNotFound: if there is no such blob.
        :raises ValueError: if ``sha256`` is not a digest or the range is invalid.
        """

    def delete(sha256):
        """Delete a blob.  Idempotent.  Only garbage collection calls this.

        :returns: ``True`` if a blob was deleted, ``False`` if there was none.
        :raises ValueError: if ``sha256`` is not a digest.
        """

    def iter_digests():
        """Iterate over the digests of every blob in the store, each once, in no set order.

        For garbage collection and consistency checks; lazy, so that a store of millions
        of blobs is not listed into memory.  Temporary data (unfinished puts and uploads)
        is not listed.

        :returns: an iterator of digests.
        """

    def check():
        """Readiness: return ``None`` if the store is reachable and usable, else raise.

        Called by ``/readyz`` (often: keep it cheap) and at start-up.

        :raises StorageError: saying what is wrong (unreachable, missing, unwritable).
        """

    def download_url(sha256, *, filename, expires=None):
        """A URL from which a client may download the blob directly, or ``None``.

        Backends that can hand out presigned URLs (S3) return one when the operator enabled
        it; the core then answers a download with a redirect.  The URL makes the response a
        download (``Content-Disposition: attachment``) named ``filename``.  The blob's
        existence is not checked (the core knows it from its database).

        :param filename: the name the client should save the file as (the file's basename).
        :param expires: seconds the URL stays valid, or ``None`` for the backend's default.
        :returns: an absolute URL, or ``None`` if not supported or not enabled.
        :raises ValueError: if ``sha256`` is not a digest.
        """

    def file_path(sha256):
        """The path of the blob on the local filesystem, or ``None`` if it is not a local file.

        Lets the core serve the file with ``wsgi.file_wrapper``.  Only readers use the path;
        it must never be written to.  The blob's existence is not checked.

        :raises ValueError: if ``sha256`` is not a digest.
        """

    def begin_upload():
        """Start an upload in numbered parts and return its state.

        An upload receives a blob in numbered parts (:meth:`upload_part`), possibly in
        parallel and on different processes, and is completed with the whole content's
        digest (:meth:`complete_parts`) or abandoned (:meth:`abort_upload`).  Each part but
        the last is at least :data:`MIN_CHUNK_SIZE` bytes (the core enforces that).  The
        core's sequential chunks (``PATCH`` of an upload session) are parts too.

        :returns: the upload's state: a JSON-serialisable dict, opaque to the caller, which
            stores it and hands it to every later call for this upload (in any process).
        :raises StorageFull: when the store ran out of space.
        """

    def abort_upload(state):
        """Abandon an upload and free its temporary data (parts, temporary files).

        Idempotent: aborting an aborted, completed or unknown upload does nothing.
        """

    def upload_part(state, *, number, stream, length, expected_sha256=None, offset=None):
        """Store part ``number`` of an upload: exactly ``length`` bytes read from ``stream``.

        Numbered parts may arrive in any order, in parallel, in several processes; the
        core claims a part's number (a row in its database, under the upload's lock) before
        it calls this, so two calls for one number of one upload only happen when the first
        caller died or gave up.  A part is kept under its number *and* its digest: storing
        a number again never changes the bytes an earlier call stored under another digest,
        and the same bytes again are harmless.  Parts are not checked for size here (the
        core enforces :data:`MIN_CHUNK_SIZE` for every part but the last).

        :param state: the state :meth:`begin_upload` returned (never changed by parts).
        :param number: the part's number, 1 to :data:`MAX_PARTS`.
        :param expected_sha256: the part's digest as the client promised it, or ``None``.
        :param offset: where the part starts in the whole file, or ``None`` if the caller
            does not say.  The core always says (numbered parts and sequential chunks
            alike); a backend may use it to write the part in place (the ``local`` backend
            writes every part into one file, which becomes the blob at completion without
            a copy), or ignore it.  Every backend must accept it.
        :returns: the part's description, a JSON-serialisable dict with at least
            ``number``, ``size`` and ``sha256`` (lowercase hex), plus whatever the backend
            needs to find the part again; the core stores it and hands it back to
            :meth:`complete_parts` and :meth:`delete_part`.
        :raises DigestMismatch: if ``expected_sha256`` is given and differs; nothing kept.
        :raises ValueError: if ``stream`` ends before ``length`` bytes (nothing kept), or
            ``number`` is out of range.
        :raises UploadNotFound: if the upload was aborted, completed or cleaned up.
        :raises StorageFull: when the store ran out of space; nothing kept.
        """

    def delete_part(state, part):
        """Free the data of one part (``part`` as :meth:`upload_part` described it).

        Idempotent; other parts of the upload are untouched.
        """

    def complete_parts(state, parts, *, expected_sha256):
        """Assemble ``parts`` in the order given, verify the digest, store the blob.

        :param parts: the descriptions :meth:`upload_part` returned, in file order.
        :param expected_sha256: the digest of the whole content, as the client promised.
        :returns: the stored :class:`BlobInfo`.  On success the upload's temporary data
            and parts are gone (dedupe: one copy of the blob).
        :raises DigestMismatch: if the content's digest differs; nothing is stored and the
            upload keeps every part, so that the caller may replace some and complete again.
        :raises UploadNotFound: if the upload or one of the parts is gone.
        :raises ValueError: if ``expected_sha256`` is not a digest.
        """


class IDirectUploads(Interface):
    """Optional: uploads whose parts the client sends straight to the store (presigned URLs).

    A blob store that also provides this interface (``@implementer(IBlobStore,
    IDirectUploads)``) lets an upload session in numbered parts bypass the application: the
    core hands each part's sender a URL signed for that part's exact length (and digest,
    where the store checks one), the client sends the bytes there with ``PUT``, and at completion
    the core checks the parts the store holds, assembles them, and queues a job that reads
    the assembled content once and verifies its sha256 before it becomes a blob
    (:meth:`verify_direct`).  Until then the content is not a blob: nothing can read it
    under its digest.  Stores without it (local files) keep every byte going through the
    application.  The states are the same kind as :meth:`IBlobStore.begin_upload`'s:
    :meth:`IBlobStore.abort_upload` frees them too.
    """

    def begin_direct_upload():
        """Start an upload whose parts go straight to the store, or return ``None``.

        :returns: the upload's state (JSON-serialisable, opaque), or ``None`` when the
            operator did not enable direct uploads (the core then calls ``begin_upload``).
        :raises StorageFull: when the store ran out of space.
        """

    def presign_part(state, *, number, length, sha256, expires=None):
        """A request that stores part ``number`` of a direct upload, for the client to send.

        The URL is signed for exactly ``length`` bytes (a body of another length is
        refused by the store) and, where the store checks it, for ``sha256``.

        :param number: the part's number, 1 to :data:`MAX_PARTS`.
        :param length: the part's exact length in bytes.
        :param sha256: the part's digest (lowercase hex) as the client promised it.
        :param expires: seconds the URL stays valid, or ``None`` for the backend's default.
        :returns: ``{"url": str, "method": "PUT", "headers": {name: value}}``: the client
            sends the part's bytes with exactly these headers and no credentials of its own.
        :raises ValueError: for a bad number, length or digest, or a tampered state.
        """

    def list_direct_parts(state):
        """The parts a direct upload holds: ``{number: size}``.

        :raises UploadNotFound: if the upload was aborted, completed or cleaned up.
        """

    def complete_direct(state, count):
        """Assemble parts ``1..count`` (as :meth:`list_direct_parts` showed them) into
        the upload's temporary content.  Nothing is a blob yet: see :meth:`verify_direct`.
        Idempotent: completing a completed upload again does nothing.

        :raises UploadNotFound: if the upload or one of the parts is gone.
        """

    def verify_direct(state, expected_sha256):
        """Read the assembled content once; if its sha256 is ``expected_sha256``, store
        it as that blob (dedupe as ``put``) and free the upload's temporary data.

        Idempotent: once verified, calling it again returns the same :class:`BlobInfo`.

        :returns: the stored :class:`BlobInfo`.
        :raises DigestMismatch: the content differs; it is deleted, nothing is stored.
        :raises UploadNotFound: if the upload was not completed or was cleaned up.
        """


def _document_methods(interface: Any) -> None:
    """List the interface's methods with their full signatures in its docstring.

    ``help()`` on a zope interface shows only its docstring, and zope.interface records no
    keyword-only parameters (``put(stream)`` for ``put(stream, *, expected_sha256=None,
    max_size=None)``): the signatures are read from this module's source instead.
    """
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    body = next(node for node in tree.body
                if isinstance(node, ast.ClassDef) and node.name == interface.__name__).body
    lines = [f"    {node.name}({ast.unparse(node.args)})\n        "
             + (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", "\n        ")
             for node in body if isinstance(node, ast.FunctionDef)]
    interface.__doc__ = f"{interface.__doc__}\n\nMethods:\n\n" + "\n\n".join(lines) + "\n"


_document_methods(IBlobStore)
_document_methods(IDirectUploads)
