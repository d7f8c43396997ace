//! Loading the recorded upstream traffic in `testdata/captures`.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use kubeedge_proto::Compat;
use serde::Deserialize;
use serde_json::value::RawValue;

pub fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/captures")
}

/// Every capture file (curated `.json` and raw `.jsonl`), sorted.
pub fn capture_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(captures_dir()).expect("captures dir") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("version dir") {
            let f = f.expect("entry").path();
            if matches!(
                f.extension().and_then(|e| e.to_str()),
                Some("json" | "jsonl")
            ) {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

pub fn compat_of(version: &str) -> Compat {
    match version {
        v if v.starts_with("v1.12") || v.starts_with("v1.15") => Compat::V1_12,
        _ => Compat::Latest,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    EdgeToCloud,
    CloudToEdge,
}

/// One websocket message as captured.
#[derive(Debug, Clone)]
pub struct WsMessage {
    pub file: String,
    pub version: String,
    pub conn: String,
    pub dir: Dir,
    /// Frame length on the wire, when recorded.
    pub length: Option<usize>,
    pub opcode: Option<String>,
    /// The message JSON as stored in the capture (pretty-printed or not).
    pub json: String,
}

/// One HTTP event of the certificate bootstrap.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpEvent {
    pub dir: Option<String>,
    pub event: Option<String>,
    pub start_line: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    pub payload_b64: Option<String>,
}

#[derive(Deserialize)]
struct Frame {
    conn: Option<String>,
    dir: Option<String>,
    length: Option<usize>,
    opcode: Option<String>,
}

#[derive(Deserialize)]
struct Item {
    frame: Option<Frame>,
    conn: Option<String>,
    dir: Option<String>,
    length: Option<usize>,
    opcode: Option<String>,
    message: Option<Box<RawValue>>,
    payload_json: Option<Box<RawValue>>,
    event: Option<String>,
    start_line: Option<String>,
    #[serde(default)]
    headers: Option<Vec<(String, String)>>,
    payload_b64: Option<String>,
}

#[derive(Deserialize)]
struct Curated {
    kubeedge_version: String,
    frame: Option<Frame>,
    message: Option<Box<RawValue>>,
    exchange: Option<Vec<Item>>,
    sequence: Option<Vec<Item>>,
    http: Option<Vec<HttpEvent>>,
    request: Option<serde_json::Value>,
}

fn dir_of(s: Option<&str>) -> Option<Dir> {
    match s? {
        "edge->cloud" => Some(Dir::EdgeToCloud),
        "cloud->edge" => Some(Dir::CloudToEdge),
        _ => None,
    }
}

/// What one capture file holds.
#[derive(Debug, Default)]
pub struct CaptureFile {
    pub name: String,
    pub version: String,
    pub ws: Vec<WsMessage>,
    pub http: Vec<HttpEvent>,
    pub handshake: bool,
}

fn version_from_name(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.split('-')
        .find(|p| p.starts_with("v1."))
        .unwrap_or("v1.12.1")
        .to_owned()
}

pub fn load(path: &Path) -> CaptureFile {
    let text = std::fs::read_to_string(path).expect("read capture");
    let name = path
        .strip_prefix(captures_dir())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut out = CaptureFile {
        name: name.clone(),
        ..CaptureFile::default()
    };
    let push_item = |out: &mut CaptureFile, it: Item, default_conn: &str| {
        let frame = it.frame.as_ref();
        let json = it.message.as_ref().or(it.payload_json.as_ref());
        if let Some(json) = json {
            let dir = dir_of(frame.and_then(|f| f.dir.as_deref()).or(it.dir.as_deref()))
                .expect("ws message direction");
            out.ws.push(WsMessage {
                file: name.clone(),
                version: out.version.clone(),
                conn: frame
                    .and_then(|f| f.conn.clone())
                    .or(it.conn.clone())
                    .unwrap_or_else(|| default_conn.to_owned()),
                dir,
                length: frame.and_then(|f| f.length).or(it.length),
                opcode: frame.and_then(|f| f.opcode.clone()).or(it.opcode.clone()),
                json: json.get().to_owned(),
            });
        } else if it.event.as_deref().is_some_and(|e| e.starts_with("http")) {
            if it
                .start_line
                .as_deref()
                .is_some_and(|l| l.contains("events") || l.contains("101"))
            {
                out.handshake = true;
            }
            out.http.push(HttpEvent {
                dir: it.dir,
                event: it.event,
                start_line: it.start_line,
                headers: it.headers.unwrap_or_default(),
                payload_b64: it.payload_b64,
            });
        }
    };
    if path.extension().and_then(|e| e.to_str()) == Some("jsonl") {
        out.version = version_from_name(path);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let it: Item = serde_json::from_str(line).expect("raw capture line");
            push_item(&mut out, it, "raw");
        }
    } else {
        let c: Curated = serde_json::from_str(&text).expect("curated capture");
        out.version = c.kubeedge_version.clone();
        if let Some(msg) = c.message {
            let f = c.frame.expect("frame beside message");
            out.ws.push(WsMessage {
                file: name.clone(),
                version: out.version.clone(),
                conn: f.conn.unwrap_or_default(),
                dir: dir_of(f.dir.as_deref()).expect("dir"),
                length: f.length,
                opcode: f.opcode,
                json: msg.get().to_owned(),
            });
        }
        for it in c.exchange.into_iter().chain(c.sequence).flatten() {
            push_item(&mut out, it, "curated");
        }
        out.http.extend(c.http.into_iter().flatten());
        if let Some(r) = c.request {
            out.http
                .push(serde_json::from_value(r).expect("handshake request"));
            out.handshake = true;
        }
    }
    out
}

pub fn all() -> Vec<CaptureFile> {
    capture_files().iter().map(|p| load(p)).collect()
}
