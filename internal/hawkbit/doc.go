// Package hawkbit is otad's Eclipse hawkBit client: it speaks the Direct
// Device Integration API (DDI: poll, deploymentBase, feedback,
// cancelAction, configData) and drives the engine through fleet.Updater.
//
// It never tells the server more than the device knows: "downloaded" only
// once the image is verified in the slot and armed, and closed/success
// only after the reboot, once the health check committed the new slot.
// A rollback, a refused bundle, a failed download all end in
// closed/failure with the reason.
//
// Invariants (what survives a power cut or a restart):
//   - The current action lives in one file in the data dir (fleet.Store,
//     replaced atomically). It is saved before every side effect: before
//     Install, before Disarm, before the reboot, and the final result is
//     saved before it is sent. After a restart at any point the client
//     reads the engine's state (its journal) and repeats only what may not
//     have happened, so exactly one final result reaches the server; a 410
//     (the action is no longer active there) counts as delivered. Any
//     other permanent refusal (4xx but 408 and 429) drops the result with
//     an error logged, since owing it forever would block every later
//     action; network errors and 5xx keep it owed.
//   - Non-final feedback (proceeding, downloaded, scheduled, resumed) may
//     be sent twice after a cut; the final one is sent until acknowledged.
//   - The token goes only to the server's origin (scheme, host, port,
//     path prefix). DDI requests: it is added per request below
//     http.Client, so a redirect elsewhere goes out without it. Artifact
//     downloads run through the engine's normal path (fetch, Range
//     resume); New binds the token to the server's origin in the daemon's
//     fetch.Credentials, which decide again at every redirect hop. A
//     token file readable by others is refused.
//   - One action at a time: a new action waits until the current one's
//     result was reported.
//   - Downloads are bounded: at most max-resumes resumes per action
//     (restarts of the daemon included); a 404 or 410 on the artifact
//     ends the action at once (fetch does not retry permanent statuses).
package hawkbit
