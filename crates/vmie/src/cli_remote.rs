//! The task commands against a running `vmie serve` (or any endpoint of this API), for people
//! without the aws CLI: `--endpoint-url URL` (`$VMIE_ENDPOINT_URL`), credentials from
//! `$AWS_ACCESS_KEY_ID` / `$AWS_SECRET_ACCESS_KEY`, the CA bundle from `--ca-bundle`
//! (`$AWS_CA_BUNDLE`). Requests are EC2 Query calls signed with SigV4; answers are read from
//! the XML.

use std::time::Duration;

use zeroize::Zeroizing;

use engine::{DiskContainer, ExportImageRequest, ImportImageRequest, ImportSnapshotRequest};

use crate::{CliError, EXIT_FAILED};

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError {
        message: e.to_string(),
        exit: EXIT_FAILED,
    }
}

/// An XML element: name, text, children.
#[derive(Debug, Default, Clone)]
pub struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn parse(xml: &[u8]) -> Result<Node, CliError> {
        use quick_xml::events::Event;
        let mut r = quick_xml::Reader::from_reader(xml);
        let mut stack = vec![Node::default()];
        let mut buf = Vec::new();
        loop {
            match r
                .read_event_into(&mut buf)
                .map_err(|e| fail(format!("the answer is not XML: {e}")))?
            {
                Event::Start(s) => {
                    if stack.len() > 64 {
                        return Err(fail("the answer nests too deep"));
                    }
                    stack.push(Node {
                        name: String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
                        ..Node::default()
                    });
                }
                Event::Text(t) => {
                    if let Some(n) = stack.last_mut() {
                        n.text.push_str(&t.decode().map_err(fail)?);
                    }
                }
                Event::GeneralRef(g) => {
                    if let Some(n) = stack.last_mut() {
                        let name = String::from_utf8_lossy(&g);
                        n.text.push_str(match name.as_ref() {
                            "lt" => "<",
                            "gt" => ">",
                            "amp" => "&",
                            "quot" => "\"",
                            "apos" => "'",
                            _ => "",
                        });
                    }
                }
                Event::End(_) => {
                    let n = stack.pop().unwrap_or_default();
                    match stack.last_mut() {
                        Some(p) => p.children.push(n),
                        None => return Ok(n),
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        stack
            .pop()
            .and_then(|mut root| root.children.pop())
            .ok_or_else(|| fail("the answer is empty"))
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn text_of(&self, path: &[&str]) -> Option<&str> {
        let mut n = self;
        for p in path {
            n = n.child(p)?;
        }
        Some(n.text.as_str())
    }

    fn items(&self, set: &str) -> Vec<&Node> {
        self.child(set)
            .map(|s| s.children.iter().filter(|c| c.name == "item").collect())
            .unwrap_or_default()
    }
}

/// A task as the API describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteTask {
    /// Task id.
    #[serde(rename = "TaskId")]
    pub id: String,
    /// `Status`.
    #[serde(rename = "Status")]
    pub status: String,
    /// `StatusMessage`.
    #[serde(rename = "StatusMessage")]
    pub message: String,
    /// `Progress` (while active).
    #[serde(rename = "Progress")]
    pub progress: Option<String>,
    /// `ImageId` / `SnapshotId` made.
    #[serde(rename = "Made")]
    pub made: Option<String>,
}

/// A client of the API.
pub struct Remote {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    region: String,
    key: String,
    secret: Zeroizing<String>,
}

impl Remote {
    /// A client of `endpoint`, with credentials from the environment.
    pub fn new(
        endpoint: &str,
        region: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Remote, CliError> {
        let url =
            reqwest::Url::parse(endpoint).map_err(|e| fail(format!("--endpoint-url: {e}")))?;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let key = std::env::var("AWS_ACCESS_KEY_ID")
            .map_err(|_| fail("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to call the API"))?;
        let secret = Zeroizing::new(
            std::env::var("AWS_SECRET_ACCESS_KEY")
                .map_err(|_| fail("set AWS_SECRET_ACCESS_KEY to call the API"))?,
        );
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem).map_err(fail)? {
                b = b.add_root_certificate(c);
            }
        }
        Ok(Remote {
            http: b.build().map_err(fail)?,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            host,
            region: region.into(),
            key,
            secret,
        })
    }

    async fn call(&self, action: &str, params: &[(String, String)]) -> Result<Node, CliError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action)
            .append_pair("Version", "2016-11-15");
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let body = form.finish().replace('+', "%20");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let date = api::sigv4::format_amz_date(i64::try_from(now).unwrap_or(0));
        let ctype = "application/x-www-form-urlencoded; charset=utf-8";
        let headers = vec![
            ("content-type".to_string(), ctype.to_string()),
            ("host".to_string(), self.host.clone()),
            ("x-amz-date".to_string(), date.clone()),
        ];
        let names: Vec<String> = headers.iter().map(|h| h.0.clone()).collect();
        let req = api::sigv4::Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: body.as_bytes(),
        };
        let auth = api::sigv4::authorization(
            &req,
            &self.key,
            &self.secret,
            &self.region,
            "ec2",
            &date,
            &names,
        )
        .map_err(fail)?;
        let resp = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("content-type", ctype)
            .header("host", &self.host)
            .header("x-amz-date", &date)
            .header("authorization", auth)
            .body(body)
            .send()
            .await
            .map_err(|e| fail(format!("{action}: {e}")))?;
        let status = resp.status();
        // Answers are a few KiB; a page of a thousand tasks stays far below this.
        const MAX_ANSWER: u64 = 16 << 20;
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER) {
            return Err(fail(format!(
                "{action}: the answer is larger than {MAX_ANSWER} bytes"
            )));
        }
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(c) = resp.chunk().await.map_err(fail)? {
            if bytes.len() as u64 + c.len() as u64 > MAX_ANSWER {
                return Err(fail(format!(
                    "{action}: the answer is larger than {MAX_ANSWER} bytes"
                )));
            }
            bytes.extend_from_slice(&c);
        }
        let doc = Node::parse(&bytes)?;
        if !status.is_success() {
            let e = doc.child("Errors").and_then(|e| e.child("Error"));
            let code = e.and_then(|e| e.text_of(&["Code"])).unwrap_or("Error");
            let msg = e.and_then(|e| e.text_of(&["Message"])).unwrap_or("");
            return Err(fail(format!("{code}: {msg}")));
        }
        Ok(doc)
    }

    /// ImportImage; returns the task id.
    pub async fn import_image(
        &self,
        r: &ImportImageRequest,
        token: Option<&str>,
    ) -> Result<String, CliError> {
        let mut p = Vec::new();
        for (i, dc) in r.disk_containers.iter().enumerate() {
            container(&mut p, &format!("DiskContainer.{}.", i + 1), dc);
        }
        for (k, v) in [
            ("Architecture", &r.architecture),
            ("BootMode", &r.boot_mode),
            ("Description", &r.description),
            ("KmsKeyId", &r.kms_key_id),
            ("LicenseType", &r.license_type),
            ("Platform", &r.platform),
            ("ClientToken", &token.map(str::to_string)),
        ] {
            if let Some(v) = v {
                p.push((k.to_string(), v.clone()));
            }
        }
        if r.encrypted == Some(true) {
            p.push(("Encrypted".into(), "true".into()));
        }
        let d = self.call("ImportImage", &p).await?;
        d.text_of(&["importTaskId"])
            .map(str::to_string)
            .ok_or_else(|| fail("no importTaskId in the answer"))
    }

    /// ImportSnapshot; returns the task id.
    pub async fn import_snapshot(
        &self,
        r: &ImportSnapshotRequest,
        token: Option<&str>,
    ) -> Result<String, CliError> {
        let mut p = Vec::new();
        container(&mut p, "DiskContainer.", &r.disk_container);
        for (k, v) in [
            ("Description", &r.description),
            ("KmsKeyId", &r.kms_key_id),
            ("ClientToken", &token.map(str::to_string)),
        ] {
            if let Some(v) = v {
                p.push((k.to_string(), v.clone()));
            }
        }
        if r.encrypted == Some(true) {
            p.push(("Encrypted".into(), "true".into()));
        }
        let d = self.call("ImportSnapshot", &p).await?;
        d.text_of(&["importTaskId"])
            .map(str::to_string)
            .ok_or_else(|| fail("no importTaskId in the answer"))
    }

    /// The boot evidence of an import task or of the image it made (vmie's own
    /// GetImportTaskBootEvidence / GetImageBootEvidence): task id, image id, report.
    pub async fn boot_evidence(
        &self,
        id: &str,
    ) -> Result<(String, Option<String>, bootcheck::Report), CliError> {
        let (action, param) = if id.starts_with("ami-") {
            ("GetImageBootEvidence", "ImageId")
        } else {
            ("GetImportTaskBootEvidence", "ImportTaskId")
        };
        let d = self
            .call(action, &[(param.to_string(), id.to_string())])
            .await?;
        let task = d
            .text_of(&["importTaskId"])
            .ok_or_else(|| fail("no importTaskId in the answer"))?
            .to_string();
        let image = d.text_of(&["imageId"]).map(str::to_string);
        let report = serde_json::from_str(d.text_of(&["report"]).unwrap_or_default())
            .map_err(|e| fail(format!("the boot evidence does not parse: {e}")))?;
        Ok((task, image, report))
    }

    /// The deployment's compliance controls (vmie's own GetComplianceReport), as JSON.
    pub async fn compliance(&self) -> Result<serde_json::Value, CliError> {
        let d = self.call("GetComplianceReport", &[]).await?;
        serde_json::from_str(d.text_of(&["report"]).unwrap_or_default())
            .map_err(|e| fail(format!("the compliance report does not parse: {e}")))
    }

    /// ExportImage; returns the task id.
    pub async fn export_image(
        &self,
        r: &ExportImageRequest,
        token: Option<&str>,
    ) -> Result<String, CliError> {
        let mut p = vec![
            ("ImageId".to_string(), r.image_id.clone()),
            ("DiskImageFormat".to_string(), r.disk_image_format.clone()),
            (
                "S3ExportLocation.S3Bucket".to_string(),
                r.s3_export_location.s3_bucket.clone(),
            ),
        ];
        if let Some(x) = &r.s3_export_location.s3_prefix {
            p.push(("S3ExportLocation.S3Prefix".into(), x.clone()));
        }
        if let Some(t) = token {
            p.push(("ClientToken".into(), t.into()));
        }
        let d = self.call("ExportImage", &p).await?;
        d.text_of(&["exportImageTaskId"])
            .map(str::to_string)
            .ok_or_else(|| fail("no exportImageTaskId in the answer"))
    }

    /// Every task (all three kinds), or only `id`.
    pub async fn tasks(&self, id: Option<&str>) -> Result<Vec<RemoteTask>, CliError> {
        let mut out = Vec::new();
        for (action, set, id_param, prefix) in [
            (
                "DescribeImportImageTasks",
                "importImageTaskSet",
                "ImportTaskId.1",
                "import-ami-",
            ),
            (
                "DescribeImportSnapshotTasks",
                "importSnapshotTaskSet",
                "ImportTaskId.1",
                "import-snap-",
            ),
            (
                "DescribeExportImageTasks",
                "exportImageTaskSet",
                "ExportImageTaskId.1",
                "export-ami-",
            ),
        ] {
            let mut p = Vec::new();
            if let Some(id) = id {
                if !id.starts_with(prefix) {
                    continue;
                }
                p.push((id_param.to_string(), id.to_string()));
            }
            let d = self.call(action, &p).await?;
            for it in d.items(set) {
                let detail = it.child("snapshotTaskDetail").unwrap_or(it);
                let t = |n: &str| {
                    detail
                        .text_of(&[n])
                        .or(it.text_of(&[n]))
                        .map(str::to_string)
                };
                out.push(RemoteTask {
                    id: it
                        .text_of(&["importTaskId"])
                        .or(it.text_of(&["exportImageTaskId"]))
                        .unwrap_or_default()
                        .to_string(),
                    status: t("status").unwrap_or_default(),
                    message: t("statusMessage").unwrap_or_default(),
                    progress: t("progress"),
                    made: t("imageId")
                        .filter(|_| prefix == "import-ami-")
                        .or(t("snapshotId")),
                });
            }
        }
        Ok(out)
    }

    /// CancelImportTask; returns the new state.
    pub async fn cancel(&self, id: &str) -> Result<String, CliError> {
        let d = self
            .call("CancelImportTask", &[("ImportTaskId".into(), id.into())])
            .await?;
        Ok(d.text_of(&["state"]).unwrap_or_default().to_string())
    }

    /// Polls `id` until it ends, with a progress bar on a terminal.
    pub async fn wait(&self, id: &str) -> Result<RemoteTask, CliError> {
        let bar = crate::progress::percent_bar();
        let mut last = String::new();
        loop {
            let t = self
                .tasks(Some(id))
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| fail(format!("the task {id} does not exist")))?;
            let pct: u64 = t
                .progress
                .as_deref()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if let Some(b) = &bar {
                b.set_position(pct);
                b.set_message(t.message.clone());
            } else if t.message != last {
                eprintln!("{id}: {} ({pct}%)", t.message);
            }
            last.clone_from(&t.message);
            if t.status != "active" && t.status != "deleting" {
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                return Ok(t);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn container(p: &mut Vec<(String, String)>, prefix: &str, dc: &DiskContainer) {
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            p.push((format!("{prefix}{k}"), v.clone()));
        }
    };
    add("Description", &dc.description);
    add("DeviceName", &dc.device_name);
    add("Format", &dc.format);
    add("Url", &dc.url);
    if let Some(b) = &dc.user_bucket {
        add("UserBucket.S3Bucket", &Some(b.s3_bucket.clone()));
        add("UserBucket.S3Key", &Some(b.s3_key.clone()));
    }
}
