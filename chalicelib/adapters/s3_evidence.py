"""Evidence in S3: presigned POST uploads and the server-side look at what was uploaded."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chalicelib.adapters.clients import OnFirstUseClient
from chalicelib.domain.evidence import HEAD_BYTES
from chalicelib.service.ports import PresignedUpload, StoredObject

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["S3EvidenceStore"]

_TOTAL_SIZE = re.compile(r"/(\d+)$")


class S3EvidenceStore(OnFirstUseClient):
    """Evidence objects in one private bucket; the S3 client is made on first use."""

    def __init__(
        self,
        bucket: str,
        client_factory: Callable[[], Any],
        wall_now: Callable[[], datetime],
    ) -> None:
        self._bucket = bucket
        super().__init__(client_factory)
        self._wall_now = wall_now

    def presign_upload(
        self, key: str, content_type: str, max_size: int, expires_at: datetime
    ) -> PresignedUpload:
        """A SigV4 presigned POST allowing only ``key``, ``content_type`` and up to ``max_size``."""
        expires_in = max(1, int((expires_at - self._wall_now()).total_seconds()))
        post = self.client.generate_presigned_post(
            Bucket=self._bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", 1, max_size],
            ],
            ExpiresIn=expires_in,
        )
        return PresignedUpload(url=post["url"], fields=dict(post["fields"]), expires_at=expires_at)

    def presign_download(self, key: str, version_id: str | None, expires_at: datetime) -> str:
        """A presigned GET of exactly the version that passed the check."""
        params = {"Bucket": self._bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        expires_in = max(1, int((expires_at - self._wall_now()).total_seconds()))
        url: str = self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in
        )
        return url

    def inspect(self, key: str) -> StoredObject | None:
        """One ranged GET: the first bytes, the ETag, and the real size from Content-Range."""
        errors = self.client.exceptions
        try:
            answer = self.client.get_object(
                Bucket=self._bucket, Key=key, Range=f"bytes=0-{HEAD_BYTES - 1}"
            )
        except errors.NoSuchKey:
            return None
        except errors.ClientError as error:
            if error.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            # Only an empty object has no byte 0.
            head = self.client.head_object(Bucket=self._bucket, Key=key)
            return StoredObject(
                size=int(head["ContentLength"]),
                etag=head["ETag"],
                head=b"",
                version_id=_version(head),
            )
        with answer["Body"] as body:
            head_bytes = body.read()
        match = _TOTAL_SIZE.search(answer.get("ContentRange") or "")
        size = int(match.group(1)) if match else int(answer["ContentLength"])
        return StoredObject(
            size=size, etag=answer["ETag"], head=head_bytes, version_id=_version(answer)
        )


def _version(answer: dict[str, Any]) -> str | None:
    """The version S3 answered with; "null" (or none) where the bucket is not versioned."""
    version = answer.get("VersionId")
    return None if version in (None, "null") else str(version)
