//! The trail bucket on an S3 service (s3s-fs on loopback, started here): digest files keep
//! their `x-amz-meta-signature` and `x-amz-meta-signature-algorithm` in the bucket's object
//! records (`.vmie-meta/KEY.json`, what vmie's S3 endpoint serves them from), and the log
//! verifies as it does in a local folder.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use trail::{Bucket, Trail, TrailConfig, TrailWriter};

async fn start_s3(root: &std::path::Path) -> String {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    std::fs::create_dir_all(root.join("trail")).unwrap();
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(
        "AKIATRAILTEST",
        "trail-secret",
    ));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(sock), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn digests_keep_their_signature_metadata_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let url = start_s3(&dir.path().join("s3")).await;
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name("trail")
            .with_region("us-east-1")
            .with_endpoint(&url)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id("AKIATRAILTEST")
            .with_secret_access_key("trail-secret")
            .build()
            .unwrap(),
    );
    let catalog =
        catalog::Catalog::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
    let root = Arc::new(kms::RootKey::from_hex(&"33".repeat(32)).unwrap());
    let trail = Arc::new(Trail::new(
        Arc::new(object_store::memory::InMemory::new()),
        "trail",
        Bucket::s3("trail", store),
        root,
        Some(catalog),
        TrailConfig::default(),
    ));
    let w = TrailWriter::open(trail.clone(), "n").await.unwrap();
    w.record(
        serde_json::json!({"eventName": "DescribeImages", "eventTime": "2026-11-29T05:00:00Z"}),
    );
    w.flush().await.unwrap().unwrap();
    let t0 = 1_795_928_405_000; // 2026-11-29T05:00:05Z
    let keys = trail.make_digests(t0).await.unwrap();
    assert_eq!(keys.len(), 1);
    let meta = trail.bucket().metadata(&keys[0]).await.unwrap();
    assert_eq!(meta["signature-algorithm"], "SHA256withRSA");
    assert_eq!(meta["signature"].len(), 512, "RSA-2048, hex");
    trail.make_digests(t0 + 3_600_000).await.unwrap();
    let r = trail::verify(&trail).await.unwrap();
    assert_eq!(r.problems, Vec::<String>::new());
    assert_eq!((r.cloudtrail_digests, r.batches), (2, 1));
    assert_eq!(trail::records(&trail, None).await.unwrap().len(), 1);
}
