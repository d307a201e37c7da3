"""Evidence that survives the pod (Art.11, Art.14, Art.15, Art.19).

The sidecar's records (blocks, masks, labels, strikes, suspensions, complaints) are shipped off
the pod as keyed, hash-chained segments to an S3-compatible object store under Object Lock in
COMPLIANCE mode, retained for the posture's `dataProtection.retentionDays`:

- `segments`: the segment format: a header (stream, first and last sequence number, the hash
  before and after, the body's SHA-256, an HMAC-SHA256 over all of it with the evidence key)
  followed by the records, each still chained to the one before.
- `store`: the object store (S3 via the `minio` client; a directory for exports and tests),
  write-once: a key is written once, with a COMPLIANCE retention.
- `shipper`: a thread in the sidecar that ships what the local buffer (the record file) holds.
- `verify`: checks the shipped history and the anchors; names the first bad record.
- `anchor`: the operator's checkpoints of every stream's head, written where the pod cannot
  (locked in the store, and a hegui-owned object).
- `cli`: `hegui records verify --store`, `hegui records export`, `hegui records anchor`.
"""
