// Package channel is otad's server-less update channel: a signed channel
// document, published as a static file next to the bundles it names, that
// any web server, object store or CDN can serve as is. The host side builds
// and signs the document (Draft, Sign); the device side polls it (Poller),
// verifies it before reading anything in it (Open), refuses replays and
// expired documents (Accept), and decides by a stable per-device bucket
// whether a release's staged rollout includes it (Decide). Outcome reports
// (Report) are spooled in the data directory and posted to an optional
// collector; Stats summarises them per release for the host.
//
// Invariants:
//   - Nothing in a fetched document is parsed, let alone used, before the
//     signature over its exact bytes has passed the keyring's policy under
//     role "channel" (Open). The signed message is domain-separated from
//     bundle manifests, so no bundle signature is a channel signature.
//   - The persisted state (the highest accepted serial, that document's
//     created time and digest) only moves forward: a lower serial, or the
//     same serial with other bytes, is refused. It is written with
//     journal.WriteFileAtomic, so after a power cut it holds the old or the
//     new state, never a torn one.
//   - Expiry is judged against max(device clock, last accepted created
//     time): a device whose clock fell back to 1970 cannot be fed last
//     month's document.
//   - The device id (e.g. /etc/machine-id) never leaves the device: the
//     bucket is SHA-256 over it and reports carry a one-way pseudonym.
//   - A report is in the spool (durably) before the outcome that caused it
//     is forgotten, and leaves the spool only after the collector answered
//     2xx; each report carries an id, so a resend after a power cut between
//     the answer and the removal is recognisable (Stats counts it once).
package channel
