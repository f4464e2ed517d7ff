// The vmie console's one script. Every page's data comes from the endpoint's own API, as
// the signed-in user (POST /console/api/SERVICE, S3 under /console/s3/), with the page's
// CSRF token. Nothing is written into the page as HTML: text goes in with textContent.
"use strict";

const CSRF = () => document.querySelector('meta[name="csrf"]').content;
const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const PART = 8 * 1024 * 1024;

function status(text, error) {
  const s = $("status");
  if (!s) return;
  s.textContent = text || "";
  s.className = error ? "error" : "";
}

class ApiError extends Error {
  constructor(code, message) {
    super(code + ": " + message);
    this.code = code;
  }
}

// The first element named `name` under `el` (any depth), or null.
function first(el, name) {
  const all = el.getElementsByTagName(name);
  return all.length ? all[0] : null;
}
// The text of the child element `name` of `el`.
function text(el, name) {
  for (const c of el.children) if (c.localName === name) return c.textContent;
  return "";
}
// The child element `name` of `el`.
function child(el, name) {
  for (const c of el.children) if (c.localName === name) return c;
  return null;
}
// The `item` (EC2) or `member` (IAM) children of the child `set` of `el`.
function items(el, set) {
  const s = el && (el.localName === set ? el : first(el, set));
  if (!s) return [];
  return Array.from(s.children).filter((c) => c.localName === "item" || c.localName === "member");
}

async function refuse(r) {
  const body = await r.text();
  try {
    const j = JSON.parse(body);
    return new ApiError(j.code || j.__type || r.status, j.message || j.Message || body);
  } catch (_) {
    const d = new DOMParser().parseFromString(body, "application/xml");
    return new ApiError(
      (first(d, "Code") || {}).textContent || r.status,
      (first(d, "Message") || {}).textContent || body,
    );
  }
}

// A Query request (EC2, IAM, STS): the answer's XML document.
async function query(service, params) {
  const body = new URLSearchParams(params);
  const r = await fetch("/console/api/" + service, {
    method: "POST",
    headers: { "x-vmie-csrf": CSRF(), "content-type": "application/x-www-form-urlencoded" },
    body,
    credentials: "same-origin",
  });
  if (r.status === 401 && (await r.clone().text()).includes("NotSignedIn")) {
    location.href = "/console/signin";
  }
  if (!r.ok) throw await refuse(r);
  return new DOMParser().parseFromString(await r.text(), "application/xml");
}

const TARGETS = {
  kms: "TrentService.",
  cloudtrail: "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.",
};

// A JSON request (KMS, CloudTrail): the answer's object.
async function json(service, action, body) {
  const r = await fetch("/console/api/" + service, {
    method: "POST",
    headers: {
      "x-vmie-csrf": CSRF(),
      "content-type": "application/x-amz-json-1.1",
      "x-amz-target": TARGETS[service] + action,
    },
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  if (!r.ok) throw await refuse(r);
  return r.json();
}

// An S3 request through the S3 endpoint.
async function s3(method, path, body) {
  const r = await fetch("/console/s3" + path, {
    method,
    headers: { "x-vmie-csrf": CSRF() },
    body,
    credentials: "same-origin",
  });
  if (!r.ok) throw await refuse(r);
  return r;
}

function cell(tr, value, href) {
  const td = document.createElement("td");
  if (value instanceof Node) td.appendChild(value);
  else if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = value;
    td.appendChild(a);
  } else td.textContent = value == null ? "" : String(value);
  tr.appendChild(td);
  return td;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, "Nothing yet.");
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    body.appendChild(tr);
  }
}

function tags(el) {
  return items(el, "tagSet").map((t) => text(t, "key") + "=" + text(t, "value")).join(", ");
}

function bar(value, label) {
  const p = document.createElement("progress");
  p.max = 100;
  p.value = Number(value) || 0;
  p.setAttribute("aria-label", label);
  p.textContent = (Number(value) || 0) + "%";
  return p;
}

// ---- Tasks -------------------------------------------------------------------------

const DONE = new Set(["completed", "deleted", "cancelled"]);

async function taskRows() {
  const [ii, is, ex] = await Promise.all([
    query("ec2", { Action: "DescribeImportImageTasks", Version: "2016-11-15" }),
    query("ec2", { Action: "DescribeImportSnapshotTasks", Version: "2016-11-15" }),
    query("ec2", { Action: "DescribeExportImageTasks", Version: "2016-11-15" }).catch(() => null),
  ]);
  const rows = [];
  for (const t of items(ii.documentElement, "importImageTaskSet")) {
    rows.push({
      id: text(t, "importTaskId"), kind: "import image", status: text(t, "status"),
      progress: text(t, "progress"), message: text(t, "statusMessage"), result: text(t, "imageId"),
    });
  }
  for (const t of items(is.documentElement, "importSnapshotTaskSet")) {
    const d = child(t, "snapshotTaskDetail") || t;
    rows.push({
      id: text(t, "importTaskId"), kind: "import snapshot", status: text(d, "status"),
      progress: text(d, "progress"), message: text(d, "statusMessage"), result: text(d, "snapshotId"),
    });
  }
  if (ex) {
    for (const t of items(ex.documentElement, "exportImageTaskSet")) {
      rows.push({
        id: text(t, "exportImageTaskId"), kind: "export image", status: text(t, "status"),
        progress: text(t, "progress"), message: text(t, "statusMessage"), result: text(t, "imageId"),
      });
    }
  }
  rows.sort((a, b) => (a.id < b.id ? 1 : -1));
  return rows;
}

// What a task's state means, in plain words.
function plain(t) {
  if (t.status === "completed") return t.result ? "Done: " + t.result : "Done";
  if (t.status === "deleted" || t.status === "cancelled") return "Failed or cancelled: " + (t.message || "no reason given");
  return t.message || t.status || "waiting";
}

async function tasksPage() {
  const tick = async () => {
    try {
      const rows = (await taskRows()).map((t) => {
        const tr = document.createElement("tr");
        tr.dataset.task = t.id;
        tr.dataset.status = t.status;
        cell(tr, t.id, t.kind === "import image" ? "/console/task/" + t.id : null);
        cell(tr, t.kind);
        cell(tr, t.status);
        cell(tr, bar(DONE.has(t.status) && t.status === "completed" ? 100 : t.progress, "Progress of " + t.id));
        if (t.result && t.result.startsWith("ami-")) cell(tr, plain(t), "/console/image/" + t.result);
        else cell(tr, plain(t));
        return tr;
      });
      fill("tasks", rows);
      status("");
    } catch (e) {
      status(e.message, true);
    }
  };
  await tick();
  setInterval(tick, POLL_MS);
}

async function evidence(action, param, id) {
  try {
    const d = await query("ec2", { Action: action, Version: "2016-11-15", [param]: id });
    const report = JSON.parse((first(d, "report") || {}).textContent || "{}");
    const attempts = report.attempts || [];
    const deciding = attempts.find((a) => a.outcome && (a.outcome.Booted || a.outcome.booted)) || attempts[attempts.length - 1];
    $("evidence-summary").textContent =
      (report.passed ? "The guest booted" : "The guest did not boot: " + (report.failure || "")) +
      (report.bus ? " on " + report.bus : "") +
      (report.firmware ? " (" + report.firmware + ", " + report.accelerator + ")" : "") +
      (report.warning ? ". " + report.warning : "");
    if (deciding && deciding.screen_png) {
      $("screen").src = "data:image/png;base64," + deciding.screen_png;
      $("screen-figure").hidden = false;
    }
    $("serial").textContent = (deciding && deciding.console) || "(no serial console output)";
  } catch (e) {
    $("evidence-summary").textContent = e.code === "InvalidParameterValue" || /no boot evidence|not booted|NotFound/i.test(e.message)
      ? "No boot evidence: " + e.message
      : e.message;
  }
}

function facts(pairs) {
  const dl = $("facts");
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    if (!v) continue;
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

async function taskPage(id) {
  let shown = false;
  const tick = async () => {
    const d = await query("ec2", {
      Action: "DescribeImportImageTasks", Version: "2016-11-15", "ImportTaskId.1": id,
    });
    const t = items(d.documentElement, "importImageTaskSet")[0];
    if (!t) return status("No such task.", true);
    const st = text(t, "status");
    facts([
      ["Status", st], ["Stage", text(t, "statusMessage")], ["Image", text(t, "imageId")],
      ["Description", text(t, "description")], ["Architecture", text(t, "architecture")],
      ["Platform", text(t, "platform")], ["Boot mode", text(t, "bootMode")],
      ["Encryption key", text(t, "kmsKeyId")],
    ]);
    $("progress").value = st === "completed" ? 100 : Number(text(t, "progress")) || 0;
    if (DONE.has(st) && !shown) {
      shown = true;
      await evidence("GetImportTaskBootEvidence", "ImportTaskId", id);
    }
    return DONE.has(st);
  };
  const loop = async () => {
    try {
      if (!(await tick())) setTimeout(loop, POLL_MS);
    } catch (e) {
      status(e.message, true);
    }
  };
  loop();
}

// ---- Import --------------------------------------------------------------------------

function objectPath(bucket, key) {
  return "/" + encodeURIComponent(bucket) + "/" + key.split("/").map(encodeURIComponent).join("/");
}

function putPart(url, blob, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("PUT", url);
    x.setRequestHeader("x-vmie-csrf", CSRF());
    x.upload.onprogress = (e) => onProgress(e.loaded);
    x.onload = () => {
      if (x.status >= 200 && x.status < 300) resolve(x.getResponseHeader("ETag"));
      else {
        const d = new DOMParser().parseFromString(x.responseText, "application/xml");
        reject(new ApiError((first(d, "Code") || {}).textContent || x.status, (first(d, "Message") || {}).textContent || x.responseText));
      }
    };
    x.onerror = () => reject(new ApiError("NetworkError", "the upload was interrupted"));
    x.send(blob);
  });
}

// Uploads `file` to bucket/key in parts (multipart upload through the S3 endpoint).
async function upload(file, bucket, key) {
  const path = objectPath(bucket, key);
  const init = new DOMParser().parseFromString(await (await s3("POST", path + "?uploads")).text(), "application/xml");
  const uploadId = first(init, "UploadId").textContent;
  const q = "uploadId=" + encodeURIComponent(uploadId);
  const progress = $("upload-progress");
  const parts = [];
  let done = 0;
  try {
    for (let n = 1, off = 0; off < file.size || n === 1; n++, off += PART) {
      const blob = file.slice(off, Math.min(off + PART, file.size));
      const etag = await putPart("/console/s3" + path + "?partNumber=" + n + "&" + q, blob, (loaded) => {
        progress.value = Math.floor(((done + loaded) * 100) / Math.max(file.size, 1));
        status("Uploading " + file.name + ": " + progress.value + "%");
      });
      done += blob.size;
      parts.push("<Part><PartNumber>" + n + "</PartNumber><ETag>" + etag.replace(/[<>&]/g, "") + "</ETag></Part>");
      if (off + PART >= file.size) break;
    }
    await s3("POST", path + "?" + q, "<CompleteMultipartUpload>" + parts.join("") + "</CompleteMultipartUpload>");
    progress.value = 100;
  } catch (e) {
    await s3("DELETE", path + "?" + q).catch(() => {});
    throw e;
  }
}

async function importPage() {
  try {
    const r = await s3("GET", "/");
    const d = new DOMParser().parseFromString(await r.text(), "application/xml");
    const list = $("buckets");
    for (const b of d.getElementsByTagName("Name")) {
      const o = document.createElement("option");
      o.value = b.textContent;
      list.appendChild(o);
    }
  } catch (e) {
    status("Buckets could not be listed: " + e.message, true);
  }
  $("file").addEventListener("change", () => {
    const f = $("file").files[0];
    if (f && !$("key").value) $("key").value = "uploads/" + f.name;
  });
  $("import-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = $("start-import");
    button.disabled = true;
    try {
      const bucket = $("bucket").value.trim();
      const key = $("key").value.trim();
      const f = $("file").files[0];
      if (f) await upload(f, bucket, key);
      status("Starting the import of " + key + "…");
      const params = {
        Action: "ImportImage", Version: "2016-11-15",
        "DiskContainer.1.UserBucket.S3Bucket": bucket, "DiskContainer.1.UserBucket.S3Key": key,
      };
      if ($("description").value) params.Description = $("description").value;
      const d = await query("ec2", params);
      const id = first(d, "importTaskId").textContent;
      location.href = "/console/task/" + encodeURIComponent(id);
    } catch (e) {
      status(e.message, true);
      button.disabled = false;
    }
  });
}

// ---- Images and snapshots ------------------------------------------------------------

function keyOf(el) {
  const ebs = first(el, "ebs");
  const k = text(ebs || el, "kmsKeyId");
  const enc = text(ebs || el, "encrypted");
  return enc === "true" ? k || "encrypted (default key)" : "not encrypted";
}

async function imagesPage() {
  const d = await query("ec2", { Action: "DescribeImages", Version: "2016-11-15", "Owner.1": "self" });
  fill("images", items(d.documentElement, "imagesSet").map((i) => {
    const tr = document.createElement("tr");
    cell(tr, text(i, "imageId"), "/console/image/" + text(i, "imageId"));
    cell(tr, text(i, "name"));
    cell(tr, text(i, "imageState"));
    cell(tr, keyOf(i));
    cell(tr, [text(i, "platformDetails"), text(i, "architecture"), text(i, "bootMode")].filter(Boolean).join(", "));
    cell(tr, tags(i));
    return tr;
  }));
}

async function imagePage(id) {
  const d = await query("ec2", { Action: "DescribeImages", Version: "2016-11-15", "ImageId.1": id });
  const i = items(d.documentElement, "imagesSet")[0];
  if (!i) return status("No such image.", true);
  facts([
    ["Name", text(i, "name")], ["State", text(i, "imageState")], ["Description", text(i, "description")],
    ["Platform", text(i, "platformDetails")], ["Architecture", text(i, "architecture")],
    ["Boot mode", text(i, "bootMode")], ["Encryption key", keyOf(i)], ["Tags", tags(i)],
    ["Created", text(i, "creationDate")],
  ]);
  await evidence("GetImageBootEvidence", "ImageId", id);
}

async function snapshotsPage() {
  const d = await query("ec2", { Action: "DescribeSnapshots", Version: "2016-11-15", "Owner.1": "self" });
  fill("snapshots", items(d.documentElement, "snapshotSet").map((sn) => {
    const tr = document.createElement("tr");
    cell(tr, text(sn, "snapshotId"));
    cell(tr, text(sn, "volumeSize"));
    cell(tr, text(sn, "status"));
    cell(tr, keyOf(sn));
    cell(tr, text(sn, "description"));
    cell(tr, tags(sn));
    return tr;
  }));
}

// ---- Activity log --------------------------------------------------------------------

async function eventsPage() {
  const run = async () => {
    const body = { MaxResults: 50 };
    const attr = $("attr").value;
    if (attr && $("value").value) body.LookupAttributes = [{ AttributeKey: attr, AttributeValue: $("value").value }];
    if ($("start").value) body.StartTime = new Date($("start").value).getTime() / 1000;
    if ($("end").value) body.EndTime = new Date($("end").value).getTime() / 1000;
    const r = await json("cloudtrail", "LookupEvents", body);
    fill("events", (r.Events || []).map((e) => {
      let full = {};
      try { full = JSON.parse(e.CloudTrailEvent || "{}"); } catch (_) { /* shown without */ }
      const tr = document.createElement("tr");
      cell(tr, new Date(e.EventTime * 1000).toISOString().replace(".000", ""));
      cell(tr, e.EventName);
      cell(tr, e.Username || "");
      cell(tr, full.sourceIPAddress || "");
      cell(tr, (e.Resources || []).map((x) => x.ResourceName).join(", "));
      cell(tr, full.errorCode || full.errorMessage || "");
      return tr;
    }));
  };
  $("events-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    run().then(() => status(""), (e) => status(e.message, true));
  });
  await run();
}

// ---- KMS keys and users --------------------------------------------------------------

async function keysPage() {
  const [keys, aliases] = await Promise.all([json("kms", "ListKeys"), json("kms", "ListAliases")]);
  const rows = [];
  for (const k of keys.Keys || []) {
    const tr = document.createElement("tr");
    const d = await json("kms", "DescribeKey", { KeyId: k.KeyId }).catch(() => ({ KeyMetadata: {} }));
    const rot = await json("kms", "GetKeyRotationStatus", { KeyId: k.KeyId }).catch((e) => ({ error: e.code }));
    cell(tr, k.KeyId);
    cell(tr, (aliases.Aliases || []).filter((a) => a.TargetKeyId === k.KeyId).map((a) => a.AliasName).join(", "));
    cell(tr, d.KeyMetadata.KeyState || "");
    cell(tr, d.KeyMetadata.Description || "");
    cell(tr, rot.error ? "unknown (" + rot.error + ")" : rot.KeyRotationEnabled ? "every " + (rot.RotationPeriodInDays || 365) + " days" : "off");
    rows.push(tr);
  }
  fill("keys", rows);
}

async function usersPage() {
  const d = await query("iam", { Action: "ListUsers", Version: "2010-05-08" });
  const rows = [];
  for (const u of items(first(d, "Users"), "Users")) {
    const name = text(u, "UserName");
    const tr = document.createElement("tr");
    const keys = await query("iam", { Action: "ListAccessKeys", Version: "2010-05-08", UserName: name })
      .then((k) => items(first(k, "AccessKeyMetadata"), "AccessKeyMetadata").map((m) => text(m, "AccessKeyId") + " (" + text(m, "Status") + ")").join(", "))
      .catch((e) => e.code);
    const mfa = await query("iam", { Action: "ListMFADevices", Version: "2010-05-08", UserName: name })
      .then((m) => (items(first(m, "MFADevices"), "MFADevices").length ? "enabled" : "none"))
      .catch((e) => e.code);
    const pw = await query("iam", { Action: "GetLoginProfile", Version: "2010-05-08", UserName: name })
      .then((p) => (text(first(p, "LoginProfile"), "PasswordResetRequired") === "true" ? "set, must be changed" : "set"))
      .catch((e) => (e.code === "NoSuchEntity" ? "none" : e.code));
    cell(tr, name);
    cell(tr, text(u, "CreateDate"));
    cell(tr, keys);
    cell(tr, mfa);
    cell(tr, pw);
    rows.push(tr);
  }
  fill("users", rows);
}

async function compliancePage() {
  const d = await query("ec2", { Action: "GetComplianceReport", Version: "2016-11-15" });
  const controls = JSON.parse((first(d, "report") || {}).textContent || "[]");
  fill("compliance", controls.map((c) => {
    const tr = document.createElement("tr");
    tr.className = c.pass ? "pass" : "fail";
    cell(tr, c.control);
    cell(tr, c.pass ? "PASS" : "FAIL");
    cell(tr, c.detail);
    cell(tr, c.remedy);
    return tr;
  }));
  const failed = controls.filter((c) => !c.pass).length;
  status(failed ? failed + " of " + controls.length + " controls failed" : "All " + controls.length + " controls pass", failed > 0);
}

const PAGES = {
  compliance: compliancePage,
  tasks: tasksPage,
  task: taskPage,
  import: importPage,
  images: imagesPage,
  image: imagePage,
  snapshots: snapshotsPage,
  events: eventsPage,
  keys: keysPage,
  users: usersPage,
};

document.addEventListener("DOMContentLoaded", () => {
  const page = PAGES[document.body.dataset.page];
  if (!page) return;
  status("Loading…");
  Promise.resolve(page(document.body.dataset.id))
    .then(() => {
      if ($("status") && $("status").textContent === "Loading…") status("");
    })
    .catch((e) => status(e.message, true));
});
