//! Opening deployments: two in one process stay apart (no process-global state), and an
//! attached deployment records its key uses under its own node.

use super::*;

fn cfg(dir: &Path, node: Option<&str>) -> Config {
    let mut c = Config::new(dir);
    c.root_key_file = Some(dir.join("root.key"));
    c.engine = Some(EngineSettings::new(dir));
    c.node = node.map(str::to_string);
    c
}

/// The names of the events `node` recorded in `d`'s activity log.
async fn events_of(d: &Deployment, node: &str) -> Vec<String> {
    let all = trail::records(&d.trail().expect("trail"), None)
        .await
        .expect("records");
    all.iter()
        .filter(|r| r["vmieNode"] == node)
        .filter_map(|r| r["eventName"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn two_deployments_in_one_process_record_apart() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = Deployment::open(&cfg(a_dir.path(), Some("node a")))
        .await
        .expect("open a");
    let b = Deployment::open(&cfg(b_dir.path(), Some("node-b")))
        .await
        .expect("open b");
    assert!(a.engine().is_some() && b.engine().is_some());
    for d in [&a, &b] {
        let k = d
            .kms
            .create_key(
                &d.caller,
                kms::CreateKey {
                    description: String::new(),
                    policy: None,
                    rotation: false,
                },
            )
            .await
            .expect("create key");
        d.kms
            .describe_key(&d.caller, &k.key_id)
            .await
            .expect("describe key");
        d.flush().await.expect("flush");
    }
    // The node name is made safe for object paths.
    let in_a = events_of(&a, "node-a").await;
    assert!(in_a.iter().any(|e| e == "DescribeKey"), "{in_a:?}");
    assert!(events_of(&a, "node-b").await.is_empty());
    let in_b = events_of(&b, "node-b").await;
    assert!(in_b.iter().any(|e| e == "DescribeKey"), "{in_b:?}");
    assert!(events_of(&b, "node-a").await.is_empty());
}

#[tokio::test]
async fn unattached_records_nothing_and_settings_are_checked() {
    let dir = tempfile::tempdir().expect("dir");
    let d = Deployment::open(&cfg(dir.path(), None))
        .await
        .expect("open");
    assert!(d.audit.is_none());
    d.flush().await.expect("nothing to flush");

    let mut bad = cfg(dir.path(), Some("n"));
    bad.trail.name = "no spaces".into();
    let e = Deployment::open(&bad).await.expect_err("bad trail name");
    assert!(e.to_string().starts_with("trail.name is"), "{e}");

    let mut s3 = cfg(dir.path(), None);
    s3.buckets = BucketPlace::S3;
    let e = Deployment::open(&s3)
        .await
        .expect_err("s3 buckets without s3");
    assert!(
        e.to_string().contains("buckets = s3 needs the S3 service"),
        "{e}"
    );
}

#[test]
fn the_data_folder_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(private_dir(&data).expect("private"), Some(0o755));
    assert_eq!(private_dir(&data).expect("private"), None);
}
