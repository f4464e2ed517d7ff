//! What of a request must not be stored in clear: the query string (and fragment) of each
//! disk container's `Url` — a presigned URL's signature and security token.
//!
//! When a task is created, each such query is cut from the stored request and sealed under
//! the root key (through [`kms::Kms::seal_secret`], bound to the task id) into the task's
//! `sealed` column; the request keeps the URL without its query and a SHA-256 fingerprint of
//! the query in `url_query_sha256`, so that a repeated `ClientToken` with another URL is
//! still told apart. A worker on any node opens the sealed part in memory when it claims
//! the task ([`open`]); the catalog drops it in the transaction that ends the task.

use catalog::Task;
use kms::Kms;
use serde_json::{Map, Value};

use crate::error::{EngineError, Failure};

/// The field of a stored disk container that fingerprints its sealed query.
const FINGERPRINT: &str = "url_query_sha256";

fn purpose(task_id: &str) -> String {
    format!("task request {task_id}")
}

/// The disk containers of a serialized request, by their place: `disk_containers.N` or
/// `disk_container`.
fn containers(v: &mut Value) -> Vec<(String, &mut Map<String, Value>)> {
    let mut out = Vec::new();
    let Some(obj) = v.as_object_mut() else {
        return out;
    };
    for (key, value) in obj.iter_mut() {
        match (key.as_str(), value) {
            ("disk_containers", Value::Array(list)) => {
                for (i, dc) in list.iter_mut().enumerate() {
                    if let Some(m) = dc.as_object_mut() {
                        out.push((format!("disk_containers.{i}"), m));
                    }
                }
            }
            ("disk_container", Value::Object(m)) => out.push(("disk_container".into(), m)),
            _ => {}
        }
    }
    out
}

/// Splits `request` (JSON) of the task `task_id` into what is stored in clear and the
/// sealed queries (`None` when no URL has a query).
pub(crate) fn seal(
    kms: &Kms,
    task_id: &str,
    request: &str,
) -> Result<(String, Option<String>), EngineError> {
    let mut v: Value = serde_json::from_str(request)
        .map_err(|e| EngineError::Internal(format!("the request does not serialize: {e}")))?;
    let mut cut = Map::new();
    for (place, dc) in containers(&mut v) {
        let Some(Value::String(url)) = dc.get_mut("url") else {
            continue;
        };
        let Some(q) = url.find(['?', '#']) else {
            continue;
        };
        let query = url.split_off(q);
        let fp = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            query.as_bytes(),
        ));
        dc.insert(FINGERPRINT.into(), Value::String(fp));
        cut.insert(place, Value::String(query));
    }
    if cut.is_empty() {
        return Ok((request.to_string(), None));
    }
    let plain = zeroize::Zeroizing::new(Value::Object(cut).to_string());
    let sealed = kms.seal_secret(&purpose(task_id), plain.as_bytes());
    Ok((v.to_string(), Some(hex::encode(sealed))))
}

/// `task` with the sealed queries put back into its request, in memory only.
pub(crate) fn open(kms: &Kms, mut task: Task) -> Result<Task, Failure> {
    let Some(sealed) = task.sealed.take() else {
        return Ok(task);
    };
    let lost = || {
        Failure::Server(
            "the sealed part of the stored request (an image URL's query string) cannot be opened: the root key differs from the one it was sealed under, or the catalog was altered"
                .into(),
        )
    };
    let bytes = hex::decode(&sealed).map_err(|_| lost())?;
    let plain = kms
        .open_secret(&purpose(&task.id), &bytes)
        .ok_or_else(lost)?;
    let cut: Map<String, Value> = serde_json::from_slice(&plain).map_err(|_| lost())?;
    let mut v: Value = serde_json::from_str(&task.request).map_err(|_| lost())?;
    for (place, dc) in containers(&mut v) {
        if let (Some(Value::String(q)), Some(Value::String(url))) =
            (cut.get(&place), dc.get_mut("url"))
        {
            url.push_str(q);
            dc.remove(FINGERPRINT);
        }
    }
    task.request = v.to_string();
    Ok(task)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::request::{DiskContainer, ImportImageRequest, ImportSnapshotRequest};

    fn kms(dir: &std::path::Path) -> Kms {
        let store = std::sync::Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap(),
        );
        let root = kms::RootKey::load_or_create(&dir.join("root.key")).unwrap();
        Kms::new(
            store,
            "kms",
            std::sync::Arc::new(root),
            kms::KmsConfig {
                region: "us-east-1".into(),
                account: "111122223333".into(),
            },
        )
    }

    fn task(id: &str, request: String, sealed: Option<String>) -> Task {
        Task {
            id: id.into(),
            account: "a".into(),
            kind: catalog::TaskKind::ImportImage,
            status: "active".into(),
            status_message: "pending".into(),
            progress: 0,
            request,
            result: None,
            tags: Vec::new(),
            created_ms: 0,
            updated_ms: 0,
            ended_ms: None,
            lease_owner: None,
            lease_until_ms: None,
            cancel_requested: false,
            attempts: 1,
            checkpoint: None,
            sealed,
        }
    }

    #[test]
    fn queries_are_sealed_out_of_the_request_and_put_back_for_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let k = kms(dir.path());
        let url = |q: &str| DiskContainer {
            url: Some(format!("https://h.example/d.vmdk{q}")),
            ..DiskContainer::default()
        };
        let req = ImportImageRequest {
            disk_containers: vec![
                url("?X-Amz-Signature=SIG1MARK&X-Amz-Security-Token=TOK1MARK"),
                DiskContainer::default(),
                url(""),
                url("#frag-FRAGMARK"),
            ],
            ..ImportImageRequest::default()
        };
        let json = serde_json::to_string(&req).unwrap();
        let (stored, sealed) = seal(&k, "import-ami-1", &json).unwrap();
        let sealed = sealed.unwrap();
        for marker in ["SIG1MARK", "TOK1MARK", "FRAGMARK"] {
            assert!(
                !stored.contains(marker) && !sealed.contains(marker),
                "{marker}"
            );
        }
        assert!(stored.contains("https://h.example/d.vmdk\""), "{stored}");
        // Another query gives another fingerprint, so a ClientToken tells them apart.
        let other = json.replace("SIG1MARK", "SIG2MARK");
        assert_ne!(seal(&k, "import-ami-1", &other).unwrap().0, stored);
        assert_eq!(seal(&k, "import-ami-9", &json).unwrap().0, stored);

        let t = open(
            &k,
            task("import-ami-1", stored.clone(), Some(sealed.clone())),
        )
        .unwrap();
        let back: ImportImageRequest = serde_json::from_str(&t.request).unwrap();
        assert_eq!(back, req);
        assert!(t.sealed.is_none());
        // Bound to its task.
        assert!(open(&k, task("import-ami-2", stored, Some(sealed))).is_err());

        let snap = ImportSnapshotRequest {
            disk_container: url("?X-Amz-Signature=SNAPMARK"),
            ..ImportSnapshotRequest::default()
        };
        let json = serde_json::to_string(&snap).unwrap();
        let (stored, sealed) = seal(&k, "import-snap-1", &json).unwrap();
        assert!(!stored.contains("SNAPMARK"));
        let t = open(&k, task("import-snap-1", stored, sealed)).unwrap();
        assert_eq!(
            serde_json::from_str::<ImportSnapshotRequest>(&t.request).unwrap(),
            snap
        );
        // Nothing to seal: stored as it was.
        let plain = serde_json::to_string(&ImportSnapshotRequest::default()).unwrap();
        assert_eq!(seal(&k, "x", &plain).unwrap(), (plain, None));
    }
}
